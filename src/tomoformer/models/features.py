"""Per-frame input features and per-pixel statistics over frames, shared by every learned model.

Every model sees signals in dB with NaN for missing cells and an unknown absolute offset (dBm or path gain,
unknown transmit power). The features below remove that offset per frame and never contain NaN:

* ``norm_db``: (s - centre) / 20 dB, where centre is the per-frame median of the valid cells; 0 where missing.
* ``valid``: 1 where the cell was measured.
* ``log_dist``: log10 of the 3D transmitter distance in cells (minus 1, so typical values are near 0).
* ``excess``: the signal over free space, s + 20 log10(d), in 20 dB units relative to the frame's
  line-of-sight level (its ``LOS_QUANTILE`` quantile); free-space spreading and the transmit power are removed,
  so what is left (mostly negative) is the loss the buildings (and shadowing) caused.
* ``tx_unknown``: 1 where the frame's transmitter position is unknown (then ``log_dist`` = ``excess`` = 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DB_SCALE = 20.0
FRAME_FEATURES = ("norm_db", "valid", "log_dist", "excess", "tx_unknown")
NUM_FRAME_FEATURES = len(FRAME_FEATURES)
PIXEL_STATISTICS = (
    "db_mean",
    "db_max",
    "db_min",
    "db_std",
    "valid_frac",
    "ex_mean",
    "ex_max",
    "ex_min",
    "ex_std",
    "ex_frac",
)
NUM_PIXEL_STATISTICS = len(PIXEL_STATISTICS)
# The same channels with ``aggregation="stable"``: the extremes over frames become soft extremes (log-mean-exp at
# ``SOFT_TEMPERATURE``), which converge as frames are added instead of drifting (see ``pixel_statistics``).
STABLE_PIXEL_STATISTICS = tuple(
    name.replace("_max", "_softmax").replace("_min", "_softmin") for name in PIXEL_STATISTICS
)
AGGREGATIONS = ("max", "stable")
# Temperature of the soft extremes, in the features' 20 dB units: 0.25 = 5 dB.
SOFT_TEMPERATURE = 0.25


# The excess over free space is measured from each frame's line-of-sight level, estimated as this quantile of
# the frame's excess values: the best links of a frame see no building, so "dB below them" is the loss the
# buildings caused, comparable across frames, transmit powers and simulators. (Centring on the median instead
# mixes in how much of the area a transmitter happens to see: a threshold on the per-pixel best excess
# reached IoU 0.41 with the median and 0.90 with this level on the demo data.)
LOS_QUANTILE = 0.99


def _frame_centre(values: Tensor, valid: Tensor, quantile: float = 0.5) -> Tensor:
    """Per-frame quantile (default: lower median) of valid cells: values, valid [B, T, H, W] -> [B, T, 1, 1]
    (0 if none valid)."""
    # Sorting (invalid cells sort last as +inf) gives torch.nanquantile's answer, but exports to ONNX.
    valid = valid.flatten(2)
    ordered = values.flatten(2).masked_fill(~valid, float("inf")).sort(dim=-1).values
    n = valid.sum(-1, keepdim=True)
    rank = ((n - 1) * quantile).long() if quantile != 0.5 else (n - 1) // 2
    centre = ordered.gather(-1, rank.clamp_min(0))
    return torch.where(n > 0, centre, 0.0)[..., None]


def frame_features(signals: Tensor, tx_pos: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Features of every frame.

    Args:
        signals: [B, T, H, W] dB, NaN = missing.
        tx_pos: [B, T, 3] (row, col, height above receiver), cells; NaN rows or None = unknown.

    Returns:
        features [B, T, 5, H, W] float32 (see ``FRAME_FEATURES``), frame_present [B, T] bool
        (False for frames without any valid cell).
    """
    signals = signals.float()
    H, W = signals.shape[-2:]
    valid = torch.isfinite(signals)
    sig = torch.where(valid, signals, torch.zeros((), device=signals.device))
    norm_db = torch.where(valid, (sig - _frame_centre(sig, valid)) / DB_SCALE, 0.0)
    zeros = torch.zeros_like(sig)
    if tx_pos is None:
        log_dist, excess, tx_unknown = zeros, zeros, torch.ones_like(sig)
    else:
        tx_pos = tx_pos.float()
        known = torch.isfinite(tx_pos).all(dim=-1)  # [B, T]
        tx = torch.nan_to_num(tx_pos, nan=0.0, posinf=0.0, neginf=0.0)
        rows = torch.arange(H, device=signals.device, dtype=torch.float32)
        cols = torch.arange(W, device=signals.device, dtype=torch.float32)
        d2 = (
            (rows.view(1, 1, H, 1) - tx[..., 0, None, None]) ** 2
            + (cols.view(1, 1, 1, W) - tx[..., 1, None, None]) ** 2
            + tx[..., 2, None, None] ** 2
        )
        # Clamp at one cell: the transmitter cell itself has no meaningful far-field loss.
        log_d = 0.5 * torch.log10(d2.clamp_min(1.0))
        # Broadcast, not expand(B, T, H, W): explicit sizes inside a torch.export scan body break ONNX export.
        known_map = known[..., None, None]
        log_dist = torch.where(known_map, log_d - 1.0, 0.0)
        ex_valid = valid & known_map
        ex_raw = torch.where(ex_valid, sig + 20.0 * log_d, 0.0)
        excess = torch.where(ex_valid, (ex_raw - _frame_centre(ex_raw, ex_valid, LOS_QUANTILE)) / DB_SCALE, 0.0)
        tx_unknown = torch.where(known_map, zeros, 1.0)
    features = torch.stack([norm_db, valid.float(), log_dist, excess, tx_unknown], dim=2)
    return features, valid.flatten(2).any(dim=-1)


def radial_slope(features: Tensor, tx_pos: Tensor | None) -> Tensor:
    """The excess loss each cell adds along the ray from the frame's transmitter, per cell.

    Free space costs nothing in ``excess``, and a shadow behind a building is flat along the ray; only where the
    ray enters a wall or crosses a building interior does the excess fall. So this slope, unlike the excess
    itself, marks an obstruction where it is and not in its shadow: the local quantity radio tomography solves
    for. It is an upwind difference (each cell minus its neighbours towards the transmitter, weighted by the
    ray's direction), so a wall's loss lands on the cell behind it and not on the cell in front; in 4 dB per
    cell, clipped to +-3; 0 where a neighbour is missing or the transmitter is unknown.

    Args:
        features: [B, T, 5, H, W] from :func:`frame_features`.
        tx_pos: [B, T, 3] cells or None (then all zeros).

    Returns:
        [B, T, H, W] float32.
    """
    ex = features[:, :, 3]
    H, W = ex.shape[-2:]
    if tx_pos is None:
        return torch.zeros_like(ex)
    ok = (features[:, :, 1] > 0) & (features[:, :, 4] == 0)
    tx = torch.nan_to_num(tx_pos.float(), nan=0.0)
    rows = torch.arange(H, device=ex.device, dtype=torch.float32).view(1, 1, H, 1) - tx[..., 0, None, None]
    cols = torch.arange(W, device=ex.device, dtype=torch.float32).view(1, 1, 1, W) - tx[..., 1, None, None]
    dist = (rows * rows + cols * cols).sqrt().clamp_min(1.0)
    slope = torch.zeros_like(ex)
    support = ok.clone()
    for axis, offset in ((2, rows), (3, cols)):
        weight = (offset / dist).abs()
        # The upwind neighbour along this axis: the previous cell when the ray travels towards +axis.
        prev_ex, prev_ok = _shift(ex, axis, 1), _shift(ok, axis, 1)
        next_ex, next_ok = _shift(ex, axis, -1), _shift(ok, axis, -1)
        forward = offset >= 0
        up_ex = torch.where(forward, prev_ex, next_ex)
        # Logical ops, not torch.where, on masks: ONNX Runtime has no boolean Where.
        up_ok = (forward & prev_ok) | (~forward & next_ok) | (weight < 0.05)
        slope = slope + weight * (ex - up_ex)
        support = support & up_ok
    return torch.where(support, (slope * (DB_SCALE / 4.0)).clamp(-3.0, 3.0), 0.0)


def _shift(x: Tensor, axis: int, step: int) -> Tensor:
    """``x`` moved by ``step`` cells along ``axis`` (2 rows or 3 columns of [B, T, H, W]); zeros/False flow in."""
    pad = [0, 0, 0, 0]
    pad[(3 - axis) * 2 + (0 if step > 0 else 1)] = abs(step)
    n = x.shape[axis]
    padded = F.pad(x.float(), pad) if x.dtype == torch.bool else F.pad(x, pad)
    out = padded.narrow(axis, 0 if step > 0 else abs(step), n)
    return out > 0 if x.dtype == torch.bool else out


class SoftExtreme:
    """Running log-mean-exp over frames, ``tau * log(mean_t exp(x_t / tau))`` of the valid values of each pixel,
    accumulated chunk by chunk (a running maximum keeps the exponentials in range).

    Unlike the maximum, which keeps growing as frames are added (the expected maximum of T draws grows like
    sqrt(2 log T)), it converges to a property of the distribution of a pixel's values over transmitters; it
    lies between the mean (tau -> infinity) and the maximum (tau -> 0), and is unchanged when every frame is
    duplicated or the frames are permuted. ``sign=-1`` gives the soft minimum.
    """

    def __init__(self, like: Tensor, tau: float, sign: float = 1.0) -> None:
        self.tau, self.sign = tau, sign
        self.big = torch.finfo(like.dtype).max
        self.peak = torch.full_like(like, -self.big)  # running maximum of sign * x
        self.total = torch.zeros_like(like)  # sum of exp((sign * x - peak) / tau)
        self.count = torch.zeros_like(like)

    def add(self, x: Tensor, valid: Tensor, dim: int = 1) -> None:
        """Fold in values ``x`` where ``valid`` (same shape), reducing over ``dim``."""
        y = torch.where(valid, self.sign * x, -self.big)
        peak = torch.maximum(self.peak, y.amax(dim))
        scale = torch.exp((self.peak - peak) / self.tau)
        terms = torch.where(valid, torch.exp((y - peak.unsqueeze(dim)) / self.tau), 0.0)
        self.total = self.total * scale + terms.sum(dim)
        self.count = self.count + valid.to(x.dtype).sum(dim)
        self.peak = peak

    def value(self) -> Tensor:
        """The soft extreme where any value was seen, else 0."""
        seen = self.count > 0
        mean = self.total / self.count.clamp_min(1.0)
        out = self.peak + self.tau * torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))
        return torch.where(seen, self.sign * out, 0.0)


def pixel_statistics(
    signals: Tensor, tx_pos: Tensor | None = None, chunk: int = 64, aggregation: str = "max"
) -> Tensor:
    """Per-pixel statistics over the T frames (see ``PIXEL_STATISTICS``), never NaN.

    Works in chunks of ``chunk`` frames so that T=1000 needs memory for ``chunk`` frames only. ``valid_frac``
    is the fraction of present frames (frames with any valid cell) in which the pixel was measured, so padding
    with missing frames changes nothing; 0 means "never received".

    ``aggregation="max"`` gives the maximum and minimum over frames (the original design; they drift as T
    grows). ``"stable"`` replaces them with soft extremes (:class:`SoftExtreme`, temperature
    ``SOFT_TEMPERATURE``; channels ``STABLE_PIXEL_STATISTICS``): every channel is then a mean over frames or a
    function of means, so it converges as frames are added and is unchanged when all frames are duplicated.

    Args:
        signals: [B, T, H, W] dB, NaN = missing.
        tx_pos: [B, T, 3] cells or None.
        chunk: frames processed at once.
        aggregation: "max" or "stable".

    Returns:
        [B, 10, H, W] float32.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    stable = aggregation == "stable"
    B, T, H, W = signals.shape
    dev = signals.device
    acc = {key: torch.zeros(B, H, W, device=dev) for key in ("n", "s", "ss", "en", "es", "ess", "frames")}
    big = torch.tensor(torch.finfo(torch.float32).max, device=dev)
    db_max, db_min = torch.full((B, H, W), -big, device=dev), torch.full((B, H, W), big, device=dev)
    ex_max, ex_min = db_max.clone(), db_min.clone()
    zero = torch.zeros(B, H, W, device=dev)
    soft = [SoftExtreme(zero, SOFT_TEMPERATURE, sign) for sign in (1.0, -1.0, 1.0, -1.0)] if stable else []
    if torch.compiler.is_compiling():
        # torch.export / ONNX: one pass over all frames, since a Python loop over T would fix T in the graph.
        starts, chunk = [0], T
    else:
        starts = range(0, T, chunk)
    for start in starts:
        tx = None if tx_pos is None else tx_pos[:, start : start + chunk]
        feats, present = frame_features(signals[:, start : start + chunk], tx)
        db, valid, ex = feats[:, :, 0], feats[:, :, 1] > 0, feats[:, :, 3]
        ex_valid = valid & (feats[:, :, 4] == 0)
        acc["frames"] += present.float().sum(1)[:, None, None]
        acc["n"] += valid.float().sum(1)
        acc["s"] += db.sum(1)
        acc["ss"] += (db * db).sum(1)
        acc["en"] += ex_valid.float().sum(1)
        acc["es"] += ex.sum(1)
        acc["ess"] += (ex * ex).sum(1)
        if stable:
            for acc_soft, x, ok in zip(soft, (db, db, ex, ex), (valid, valid, ex_valid, ex_valid), strict=True):
                acc_soft.add(x, ok)
            continue
        db_max = torch.maximum(db_max, torch.where(valid, db, -big).amax(1))
        db_min = torch.minimum(db_min, torch.where(valid, db, big).amin(1))
        ex_max = torch.maximum(ex_max, torch.where(ex_valid, ex, -big).amax(1))
        ex_min = torch.minimum(ex_min, torch.where(ex_valid, ex, big).amin(1))

    def moments(n: Tensor, s: Tensor, ss: Tensor) -> tuple[Tensor, Tensor]:
        mean = s / n.clamp_min(1.0)
        std = (ss / n.clamp_min(1.0) - mean * mean).clamp_min(0.0).sqrt()
        return mean, std

    db_mean, db_std = moments(acc["n"], acc["s"], acc["ss"])
    ex_mean, ex_std = moments(acc["en"], acc["es"], acc["ess"])
    seen, ex_seen = acc["n"] > 0, acc["en"] > 0
    frames = acc["frames"].clamp_min(1.0)
    if stable:
        db_max, db_min, ex_max, ex_min = (acc_soft.value() for acc_soft in soft)
    stats = [
        db_mean,
        torch.where(seen, db_max, 0.0),
        torch.where(seen, db_min, 0.0),
        db_std,
        acc["n"] / frames,
        ex_mean,
        torch.where(ex_seen, ex_max, 0.0),
        torch.where(ex_seen, ex_min, 0.0),
        ex_std,
        acc["en"] / frames,
    ]
    return torch.stack(stats, dim=1)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad the last two dims (bottom, right) up to a multiple of ``multiple``."""
    H, W = x.shape[-2:]
    # No early return for zero padding: under torch.export that branch would fix H and W in the graph.
    return F.pad(x, (0, (-W) % multiple, 0, (-H) % multiple))

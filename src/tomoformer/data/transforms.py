"""Augmentations of a sample or a batch: square symmetries, frame subsets, measurement sparsity.

All functions are pure (they return new tensors), draw randomness only from the ``torch.Generator``
they are given, and keep the device of their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from tomoformer.data.augment_options import FRAME_SAMPLINGS, AugmentOptions

N_D4 = 8
# How the number of frames of a training batch is drawn in (min, max): uniformly, or log-uniformly (as many
# batches with 1-2 frames as with 64-128), so that a model sees every scale of T and keeps working as T grows:
# FRAME_SAMPLINGS (data/augment_options.py).
# D4 elements that keep an H x W grid H x W when H != W (the flips): identity, half turn, mirror, mirror + half turn.
SHAPE_KEEPING_D4 = (0, 2, 4, 6)


def _device(generator: torch.Generator | None) -> torch.device:
    # Random numbers are drawn where the generator lives, so a seed gives the same draws on any input device.
    return generator.device if generator is not None else torch.device("cpu")


def _rot90_cells(tx: Tensor, k: int, H: int, W: int) -> Tensor:
    """Map (row, col) of ``tx [..., 3]`` through ``torch.rot90(grid [H, W], k, dims=(-2, -1))``.

    One counter-clockwise quarter turn sends cell (r, c) to (W - 1 - c, r) and the grid to [W, H]; the map
    is affine, so it holds for positions between or outside cells too (and NaN stays NaN).
    """
    out = tx.clone()
    for _ in range(k % 4):
        row, col = out[..., 0].clone(), out[..., 1].clone()
        out[..., 0] = (W - 1) - col
        out[..., 1] = row
        H, W = W, H
    return out


def apply_d4(
    signals: Tensor, buildings: Tensor | None = None, tx_pos: Tensor | None = None, k: int = 0
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Apply element ``k`` (0..7) of the symmetry group of the square to a sample or batch, consistently.

    ``k`` in 0..3 rotates counter-clockwise by ``k`` quarter turns (``torch.rot90(x, k, dims=(-2, -1))``);
    ``k`` in 4..7 first mirrors left-right (columns reversed), then rotates by ``k - 4``. Rotations by an
    odd ``k`` swap H and W.

    Args:
        signals: ``[..., T, H, W]``; buildings: ``[..., H, W]`` or None;
        tx_pos: ``[..., T, 3]`` row, col in cells (cell centres at integer indices) and height, or None.

    Returns:
        ``(signals, buildings, tx_pos)`` transformed; the height entry of ``tx_pos`` is unchanged.
    """
    if not 0 <= int(k) < N_D4:
        raise ValueError(f"D4 element k must be in 0..7, got {k}")
    k = int(k)
    H, W = signals.shape[-2:]
    if buildings is not None and tuple(buildings.shape[-2:]) != (H, W):
        raise ValueError(f"buildings map {tuple(buildings.shape[-2:])} does not match signals {(H, W)}")
    if tx_pos is not None and tx_pos.shape[-1] != 3:
        raise ValueError(f"tx_pos must end with (row, col, height), got shape {tuple(tx_pos.shape)}")
    flip, turns = k >= 4, k % 4

    def grid(x: Tensor) -> Tensor:
        if flip:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, turns, dims=(-2, -1)).contiguous() if turns else x.contiguous()

    new_tx = None
    if tx_pos is not None:
        new_tx = tx_pos.clone()
        if flip:
            new_tx[..., 1] = (W - 1) - new_tx[..., 1]
        new_tx = _rot90_cells(new_tx, turns, H, W)
    return grid(signals), grid(buildings) if buildings is not None else None, new_tx


def random_frame_subset(
    signals: Tensor, tx_pos: Tensor | None, n_frames: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor | None]:
    """Keep ``n_frames`` of the T frames, drawn without replacement, in their original order.

    signals: ``[..., T, H, W]``; tx_pos: ``[..., T, 3]`` or None. A batch shares one draw. When
    ``T <= n_frames`` the inputs are returned unchanged.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    T = signals.shape[-3]
    if tx_pos is not None and tx_pos.shape[-2] != T:
        raise ValueError(f"tx_pos has {tx_pos.shape[-2]} frames, signals {T}")
    if n_frames >= T:
        return signals, tx_pos
    keep = torch.randperm(T, generator=generator, device=_device(generator))[:n_frames].sort().values
    out = signals.index_select(-3, keep.to(signals.device))
    return out, tx_pos.index_select(-2, keep.to(tx_pos.device)) if tx_pos is not None else None


def draw_frame_count(lo: int, hi: int, sampling: str, generator: torch.Generator | None = None) -> int:
    """A frame count in ``lo..hi`` (inclusive): ``"uniform"``, or ``"log-uniform"`` over the integers
    (``floor(exp(u))`` for ``u`` uniform in ``[log lo, log(hi + 1))``, so P(n) is proportional to log((n + 1) / n)).
    One random number is drawn from ``generator`` either way."""
    if not 1 <= lo <= hi:
        raise ValueError(f"frame counts must satisfy 1 <= min <= max, got ({lo}, {hi})")
    if sampling == "uniform":
        return int(torch.randint(lo, hi + 1, (1,), generator=generator, device=_device(generator)))
    if sampling != "log-uniform":
        raise ValueError(f"frame sampling must be one of {FRAME_SAMPLINGS}, got {sampling!r}")
    u = float(torch.rand((), generator=generator, device=_device(generator)))
    return log_uniform_count(lo, hi, u)


def log_uniform_count(lo: int, hi: int, u: float) -> int:
    """The log-uniform frame count in ``lo..hi`` for a uniform number ``u`` in [0, 1)."""
    n = math.floor(math.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))))
    return min(max(n, lo), hi)


def random_sparsity(signals: Tensor, keep_fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Set a random ``1 - keep_fraction`` of the cells of every frame to NaN (exactly that many per frame,
    rounded), as if only part of the area had been measured. signals: ``[..., T, H, W]`` float."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    if not signals.is_floating_point():
        raise TypeError("random_sparsity needs floating-point signals (NaN marks missing cells)")
    H, W = signals.shape[-2:]
    n_drop = round((1.0 - keep_fraction) * H * W)
    if n_drop == 0:
        return signals
    flat = signals.reshape(*signals.shape[:-2], H * W)
    scores = torch.rand(flat.shape, generator=generator, device=_device(generator)).to(signals.device)
    drop = scores.argsort(dim=-1)[..., :n_drop]
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, drop, True)
    return flat.masked_fill(mask, float("nan")).reshape(signals.shape)


def random_floor(signals: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Set the weakest ``fraction`` of the sample's measured cells (over all frames) to NaN, as a receiver with
    a sensitivity floor (or a ray tracer that finds no path) would report them. signals: ``[T, H, W]`` float."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    values = signals[torch.isfinite(signals)].float()
    if fraction == 0.0 or values.numel() == 0:
        return signals
    if values.numel() > 1_000_000:  # the quantile of a random subset is accurate enough and bounded in cost
        pick = torch.randint(0, values.numel(), (1_000_000,), generator=generator, device=_device(generator))
        values = values[pick.to(values.device)]
    floor = torch.quantile(values, fraction)
    return signals.masked_fill(signals < floor, float("nan"))


def crop(
    signals: Tensor, buildings: Tensor | None, tx_pos: Tensor | None, top: int, left: int, size: int
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The ``size x size`` window at (``top``, ``left``) of a sample or batch; ``tx_pos`` (row, col in cells) moves
    with the window, so a transmitter keeps its place relative to the cells (it may now lie outside them)."""
    window = (..., slice(top, top + size), slice(left, left + size))
    new_tx = None
    if tx_pos is not None:
        new_tx = tx_pos.clone()
        new_tx[..., 0] -= top
        new_tx[..., 1] -= left
    return signals[window], buildings[window] if buildings is not None else None, new_tx


class Augment:
    """Random augmentation of a sample dict ``{"signals", "buildings"?, "tx_pos"?, ...}``.

    In order: a random ``crop x crop`` window (train on small windows, predict on whole maps; off by default; with
    ``whole_fraction`` that share of the batches keeps whole tiles instead), a random frame subset (T drawn in
    ``frames = (min, max)``, ``frame_sampling`` uniform or log-uniform, capped at the frames a sample has), a random
    D4 symmetry (on a non-square grid only the four that keep H x W: identity, mirrors and the half turn), random
    sparsity (keep fraction drawn
    uniformly in ``keep_fraction = (lo, hi)``), then a random receiver floor (the weakest fraction, drawn uniformly
    in ``floor_fraction = (lo, hi)``, of the cells becomes NaN).
    Other keys pass through unchanged. Works on one sample (``signals [T, H, W]``) or a batch (one draw for the batch).

    The window-or-whole choice and the frame count are batch-level draws: they come from ``batch_generator`` when
    the caller passes one seeded per batch (then every sample of the batch has the same T and size, and no frames
    are padded), else from the sample's generator.

    Deterministic given the generator: the same seed gives the same sequence of augmented samples. In a
    multi-worker DataLoader every worker holds a copy of the generator, so pass a per-sample generator to
    ``__call__`` (e.g. seeded from epoch and index) when streams must differ across workers.
    """

    def __init__(
        self,
        d4: bool = True,
        frames: tuple[int, int] | None = None,
        keep_fraction: tuple[float, float] | None = None,
        generator: torch.Generator | None = None,
        floor_fraction: tuple[float, float] | None = None,
        crop: int | None = None,
        frame_sampling: str = "uniform",
        whole_fraction: float = 0.0,
    ) -> None:
        if crop is not None and crop < 1:
            raise ValueError(f"crop must be a window side >= 1, got {crop}")
        if frame_sampling not in FRAME_SAMPLINGS:
            raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLINGS}, got {frame_sampling!r}")
        if not 0.0 <= whole_fraction <= 1.0:
            raise ValueError(f"whole_fraction must be in [0, 1], got {whole_fraction}")
        self.crop = crop
        self.frame_sampling, self.whole_fraction = frame_sampling, whole_fraction
        if frames is not None and not 1 <= frames[0] <= frames[1]:
            raise ValueError(f"frames must be (min, max) with 1 <= min <= max, got {frames}")
        if keep_fraction is not None and not 0.0 <= keep_fraction[0] <= keep_fraction[1] <= 1.0:
            raise ValueError(f"keep_fraction must be (lo, hi) with 0 <= lo <= hi <= 1, got {keep_fraction}")
        if floor_fraction is not None and not 0.0 <= floor_fraction[0] <= floor_fraction[1] < 1.0:
            raise ValueError(f"floor_fraction must be (lo, hi) with 0 <= lo <= hi < 1, got {floor_fraction}")
        self.floor_fraction = tuple(floor_fraction) if floor_fraction is not None else None
        self.d4 = d4
        self.frames = tuple(frames) if frames is not None else None
        self.keep_fraction = tuple(keep_fraction) if keep_fraction is not None else None
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(0)
        self.generator = generator

    def __call__(
        self,
        sample: Mapping[str, Any],
        generator: torch.Generator | None = None,
        batch_generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        g = generator if generator is not None else self.generator
        bg = batch_generator if batch_generator is not None else g
        out = dict(sample)
        signals, buildings, tx_pos = out["signals"], out.get("buildings"), out.get("tx_pos")
        whole = False
        if self.crop is not None and self.whole_fraction > 0:
            whole = float(torch.rand((), generator=bg, device=_device(bg))) < self.whole_fraction
        if self.crop is not None and not whole and max(signals.shape[-2:]) > self.crop:
            H, W = signals.shape[-2:]
            size = min(self.crop, H, W)
            top = int(torch.randint(0, H - size + 1, (1,), generator=g, device=_device(g)))
            left = int(torch.randint(0, W - size + 1, (1,), generator=g, device=_device(g)))
            signals, buildings, tx_pos = crop(signals, buildings, tx_pos, top, left, size)
        if self.frames is not None:
            n = draw_frame_count(*self.frames, self.frame_sampling, bg)
            signals, tx_pos = random_frame_subset(signals, tx_pos, n, g)
        if self.d4:
            signals_hw = signals.shape[-2:]
            square = signals_hw[0] == signals_hw[1]
            # A quarter turn of a non-square grid swaps H and W, so samples of one batch would no longer stack:
            # there, only the flips (one draw either way, so square data sees the same stream as before).
            k = int(torch.randint(0, N_D4 if square else len(SHAPE_KEEPING_D4), (1,), generator=g, device=_device(g)))
            k = k if square else SHAPE_KEEPING_D4[k]
            signals, buildings, tx_pos = apply_d4(signals, buildings, tx_pos, k)
        if self.keep_fraction is not None:
            lo, hi = self.keep_fraction
            keep = lo + (hi - lo) * float(torch.rand((), generator=g, device=_device(g)))
            signals = random_sparsity(signals, keep, g)
        if self.floor_fraction is not None:
            lo, hi = self.floor_fraction
            signals = random_floor(signals, lo + (hi - lo) * float(torch.rand((), generator=g, device=_device(g))), g)
        out["signals"] = signals
        if "buildings" in out:
            out["buildings"] = buildings
        if "tx_pos" in out:
            out["tx_pos"] = tx_pos
        return out

    def __repr__(self) -> str:
        return (
            f"Augment(d4={self.d4}, frames={self.frames}, keep_fraction={self.keep_fraction}, "
            f"floor_fraction={self.floor_fraction}, crop={self.crop}, frame_sampling={self.frame_sampling!r}, "
            f"whole_fraction={self.whole_fraction})"
        )


def augment_from_options(options: AugmentOptions) -> Augment | None:
    """The :class:`Augment` that ``options`` (a run config's ``augment:``) asks for; None when it asks for none."""
    frames = (options.min_frames or 1, options.max_frames) if options.max_frames else None
    keep = (options.min_keep_fraction, 1.0) if options.min_keep_fraction else None
    floor = (0.0, options.max_floor_fraction) if options.max_floor_fraction else None
    if not options.d4 and frames is None and keep is None and floor is None and options.crop is None:
        return None
    return Augment(
        d4=options.d4,
        frames=frames,
        keep_fraction=keep,
        floor_fraction=floor,
        crop=options.crop,
        frame_sampling=options.frame_sampling,
        whole_fraction=float(options.whole_fraction),
    )

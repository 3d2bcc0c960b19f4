"""Distribution checks of the fast simulator against ray-traced maps of the same geometry.

Per-cell RMSE says how well one set of losses fits; a model trained on the fast simulator cares about the
distribution of what it sees instead: how much darker building cells are than street cells, and how many cells
are empty (no ray arrived, or below the receiver floor). ``compare_distributions`` runs the full fast simulator
(randomised physics, canyon light, shadowing, noise, floor) on the ray tracer's own heights and transmitters,
``draws`` physics draws per tile, and reports each statistic's min / median / max over the draws beside the ray
tracer's value: the config's ranges bracket the ray tracer when min <= ray tracer <= max.

Empty cells: the ray tracer leaves a cell empty where no sampled ray arrives, which happens below some path gain
(the fewer rays per transmitter, the higher). Unless the config sets a floor (``floor_db``, ``floor_fraction``),
the empty shares of the fast maps are therefore counted below the ray tracer's floor, the lowest value of the same
frame, so that both count the cells "below what this ray tracer resolves". The dB gaps are compared on the same
cells: the fast maps' are taken over the cells where the ray tracer has a value (its empty cells are mostly the
darkest ones, so leaving them out of one side only would bias the comparison).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from tomoformer.errors import DataError
from tomoformer.sim.config import SimConfig

STATISTICS = ("indoor_minus_outdoor_db", "shadowed_minus_lit_outdoor_db", "empty_indoor", "empty_outdoor")


def distribution_stats(
    signals: np.ndarray, buildings: np.ndarray, shadowed: np.ndarray | None = None
) -> dict[str, float]:
    """Statistics of maps signals [N, T, H, W] dB (NaN = empty) over cells of buildings [N, H, W] (bool).

    indoor_minus_outdoor_db: median over frames of (median indoor value - median outdoor value), over the frames
    with values in both (NaN if none); shadowed_minus_lit_outdoor_db (with ``shadowed`` [N, T, H, W] bool, the
    cells a building hides from the transmitter): the same for outdoor cells in shadow minus outdoor cells in line
    of sight, i.e. how dark shadowed streets are; empty_indoor / empty_outdoor: share of (frame, cell) pairs with no
    value among indoor / outdoor cells (NaN if the data has no such cell).
    """
    signals = np.asarray(signals, np.float32)
    inside = np.broadcast_to(np.asarray(buildings, bool)[:, None], signals.shape)
    finite = np.isfinite(signals)
    out: dict[str, float] = {}
    for name, mask in (("empty_indoor", inside), ("empty_outdoor", ~inside)):
        total = int(mask.sum())
        out[name] = float((mask & ~finite).sum() / total) if total else math.nan
    out["indoor_minus_outdoor_db"] = _median_gap(signals, inside, ~inside)
    out["shadowed_minus_lit_outdoor_db"] = (
        math.nan if shadowed is None else _median_gap(signals, ~inside & shadowed, ~inside & ~shadowed)
    )
    return out


def _median_gap(signals: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Median over frames of (median of the frame's values in mask a - median in mask b); masks like signals."""
    flat = signals.reshape(-1, signals[0, 0].size)
    va = np.where(a.reshape(flat.shape), flat, np.nan)
    vb = np.where(b.reshape(flat.shape), flat, np.nan)
    both = np.isfinite(va).any(1) & np.isfinite(vb).any(1)
    if not both.any():
        return math.nan
    return float(np.median(np.nanmedian(va[both], axis=1) - np.nanmedian(vb[both], axis=1)))


def shadow_mask(heights: np.ndarray, tx_pos: np.ndarray, config: SimConfig) -> np.ndarray:
    """bool [N, T, H, W]: cells whose straight ray from the transmitter crosses a building (2.5D)."""
    from tomoformer.sim.physics import Physics
    from tomoformer.sim.propagation import path_gain_and_loss_db

    probe = Physics(1.0, 0.0, 1.0, math.inf, math.inf, 0.0, 0.0)  # 1 dB per wall or roof entered
    h = torch.from_numpy(np.asarray(heights, np.float32))
    _, loss = path_gain_and_loss_db(h, torch.from_numpy(np.asarray(tx_pos, np.float32)), config, [probe] * len(h))
    assert loss is not None
    return loss.numpy() > 0.5  # at least one 1 dB entry; float32 rounding leaves ~0.01 dB in line of sight


def fast_signals(
    heights: np.ndarray, tx_pos: np.ndarray, config: SimConfig, seed: int, draw: int = 0, chunk: int = 8
) -> np.ndarray:
    """The full fast simulator on given geometry: signals float32 [N, T, H, W] dB (NaN below ``floor_db``).

    heights [N, H, W] metres, tx_pos [N, T, 3]; config.size and config.frames must match. One physics draw
    (``SeedSequence([seed, draw])``) for every tile, so that draws span the config's ranges rather than their
    average; tile i's shadowing and noise come from ``SeedSequence([seed, draw, i])``. ``measured_fraction`` is
    ignored.
    """
    import dataclasses

    from tomoformer.sim.physics import draw_physics
    from tomoformer.sim.simulate import PreparedSample, propagate

    config = dataclasses.replace(config, measured_fraction=1.0)
    heights = np.asarray(heights, np.float32)
    tx_pos = np.asarray(tx_pos, np.float32)
    out = np.empty((len(heights), *tx_pos.shape[1:2], *heights.shape[1:]), np.float32)
    physics = draw_physics(config, np.random.default_rng(np.random.SeedSequence([seed, draw])))
    for lo in range(0, len(heights), chunk):
        samples = []
        for i in range(lo, min(lo + chunk, len(heights))):
            seq = np.random.SeedSequence([seed, draw, i])
            torch_seed = int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))
            samples.append(PreparedSample(heights[i], heights[i] <= 0, tx_pos[i], "", torch_seed, None, physics))
        out[lo : lo + len(samples)] = propagate(config, samples, torch.device("cpu")).numpy()
    return out


def error_stats(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and mean (pred - target) in dB over cells finite in both arrays (any equal shapes)."""
    ok = np.isfinite(pred) & np.isfinite(target)
    if not ok.any():
        raise DataError("no cell has a value in both the ray-traced and the simulated maps")
    d = pred[ok].astype(np.float64) - target[ok]
    return {"rmse_db": float(np.sqrt(np.mean(d**2))), "mae_db": float(np.mean(np.abs(d))), "bias_db": float(d.mean())}


def compare_distributions(
    heights: np.ndarray,
    tx_pos: np.ndarray,
    signals: np.ndarray,
    config: SimConfig,
    draws: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """The ray tracer's ``distribution_stats`` beside the fast simulator's over ``draws`` physics draws.

    Returns {"ray_tracer": stats, "fast": {stat: {min, median, max}}, "bracketed": {stat: bool},
    "rmse_db": {min, median, max} (per-cell RMSE of the full fast maps, cells finite in both), "draws": n}.
    """
    buildings = np.asarray(heights) > config.rx_height_m
    signals = np.asarray(signals, np.float32)
    shadowed = shadow_mask(heights, tx_pos, config)
    rt = distribution_stats(signals, buildings, shadowed)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames: no floor, nothing is cut
        floor = np.nanmin(signals, axis=(2, 3))[:, :, None, None]
    per_draw: dict[str, list[float]] = {name: [] for name in (*STATISTICS, "rmse_db")}
    for k in range(draws):
        fast = fast_signals(heights, tx_pos, config, seed, k)
        if config.floor_db is None and config.span("floor_fraction")[1] == 0:
            with np.errstate(invalid="ignore"):
                cut = np.where(fast < floor, np.nan, fast)
        else:
            cut = fast
        same_cells = np.where(np.isfinite(signals), fast, np.nan)
        gaps = distribution_stats(same_cells, buildings, shadowed)
        for name, value in distribution_stats(cut, buildings, shadowed).items():
            per_draw[name].append(value if name.startswith("empty") else gaps[name])
        ok = np.isfinite(fast) & np.isfinite(signals)
        per_draw["rmse_db"].append(error_stats(fast, signals)["rmse_db"] if ok.any() else math.nan)

    def summary(values: list[float]) -> dict[str, float]:
        v = np.asarray(values, np.float64)
        if not np.isfinite(v).any():
            return {"min": math.nan, "median": math.nan, "max": math.nan}
        return {"min": float(np.nanmin(v)), "median": float(np.nanmedian(v)), "max": float(np.nanmax(v))}

    fast_summary = {name: summary(values) for name, values in per_draw.items()}
    bracketed = {name: bool(fast_summary[name]["min"] <= rt[name] <= fast_summary[name]["max"]) for name in STATISTICS}
    rmse = fast_summary.pop("rmse_db")
    return {"ray_tracer": rt, "fast": fast_summary, "bracketed": bracketed, "rmse_db": rmse, "draws": draws}

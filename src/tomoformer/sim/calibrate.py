"""Calibrate the fast simulator against ray-traced maps of the same layouts (``tomoformer sim calibrate``; the
store is read by tomoformer.data.simulated.calibrate_dataset, this module takes arrays).

The fast model's deterministic gain (without canyon light) is linear in its three loss parameters:

    gain(wall, indoor, roof) = g0 - wall * A - indoor * B - roof * C

(``tomoformer.sim.propagation``: walls entered, metres indoors and roofs entered are fixed by the geometry), so
four evaluations give A, B and C exactly, and fitting (wall_loss_db, indoor_loss_db_per_m, roof_loss_db) to
ray-traced maps is a bounded linear least-squares problem (scipy.optimize.lsq_linear) over the cells where the
ray tracer has a value. The shadowing standard deviation is then what the fit leaves unexplained, less the
measurement noise.

Distributions (``tomoformer.sim.calibrate_stats``): the full fast simulator (randomised physics, canyon light,
shadowing, noise, floor) is also run on the same geometry, several physics draws per tile, and compared with the
ray tracer on what a model sees: how much darker indoor cells are than outdoor ones, and how many cells are empty.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import lsq_linear

from tomoformer.errors import DataError
from tomoformer.sim.calibrate_stats import compare_distributions, error_stats
from tomoformer.sim.config import SimConfig
from tomoformer.sim.physics import Physics
from tomoformer.sim.propagation import path_gain_db

# Upper bounds of the fit (dB per wall, dB per metre): keep a degenerate tile from producing absurd values.
_MAX_WALL_DB = 60.0
_MAX_INDOOR_DB_PER_M = 10.0
_MAX_ROOF_DB = 60.0


@dataclass
class Calibration:
    """The calibrated config and the per-pixel dB error of the fast model's deterministic gain against the
    ray-traced maps, before and after (keys rmse_db, mae_db, bias_db; over ``n_cells`` cells finite in both).

    ``distributions``: ``compare_distributions`` of the start config and of the calibrated one (None when not
    computed)."""

    config: SimConfig
    before: dict[str, float]
    after: dict[str, float]
    n_cells: int
    distributions: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        fitted = ("wall_loss_db", "indoor_loss_db_per_m", "roof_loss_db", "shadowing_std_db", "floor_db")
        return {
            "fitted": {k: getattr(self.config, k) for k in fitted},
            "before": self.before,
            "after": self.after,
            "n_cells": self.n_cells,
            "distributions": self.distributions,
        }


def loss_terms(
    heights: np.ndarray, tx_pos: np.ndarray, config: SimConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(g0, A, B, C), each float32 [N, T, H, W]: free-space gain in dB, walls entered, metres indoors and roofs
    entered per link.

    heights: [N, H, W] metres; tx_pos: [N, T, 3] (row, col in cells, height m).
    """
    h = torch.from_numpy(np.asarray(heights, np.float32))
    tx = torch.from_numpy(np.asarray(tx_pos, np.float32))

    def gain(wall: float, indoor: float, roof: float) -> np.ndarray:
        physics = Physics(wall, indoor, roof, math.inf, math.inf, 0.0, 0.0)
        return path_gain_db(h, tx, config, [physics] * len(h)).numpy()

    g0 = gain(0.0, 0.0, 0.0)
    return g0, g0 - gain(1.0, 0.0, 0.0), g0 - gain(0.0, 1.0, 0.0), g0 - gain(0.0, 0.0, 1.0)


def _typical(config: SimConfig, name: str) -> float:
    """The median of a range field's draw: geometric mean for log-uniform ranges, else the midpoint."""
    from tomoformer.sim.config import RANGE_FIELDS

    lo, hi = config.span(name)
    return math.sqrt(lo * hi) if RANGE_FIELDS[name] and lo > 0 else (lo + hi) / 2


def fit_fast_params(
    heights: np.ndarray,
    tx_pos: np.ndarray,
    signals: np.ndarray,
    config: SimConfig,
    fit_floor: bool = False,
) -> Calibration:
    """Fit wall, indoor and roof loss (least squares, >= 0), then shadowing_std_db, to ``signals``.

    heights [N, H, W] m, tx_pos [N, T, 3], signals [N, T, H, W] dB path gain (NaN = no value; cells NaN in
    ``signals`` are left out). ``fit_floor`` also sets floor_db so that the fast model misses as large a
    fraction of cells as the ray tracer (the quantile of the calibrated gain at the ray tracer's NaN fraction).
    The returned config is ``config`` with the fitted fields replaced (single values; no opaque roofs and no
    canyon light, which the linear fit does not model). "before" uses the median of each of ``config``'s ranges
    (roofs as walls when roof_loss_db is null).
    """
    signals = np.asarray(signals, np.float32)
    g0, A, B, C = loss_terms(heights, tx_pos, config)
    ok = np.isfinite(signals) & np.isfinite(g0)
    if ok.sum() < 2:
        raise DataError("calibration needs ray-traced values in at least 2 cells")
    wall0, indoor0 = _typical(config, "wall_loss_db"), _typical(config, "indoor_loss_db_per_m")
    roof0 = wall0 if config.roof_loss_db is None else _typical(config, "roof_loss_db")
    before = error_stats(g0 - wall0 * A - indoor0 * B - roof0 * C, signals)
    # Residual to explain: signals - g0 = -wall A - indoor B - roof C.
    design = -np.stack([A[ok], B[ok], C[ok]], axis=1).astype(np.float64)
    target = (signals[ok] - g0[ok]).astype(np.float64)
    # Columns scaled to unit norm: metres indoors are ~10x walls entered, which slows the solver otherwise.
    scale = np.linalg.norm(design, axis=0)
    scale[scale == 0] = 1.0
    upper = np.array([_MAX_WALL_DB, _MAX_INDOOR_DB_PER_M, _MAX_ROOF_DB]) * scale
    solution = lsq_linear(design / scale, target, bounds=(np.zeros(3), upper)).x / scale
    wall, indoor, roof = (float(v) for v in solution)
    if not C[ok].any():
        roof = wall  # no roof was entered: nothing to fit, keep the old behaviour
    fitted = g0 - wall * A - indoor * B - roof * C
    after = error_stats(fitted, signals)
    # The fit leaves shadowing and measurement noise (independent) in the residual.
    residual_var = after["rmse_db"] ** 2 - after["bias_db"] ** 2
    shadowing = math.sqrt(max(residual_var - _typical(config, "noise_std_db") ** 2, 0.0))
    floor = config.floor_db
    if fit_floor:
        missing = float(np.mean(~np.isfinite(signals)))
        floor = float(np.quantile(fitted, missing)) if missing > 0 else None
    new = dataclasses.replace(
        config,
        wall_loss_db=round(wall, 3),
        indoor_loss_db_per_m=round(indoor, 4),
        roof_loss_db=round(roof, 3),
        roof_opaque_probability=0.0,
        canyon_probability=0.0,
        shadowing_std_db=round(shadowing, 3),
        noise_std_db=_typical(config, "noise_std_db"),
        floor_db=None if floor is None else round(floor, 2),
    )
    return Calibration(new, before, after, int(ok.sum()))


def dataset_config(attrs: dict[str, Any], shape: tuple[int, int, int, int]) -> SimConfig:
    """The SimConfig a dataset was made with (its ``sim_config`` attribute), else defaults with its geometry."""
    stored = attrs.get("sim_config")
    if isinstance(stored, dict):
        return SimConfig.from_dict(stored)
    _, t, h, w = shape
    if h != w:
        raise DataError(f"the fast simulator makes square tiles; this dataset has {h}x{w} maps")
    values = {k: attrs[k] for k in ("cell_size_m", "frequency_hz", "rx_height_m") if k in attrs}
    return SimConfig.from_dict({**values, "size": h, "frames": t})


def calibrate_arrays(
    heights: np.ndarray,
    tx_pos: np.ndarray,
    signals: np.ndarray,
    attrs: dict[str, Any],
    config: SimConfig | None = None,
    fit_floor: bool = False,
    draws: int = 16,
    seed: int = 0,
    source: str = "the dataset",
) -> Calibration:
    """Calibrate against ray-traced maps: heights float32 [N, H, W] metres, tx_pos float32 [N, T, 3] (row, col in
    cells, height m), signals float32 [N, T, H, W] dB (NaN = no value), with the dataset's ``attrs``.

    ``config`` (default: the dataset's own ``sim_config`` attribute) gives the starting point and every field that
    is not fitted; frequency, cell size, receiver height, size and frames always come from the data.
    ``draws`` > 0 also compares distributions (``compare_distributions``, that many physics draws per tile).
    ``source`` names the data in errors (tomoformer.data.simulated.calibrate_dataset passes the store's path).
    """
    base = config or dataset_config(attrs, signals.shape)
    geometry = {k: float(attrs[k]) for k in ("cell_size_m", "frequency_hz", "rx_height_m") if k in attrs}
    _, t, h, w = signals.shape
    if h != w:
        raise DataError(f"{source}: the fast simulator makes square tiles; this dataset has {h}x{w} maps")
    base = dataclasses.replace(base, **geometry, size=h, frames=t, measured_fraction=1.0)
    if not np.isfinite(tx_pos).all():
        raise DataError(f"{source}: calibration needs every transmitter position (tx_pos has NaN)")
    result = fit_fast_params(heights, tx_pos, signals, base, fit_floor=fit_floor)
    if draws > 0:
        result.distributions = {
            "start": compare_distributions(heights, tx_pos, signals, base, draws, seed),
            "calibrated": compare_distributions(heights, tx_pos, signals, result.config, draws, seed),
        }
    return result

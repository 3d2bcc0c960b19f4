"""Calibrate the fast simulator against ray-traced maps of the same layouts (``tomoformer sim calibrate``).

The fast model's deterministic gain is linear in its two loss parameters:

    gain(wall, indoor) = g0 - wall * A - indoor * B

(``tomoformer.sim.propagation``: walls entered and metres indoors are fixed by the geometry), so three
evaluations give A and B exactly, and fitting (wall_loss_db, indoor_loss_db_per_m) to ray-traced maps is a
bounded linear least-squares problem (scipy.optimize.lsq_linear) over the cells where the ray tracer has a
value. The shadowing standard deviation is then what the fit leaves unexplained, less the measurement noise.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import lsq_linear

from tomoformer.errors import DataError
from tomoformer.sim.config import SimConfig
from tomoformer.sim.propagation import path_gain_db

# Upper bounds of the fit (dB per wall, dB per metre): keep a degenerate tile from producing absurd values.
_MAX_WALL_DB = 60.0
_MAX_INDOOR_DB_PER_M = 10.0


@dataclass
class Calibration:
    """The calibrated config and the per-pixel dB error of the fast model's deterministic gain against the
    ray-traced maps, before and after (keys rmse_db, mae_db, bias_db; over ``n_cells`` cells finite in both)."""

    config: SimConfig
    before: dict[str, float]
    after: dict[str, float]
    n_cells: int

    def to_dict(self) -> dict[str, Any]:
        fitted = ("wall_loss_db", "indoor_loss_db_per_m", "shadowing_std_db", "floor_db")
        return {
            "fitted": {k: getattr(self.config, k) for k in fitted},
            "before": self.before,
            "after": self.after,
            "n_cells": self.n_cells,
        }


def error_stats(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and mean (pred - target) in dB over cells finite in both arrays (any equal shapes)."""
    ok = np.isfinite(pred) & np.isfinite(target)
    if not ok.any():
        raise DataError("no cell has a value in both the ray-traced and the simulated maps")
    d = pred[ok].astype(np.float64) - target[ok]
    return {"rmse_db": float(np.sqrt(np.mean(d**2))), "mae_db": float(np.mean(np.abs(d))), "bias_db": float(d.mean())}


def loss_terms(heights: np.ndarray, tx_pos: np.ndarray, config: SimConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g0, A, B), each float32 [N, T, H, W]: free-space gain in dB, walls entered, metres indoors per link.

    heights: [N, H, W] metres; tx_pos: [N, T, 3] (row, col in cells, height m).
    """
    h = torch.from_numpy(np.asarray(heights, np.float32))
    tx = torch.from_numpy(np.asarray(tx_pos, np.float32))

    def gain(wall: float, indoor: float) -> np.ndarray:
        cfg = dataclasses.replace(config, wall_loss_db=wall, indoor_loss_db_per_m=indoor)
        return path_gain_db(h, tx, cfg).numpy()

    g0 = gain(0.0, 0.0)
    return g0, g0 - gain(1.0, 0.0), g0 - gain(0.0, 1.0)


def fit_fast_params(
    heights: np.ndarray,
    tx_pos: np.ndarray,
    signals: np.ndarray,
    config: SimConfig,
    fit_floor: bool = False,
) -> Calibration:
    """Fit wall_loss_db and indoor_loss_db_per_m (least squares, >= 0), then shadowing_std_db, to ``signals``.

    heights [N, H, W] m, tx_pos [N, T, 3], signals [N, T, H, W] dB path gain (NaN = no value; cells NaN in
    ``signals`` are left out). ``fit_floor`` also sets floor_db so that the fast model misses as large a
    fraction of cells as the ray tracer (the quantile of the calibrated gain at the ray tracer's NaN fraction).
    The returned config is ``config`` with the fitted fields replaced.
    """
    signals = np.asarray(signals, np.float32)
    g0, A, B = loss_terms(heights, tx_pos, config)
    ok = np.isfinite(signals) & np.isfinite(g0)
    if ok.sum() < 2:
        raise DataError("calibration needs ray-traced values in at least 2 cells")
    before = error_stats(g0 - config.wall_loss_db * A - config.indoor_loss_db_per_m * B, signals)
    # Residual to explain: signals - g0 = -wall A - indoor B.
    design = -np.stack([A[ok], B[ok]], axis=1).astype(np.float64)
    target = (signals[ok] - g0[ok]).astype(np.float64)
    # Columns scaled to unit norm: metres indoors are ~10x walls entered, which slows the solver otherwise.
    scale = np.linalg.norm(design, axis=0)
    scale[scale == 0] = 1.0
    upper = np.array([_MAX_WALL_DB, _MAX_INDOOR_DB_PER_M]) * scale
    solution = lsq_linear(design / scale, target, bounds=(np.zeros(2), upper)).x / scale
    wall, indoor = float(solution[0]), float(solution[1])
    fitted = g0 - wall * A - indoor * B
    after = error_stats(fitted, signals)
    # The fit leaves shadowing and measurement noise (independent) in the residual.
    residual_var = after["rmse_db"] ** 2 - after["bias_db"] ** 2
    shadowing = math.sqrt(max(residual_var - config.noise_std_db**2, 0.0))
    floor = config.floor_db
    if fit_floor:
        missing = float(np.mean(~np.isfinite(signals)))
        floor = float(np.quantile(fitted, missing)) if missing > 0 else None
    new = dataclasses.replace(
        config,
        wall_loss_db=round(wall, 3),
        indoor_loss_db_per_m=round(indoor, 4),
        shadowing_std_db=round(shadowing, 3),
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


def calibrate_dataset(
    path: str | os.PathLike[str],
    config: SimConfig | None = None,
    max_samples: int | None = None,
    fit_floor: bool = False,
) -> Calibration:
    """Calibrate against the ray-traced dataset at ``path`` (it needs ``heights`` and ``tx_pos``).

    ``config`` (default: the dataset's own ``sim_config``) gives the starting point and every field that is
    not fitted; frequency, cell size and receiver height always come from the dataset.
    """
    from tomoformer.data.format import open_dataset

    with open_dataset(path) as ds:
        for key in ("heights", "tx_pos"):
            if key not in ds.arrays:
                raise DataError(f"{path}: calibration needs the '{key}' array (ray-traced data from `simulate`)")
        n = len(ds) if max_samples is None else min(len(ds), max_samples)
        if n < 1:
            raise DataError(f"{path}: no samples to calibrate on")
        base = config or dataset_config(ds.attrs, ds.shape)
        geometry = {k: float(ds.attrs[k]) for k in ("cell_size_m", "frequency_hz", "rx_height_m") if k in ds.attrs}
        base = dataclasses.replace(base, **geometry)
        tx_pos = ds.read("tx_pos", slice(0, n)).astype(np.float32)
        if not np.isfinite(tx_pos).all():
            raise DataError(f"{path}: calibration needs every transmitter position (tx_pos has NaN)")
        return fit_fast_params(
            ds.read("heights", slice(0, n)),
            tx_pos,
            ds.read("signals", slice(0, n)).astype(np.float32),
            base,
            fit_floor=fit_floor,
        )

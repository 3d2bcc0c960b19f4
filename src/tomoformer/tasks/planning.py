"""Where to put the next transmitters: greedy selection of the candidate set that cuts the map's uncertainty most.

For one area, the model's calibrated building probabilities ``p [H, W]`` say what is still unknown: the
uncertainty ``u = H(p)`` in bits per cell. Two objectives, both chosen greedily (add the best candidate, condition
on it, repeat), so that the set, not each candidate alone, counts:

``coverage`` (default; measured best on validation tiles, docs/uncertainty.md)
    Runs the fast simulator's deterministic multi-wall model (:func:`tomoformer.sim.path_gain_and_loss_db`) from
    each candidate over the most likely building map (``p > 0.5``, buildings ``building_height_m`` tall). A cell
    is *lit* by a candidate with weight ``f = exp(-building loss / wall_loss_db)`` (1 in line of sight, 0.37 behind
    one wall; ``lit="los"``), or, with ``lit="level"``, ``f = sigmoid((level - reference) / lit_width_db)`` with the
    reference the ``lit_quantile`` of the levels measured so far. A lit cell's own signal shows whether it is
    indoors. The expected uncertainty left after a set ``S`` is ``sum_cells u * prod_{c in S} (1 - f_c)``; each
    step adds the candidate that removes the most of it (its ``score``, in bits).

``information``
    Draws ``M`` plausible building maps from ``p`` (spatially correlated: a cell is a building when a smoothed
    Gaussian field, mapped to a uniform, falls below ``p``), simulates every candidate on every draw at the cells
    that measure (floored where nothing is received), and scores a set ``S`` by the information its maps carry
    about which draw is the true city, in the linear-Gaussian approximation with noise ``noise_db``:
    ``IG(S) = 1/2 log2 det(I_M + Y_S Y_S^T / ((M - 1) noise_db^2))``, ``Y_S`` the centred simulated maps of ``S``.

Cells the model is sure of add nothing under either objective.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr
from torch import nn

from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.data.schema import DEFAULT_ATTRS, short_error
from tomoformer.errors import DataError
from tomoformer.io import atomic_path
from tomoformer.sim import SimConfig
from tomoformer.sim.propagation import path_gain_and_loss_db, path_gain_db

NOTHING_RECEIVED_DB = -250.0


@dataclass(frozen=True)
class PlanOptions:
    """Knobs of the planner (defaults measured on fast-simulator tiles; docs/uncertainty.md)."""

    draws: int = 16  # plausible building maps M
    correlation_cells: float = 2.0  # smoothing of the field that draws them
    building_height_m: float = 15.0  # height of drawn buildings
    noise_db: float = 6.0  # measurement noise and model error of a simulated map
    wall_loss_db: float = 10.0
    indoor_loss_db_per_m: float = 0.2
    n_angles: int = 180  # rays of the propagation model (360 in data generation; 180 is twice as fast)
    seed: int = 0
    method: str = "coverage"  # "coverage" (lit uncertain cells) or "information" (drawn building maps)
    lit_quantile: float = 0.75  # coverage: a cell is lit above this quantile of the levels measured so far
    lit_width_db: float = 5.0  # coverage: width of the lit/unlit transition
    lit: str = "los"  # coverage: "level" (received level above the reference) or "los" (few walls on the way)


@dataclass
class SamplePlan:
    """The chosen candidates of one area, best first, and the information each added (bits)."""

    chosen: list[int]
    gains: list[float]


def planning_config(
    size: int, cell_size_m: float, frequency_hz: float, rx_height_m: float, options: PlanOptions
) -> SimConfig:
    """A fixed-physics simulator configuration (no shadowing, noise or canyon light: expectations only)."""
    return SimConfig(
        size=size,
        cell_size_m=cell_size_m,
        frequency_hz=frequency_hz,
        rx_height_m=rx_height_m,
        wall_loss_db=options.wall_loss_db,
        indoor_loss_db_per_m=options.indoor_loss_db_per_m,
        roof_loss_db=None,
        roof_opaque_probability=0.0,
        canyon_probability=0.0,
        shadowing_std_db=0.0,
        noise_std_db=0.0,
        n_angles=options.n_angles,
    )


def draw_building_maps(probabilities: np.ndarray, draws: int, correlation_cells: float, seed: int) -> np.ndarray:
    """``draws`` boolean maps ``[M, H, W]``, cell ``(i, j)`` a building with probability ``p[i, j]``, neighbours
    correlated over about ``correlation_cells``."""
    rng = np.random.default_rng(seed)
    p = np.nan_to_num(np.asarray(probabilities, dtype=np.float64), nan=0.5)
    noise = rng.standard_normal((draws, *p.shape))
    if correlation_cells > 0:
        noise = np.stack([gaussian_filter(n, correlation_cells, mode="wrap") for n in noise])
        noise /= noise.reshape(draws, -1).std(axis=1).reshape(draws, 1, 1) + 1e-12
    return ndtr(noise) < p[None]


def candidate_maps(
    probabilities: np.ndarray,
    candidates: np.ndarray,
    receivers: np.ndarray,
    floor_db: float,
    config: SimConfig,
    options: PlanOptions,
) -> torch.Tensor:
    """Simulated received levels ``[K0, M, R]`` (dB, centred over the M draws) of every candidate on every drawn
    city at the ``R`` receiver cells.

    probabilities ``[H, W]``; candidates ``[K0, 3]`` row, col (cells), height (m); receivers ``[H, W]`` bool.
    """
    cities = draw_building_maps(probabilities, options.draws, options.correlation_cells, options.seed)
    heights = torch.from_numpy(cities.astype(np.float32) * options.building_height_m)
    tx = torch.from_numpy(np.broadcast_to(candidates.astype(np.float32), (options.draws, *candidates.shape)).copy())
    gain = path_gain_db(heights, tx, config)  # [M, K0, H, W]
    levels = gain.clamp_min(floor_db)[:, :, torch.from_numpy(receivers)]  # [M, K0, R]
    levels = levels.permute(1, 0, 2).double()
    return levels - levels.mean(dim=1, keepdim=True)


def greedy_plan(maps: torch.Tensor, k: int, noise_db: float) -> SamplePlan:
    """Greedy set selection on centred simulated maps ``[K0, M, R]``: ``k`` distinct candidates, each the one
    adding the most information (bits) to those chosen before."""
    n_cand, m = maps.shape[0], maps.shape[1]
    scale = max(m - 1, 1) * noise_db**2
    grams = torch.einsum("cmr,cnr->cmn", maps, maps) / scale  # [K0, M, M]
    eye = torch.eye(m, dtype=grams.dtype)
    current = torch.zeros(m, m, dtype=grams.dtype)
    base = 0.0
    chosen: list[int] = []
    gains: list[float] = []
    available = torch.ones(n_cand, dtype=torch.bool)
    for _ in range(min(k, n_cand)):
        logdet = torch.linalg.slogdet(eye + current + grams).logabsdet  # [K0]
        gain = (0.5 * logdet - base) / math.log(2)
        gain = torch.where(available, gain, torch.tensor(-math.inf, dtype=gain.dtype))
        best = int(torch.argmax(gain))
        chosen.append(best)
        gains.append(max(float(gain[best]), 0.0))
        available[best] = False
        current = current + grams[best]
        base = float(0.5 * torch.linalg.slogdet(eye + current).logabsdet)
    return SamplePlan(chosen, gains)


def lit_cells(
    probabilities: np.ndarray, candidates: np.ndarray, reference_db: float, config: SimConfig, options: PlanOptions
) -> torch.Tensor:
    """How well each candidate lights each cell, ``[K0, H, W]`` in [0, 1]: the level it would give on the most
    likely building map, through a logistic step of width ``lit_width_db`` at ``reference_db``."""
    heights = torch.from_numpy((np.nan_to_num(probabilities, nan=0.0) > 0.5).astype(np.float32))
    heights = heights[None] * options.building_height_m
    tx = torch.from_numpy(candidates.astype(np.float32))[None]
    if options.lit == "los":
        _, loss = path_gain_and_loss_db(heights, tx, config, with_loss=True)
        return torch.exp(-loss[0].double() / options.wall_loss_db)
    gain = path_gain_db(heights, tx, config)[0]
    return torch.sigmoid((gain.double() - reference_db) / options.lit_width_db)


def greedy_coverage(lit: torch.Tensor, uncertainty: np.ndarray, k: int) -> SamplePlan:
    """Greedy maximum coverage of uncertainty: each step takes the candidate that removes the most remaining
    uncertainty (bits), where a cell lit with weight ``f`` keeps ``1 - f`` of its uncertainty."""
    remaining = torch.from_numpy(np.nan_to_num(uncertainty, nan=1.0).astype(np.float64))
    available = torch.ones(lit.shape[0], dtype=torch.bool)
    chosen: list[int] = []
    gains: list[float] = []
    for _ in range(min(k, lit.shape[0])):
        value = (lit * remaining).flatten(1).sum(1)
        value = torch.where(available, value, torch.tensor(-math.inf, dtype=value.dtype))
        best = int(torch.argmax(value))
        chosen.append(best)
        gains.append(max(float(value[best]), 0.0))
        available[best] = False
        remaining = remaining * (1 - lit[best])
    return SamplePlan(chosen, gains)


def plan_sample(
    probabilities: np.ndarray,
    candidates: np.ndarray,
    k: int,
    receivers: np.ndarray | None = None,
    floor_db: float = NOTHING_RECEIVED_DB,
    reference_db: float | None = None,
    cell_size_m: float = 2.0,
    frequency_hz: float = 3.5e9,
    rx_height_m: float = 1.5,
    options: PlanOptions | None = None,
) -> SamplePlan:
    """The ``k`` best candidates for one area from its building probabilities.

    Args:
        probabilities: ``[H, W]`` calibrated building probabilities.
        candidates: ``[K0, 3]`` transmitter positions: row, column (cells), height (m), as ``tx_pos``.
        k: how many to choose (at most K0).
        receivers: ``[H, W]`` bool, the cells that will measure (default: every cell).
        floor_db: levels below this are not received (clipped to it, so they tell nothing).
        reference_db: ``coverage``: the level above which a cell counts as lit (default: ``floor_db + 60``).
        cell_size_m, frequency_hz, rx_height_m: the data's conditions.
        options: planner knobs.
    """
    options = options or PlanOptions()
    p = np.asarray(probabilities, dtype=np.float64)
    receivers = np.ones(p.shape, dtype=bool) if receivers is None else np.asarray(receivers, dtype=bool)
    if not receivers.any():
        receivers = np.ones(p.shape, dtype=bool)
    config = planning_config(max(p.shape), cell_size_m, frequency_hz, rx_height_m, options)
    if options.method == "coverage":
        from tomoformer.tasks.uncertainty import binary_entropy

        reference = floor_db + 60.0 if reference_db is None else reference_db
        lit = lit_cells(p, np.asarray(candidates, dtype=np.float32), reference, config, options)
        return greedy_coverage(lit, binary_entropy(p), k)
    maps = candidate_maps(p, np.asarray(candidates, dtype=np.float32), receivers, floor_db, config, options)
    return greedy_plan(maps, k, options.noise_db)


PLAN_COLUMNS = ("sample", "rank", "candidate", "row", "col", "height", "score")


def load_candidates(path: str | os.PathLike[str], n_samples: int, k: int) -> np.ndarray:
    """Candidates ``[N, K0, 3]`` from ``path`` (``.npy`` of ``[N, K0, 3]`` or ``[K0, 3]``, shared by all samples);
    a wrong shape, a non-finite entry or ``k > K0`` is one :class:`DataError` line naming the file."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array of candidates ({short_error(err)})") from None
    shape = list(array.shape)
    if array.ndim == 2:
        array = np.broadcast_to(array, (n_samples, *array.shape))
    if array.ndim != 3 or array.shape[-1] != 3 or array.shape[0] != n_samples or array.shape[1] == 0:
        raise DataError(
            f"{path}: candidates have shape {shape}; expected [N={n_samples}, K0, 3] or [K0, 3] "
            "(row, column in cells, height in m)"
        )
    if array.dtype.kind not in "iuf":
        raise DataError(f"{path}: candidates have dtype {array.dtype}; expected numbers")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: candidates hold NaN or infinite positions")
    if k > array.shape[1]:
        raise DataError(f"{path}: --k {k} is more than the {array.shape[1]} candidates per sample")
    return np.asarray(array, dtype=np.float32)


@dataclass
class PlanResult:
    """Plans of every sample and what they were made from (for the CSV and the pictures)."""

    plans: list[SamplePlan]
    candidates: np.ndarray  # [N, K0, 3]
    probabilities: np.ndarray  # [N, H, W]
    uncertainty: np.ndarray  # [N, H, W] bits

    def rows(self) -> list[dict[str, float | int]]:
        """One row per chosen candidate: ``sample, rank, candidate, row, col, height, score`` (bits)."""
        out: list[dict[str, float | int]] = []
        for i, plan in enumerate(self.plans):
            for rank, (c, gain) in enumerate(zip(plan.chosen, plan.gains, strict=True), start=1):
                row, col, height = (float(v) for v in self.candidates[i, c])
                out.append(
                    {"sample": i, "rank": rank, "candidate": c, "row": row, "col": col, "height": height, "score": gain}
                )
        return out


def plan_dataset(
    model: nn.Module,
    dataset: SignalMapDataset,
    candidates: np.ndarray,
    k: int,
    options: PlanOptions | None = None,
    batch_size: int = 8,
    device: str | None = None,
    views: int = 1,
) -> PlanResult:
    """Plan ``k`` transmitters for every sample of ``dataset`` (the maps measured so far) among ``candidates``
    ``[N, K0, 3]``. ``model`` is the calibrated model; ``views > 1`` averages its probability over that many
    test-time views first (:mod:`tomoformer.tasks.uncertainty`)."""
    from tomoformer.tasks.inference import predict_probabilities
    from tomoformer.tasks.uncertainty import DEFAULT_FRAME_FRACTION, binary_entropy, predict_with_uncertainty

    options = options or PlanOptions()
    if views > 1:
        probabilities, _ = predict_with_uncertainty(
            model, dataset, batch_size, device, views=views, frame_fraction=DEFAULT_FRAME_FRACTION, seed=options.seed
        )
    else:
        probabilities = predict_probabilities(model, dataset, batch_size=batch_size, device=device)
    source = dataset.source
    rx_height = source.rx_height_m
    frequency = float(source.attrs.get("frequency_hz", DEFAULT_ATTRS["frequency_hz"]))
    plans = []
    for i in range(len(dataset)):
        signals = dataset.raw(i)["signals"].astype(np.float32)
        measured = np.isfinite(signals)
        floor = float(np.min(signals[measured])) if measured.any() else NOTHING_RECEIVED_DB
        reference = float(np.quantile(signals[measured], options.lit_quantile)) if measured.any() else None
        plans.append(
            plan_sample(
                probabilities[i],
                candidates[i],
                k,
                receivers=measured.any(axis=0),
                floor_db=max(floor, NOTHING_RECEIVED_DB),
                reference_db=reference,
                cell_size_m=source.cell_size_m,
                frequency_hz=frequency,
                rx_height_m=rx_height,
                options=options,
            )
        )
    return PlanResult(plans, candidates, probabilities, binary_entropy(probabilities))


def write_plan_csv(path: str | os.PathLike[str], result: PlanResult) -> Path:
    """The plan as CSV (columns :data:`PLAN_COLUMNS`), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PLAN_COLUMNS)
        writer.writeheader()
        for row in result.rows():
            writer.writerow(
                {
                    **row,
                    "row": f"{row['row']:.3f}",
                    "col": f"{row['col']:.3f}",
                    "height": f"{row['height']:.3f}",
                    "score": f"{row['score']:.6g}",
                }
            )
    return Path(path)


def write_plan_pngs(folder: str | os.PathLike[str], result: PlanResult, indices: np.ndarray) -> None:
    """One picture per sample: the uncertainty map with the chosen positions numbered by rank."""
    from tomoformer.evaluation.figures import plan_figure, save_figure

    for i, plan in enumerate(result.plans):
        chosen = result.candidates[i, plan.chosen]
        others = np.delete(result.candidates[i], plan.chosen, axis=0)
        figure = plan_figure(result.uncertainty[i], chosen, others, title=f"sample {int(indices[i])}")
        save_figure(figure, Path(folder) / f"plan_{int(indices[i]):05d}.png")

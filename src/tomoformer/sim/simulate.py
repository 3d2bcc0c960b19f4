"""Dataset-level simulation: cities, transmitters, propagation, shadowing, noise, floor and sparsity.

Sample i of a dataset with seed s depends only on (s, i): every random draw comes from generators seeded by
``numpy.random.SeedSequence([s, i])`` (a NumPy generator for the city and transmitters, a second one for the
sample's physics, a torch generator for shadowing, noise and random sparsity), so splitting a dataset into batches
(or resuming) gives identical arrays on CPU. The device work of many samples may run in one batch: the draws stay
per sample.

Two phases, public for callers that schedule the work themselves (tomoformer.data.stream): :func:`prepare` draws
one sample's host-side part (city or given heights, transmitters, drive tests, physics) with NumPy, and
:func:`propagate` turns a list of prepared samples into their signals on a device in batched torch calls.
:func:`simulate_samples` is the two together.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from tomoformer.sim.canyon import canyon_light
from tomoformer.sim.cities import STYLES, draw_style, make_city, outdoor_component, street_walks
from tomoformer.sim.config import SimConfig
from tomoformer.sim.layouts import layout_positions
from tomoformer.sim.physics import Physics, draw_physics, frame_values
from tomoformer.sim.propagation import path_gain_and_loss_db, shadowing_from_noise, shadowing_noise_shape, to_device
from tomoformer.sim.terrain import make_terrain, terrain_margin


class HeightTiles(Protocol):
    """Given heights in place of procedural cities: sample i stands on tile ``i mod len(tiles)``.

    The simulators only read through these three methods; the store reading lives above sim
    (tomoformer.geometry.source.GeometrySource reads a geometry store or any dataset with ``heights``).
    """

    def __len__(self) -> int: ...

    def heights(self, index: int) -> np.ndarray:
        """Heights float32 [H, W] metres of the tile of sample ``index``."""
        ...

    def group(self, index: int) -> int:
        """Group (e.g. city) of the tile of sample ``index``, stored as the sample's ``group``."""
        ...


def dataset_attrs(config: SimConfig) -> dict[str, Any]:
    """Attributes the dataset store should carry for simulated data."""
    return {
        "cell_size_m": config.cell_size_m,
        "frequency_hz": config.frequency_hz,
        "signal_unit": "path_gain_db",
        "rx_height_m": config.rx_height_m,
        "source": "tomoformer.sim",
        "sim_config": config.to_dict(),
    }


def simulate_samples(
    config: SimConfig,
    seed: int,
    start: int,
    count: int,
    device: str | torch.device = "cpu",
    batched: bool | None = None,
    geometry: HeightTiles | None = None,
) -> dict[str, np.ndarray]:
    """Simulate samples ``start .. start + count - 1`` of the dataset defined by (config, seed).

    Returns signals float32 [count, T, H, W] dB path gain (NaN = not measured or below floor_db),
    buildings uint8 [count, H, W] (taller than the receiver), heights float32 [count, H, W] metres,
    tx_pos float32 [count, T, 3] (row, col in cells, height in metres), group int16 [count] (style index).

    ``batched`` (default: on every device but the CPU) runs the device work for many samples at once
    (``_simulate_batched``); otherwise samples run one by one (on CPU on parallel threads). Both draw
    the same numbers, so they agree to float rounding. ``geometry`` (:class:`HeightTiles`) gives the heights of
    sample i (tile i mod N, group = the tile's group) instead of a procedural city.
    """
    if seed < 0 or start < 0 or count < 0:
        raise ValueError("seed, start and count must be >= 0")
    device = torch.device(device)
    batched = device.type != "cpu" if batched is None else batched
    n, T = config.size, config.frames
    # Pinned memory lets the device write the signals straight into the returned array, asynchronously.
    pinned = batched and device.type == "cuda"
    out = {
        "signals": torch.empty((count, T, n, n), dtype=torch.float32, pin_memory=pinned).numpy(),
        "buildings": np.empty((count, n, n), np.uint8),
        "heights": np.empty((count, n, n), np.float32),
        "tx_pos": np.empty((count, T, 3), np.float32),
        "group": np.empty((count,), np.int16),
    }
    if batched:
        _simulate_batched(config, seed, start, count, device, out, geometry)
        return out
    # On CPU, samples run on parallel threads with single-threaded torch ops: a sample's ops are too small
    # to split well across cores. Each sample has its own generators, so the result does not depend on it.
    workers = min(count, torch.get_num_threads()) if device.type == "cpu" else 1

    def one(index: int) -> tuple[PreparedSample, np.ndarray]:
        sample = prepare(config, seed, index, geometry)
        return sample, propagate(config, [sample], device)[0].cpu().numpy()

    with _torch_threads(1 if workers > 1 else None), ThreadPoolExecutor(max(workers, 1)) as pool:
        for i, (sample, signals) in enumerate(pool.map(one, range(start, start + count))):
            sample.store(out, i, config.rx_height_m)
            out["signals"][i] = signals
    return out


def _simulate_batched(
    config: SimConfig,
    seed: int,
    start: int,
    count: int,
    device: torch.device,
    out: dict[str, np.ndarray],
    geometry: HeightTiles | None = None,
) -> None:
    """Fill ``out`` with batches of samples whose device work runs as one: cities and transmitters are drawn on
    host threads a few batches ahead, the device queue never waits on the host inside the loop."""
    n, T = config.size, config.frames
    # At least a few batches, so that drawing the cities of the next batches overlaps the device work.
    per_batch = max(1, min(_BATCH_CELLS[device.type == "cpu"] // (T * n * n), -(-count // _MIN_BATCHES)))
    starts = list(range(start, start + count, per_batch))
    signals = torch.from_numpy(out["signals"])
    # City generation is GIL-bound NumPy (small arrays): two threads overlap it with the device work. On a CPU
    # the batch's torch ops run single-threaded: multi-threaded ops next to the city threads oversubscribe
    # the cores, which made them up to 10x slower on a busy 2-core machine.
    single = _torch_threads(1 if device.type == "cpu" else None)
    with single, ThreadPoolExecutor(2) as pool:
        ahead: deque[list[Future[PreparedSample]]] = deque()
        for b, first in enumerate(starts):
            while len(ahead) < 3 and b + len(ahead) < len(starts):
                lo = starts[b + len(ahead)]
                stop = min(lo + per_batch, start + count)
                ahead.append([pool.submit(prepare, config, seed, index, geometry) for index in range(lo, stop)])
            samples = [future.result() for future in ahead.popleft()]
            batch = propagate(config, samples, device)
            i = first - start
            signals[i : i + len(samples)].copy_(batch, non_blocking=device.type == "cuda")
            for j, sample in enumerate(samples):
                sample.store(out, i + j, config.rx_height_m)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the last copies into the (pinned) signals array


# Frame-cells (T * H * W, summed over samples) per batch: ~15 float32 temporaries of this size live at once.
_BATCH_CELLS = {True: 1 << 22, False: 1 << 26}  # keyed by "device is the CPU"
_MIN_BATCHES = 4
_CANYON_BLOCK_M = 4.0
# Building loss above which a cell counts as shadowed: float32 cumsums leave up to ~0.01 dB in line-of-sight cells.
_SHADOW_DB = 0.05


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (process-wide); None leaves it alone."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None:
            torch.set_num_threads(previous)


@dataclass
class PreparedSample:
    """The host-side part of one sample (:func:`prepare`): everything drawn from its NumPy generators, and the
    seed of the torch generator :func:`propagate` draws its shadowing, noise and random sparsity from."""

    heights: np.ndarray  # float32 [H, W] metres
    free: np.ndarray  # bool [H, W] outdoor cells connected to the street network
    tx_pos: np.ndarray  # float32 [T, 3]
    style: str
    torch_seed: int  # seeds the sample's torch generator: shadowing, noise, random sparsity, in this order
    visited: np.ndarray | None  # bool [T, H, W] cells of the drive tests (sparsity_mode "path")
    physics: Physics  # this sample's draw of the config's ranges
    group: int | None = None  # the geometry source's group; None: the style's index
    terrain: np.ndarray | None = None  # float32 [H + 2 m, W + 2 m] ground metres (sim/terrain.py); None: flat
    terrain_margin: int = 0  # m

    @property
    def group_id(self) -> int:
        """The sample's ``group``: its tile's group on given heights, else the index of its style in STYLES."""
        return STYLES.index(self.style) if self.group is None else self.group

    def store(self, out: dict[str, np.ndarray], i: int, rx_height_m: float) -> None:
        """Write everything but the signals to row i of the output arrays."""
        out["buildings"][i] = self.heights > rx_height_m
        out["heights"][i] = self.heights
        out["tx_pos"][i] = self.tx_pos
        out["group"][i] = self.group_id


def prepare(config: SimConfig, seed: int, index: int, geometry: HeightTiles | None = None) -> PreparedSample:
    """Phase one for sample ``index`` of the dataset (config, seed): city (or tile ``index`` of ``geometry``),
    transmitters float32 [T, 3] (row, col in cells, height m), drive tests and physics, drawn with NumPy on the
    host. Depends only on (config, seed, index); thread-safe (each call has its own generators)."""
    seq = np.random.SeedSequence([seed, index])
    # Child 0 draws the layout (as before physics was randomised), child 1 the physics, child 2 the terrain
    # (spawning a third child leaves the first two as they were).
    city_seq, physics_seq, terrain_seq = seq.spawn(3)
    rng = np.random.default_rng(city_seq)
    torch_seed = int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))
    if geometry is None:
        style, group = draw_style(config.styles, rng), None  # weighted for "mixed" (cities.MIXED_WEIGHTS)
        heights = make_city(style, config.size, rng, config.cell_size_m)
    else:  # given geometry: the same draws of transmitters and physics, on the given heights
        style, group, heights = "", geometry.group(index), geometry.heights(index)
    free = outdoor_component(heights, config.rx_height_m)
    tx_pos = sample_tx(config, heights, free, rng)
    visited = None
    if config.measured_fraction < 1 and config.sparsity_mode == "path":
        # One drive test per frame through the street network, until k distinct cells are visited.
        _, visited = street_walks(free, config.frames, None, rng, target_cells=_measured_cells(config))
    physics = draw_physics(config, np.random.default_rng(physics_seq))
    terrain, margin = None, 0
    if config.terrain_max_m > 0:
        margin = terrain_margin(config.size, config.tx_outside_max_cells)
        scale = config.terrain_scale_m / config.cell_size_m
        terrain = make_terrain(config.size, margin, config.terrain_max_m, scale, np.random.default_rng(terrain_seq))
    return PreparedSample(heights, free, tx_pos, style, torch_seed, visited, physics, group, terrain, margin)


# Path gain below this is "nothing received" (NaN) whatever floor_db says; far under any receiver's noise floor.
NOTHING_RECEIVED_DB = -250.0


def propagate(config: SimConfig, samples: list[PreparedSample], device: torch.device) -> torch.Tensor:
    """Phase two: signals float32 [S, T, H, W] dB path gain on ``device`` (NaN = not measured or below the floor)
    for S prepared samples (:func:`prepare`), all in batched calls: propagation, street-canyon light,
    shadowing, noise, floor and sparsity.

    Each sample's random numbers come from its own generator, drawn in the same order whatever the batch, so a
    sample's signals do not depend on which other samples share its call (on CPU, bit for bit).
    """
    S, T, n = len(samples), config.frames, config.size
    physics = [s.physics for s in samples]
    heights = to_device(torch.from_numpy(np.stack([s.heights for s in samples])), device)
    tx_pos = torch.from_numpy(np.stack([s.tx_pos for s in samples]))
    canyon = any(p.canyon for p in physics)
    terrain = None
    if any(s.terrain is not None for s in samples):
        margin = max(s.terrain_margin for s in samples)
        side = n + 2 * margin
        ground = np.zeros((S, side, side), np.float32)
        for i, sample in enumerate(samples):
            if sample.terrain is not None:
                off = margin - sample.terrain_margin
                ground[i, off : side - off, off : side - off] = sample.terrain
        terrain = (to_device(torch.from_numpy(ground), device), margin)
    gain, loss = path_gain_and_loss_db(heights, tx_pos, config, physics, with_loss=canyon, terrain=terrain)
    if canyon:
        corner, per_m = (frame_values(physics, 1, k, device) for k in ("canyon_corner_loss_db", "canyon_loss_db_per_m"))
        outdoor = heights <= config.rx_height_m
        # Street-scale light: scans on ~4 m blocks (2 x 2 cells of 2 m) cost a quarter of full resolution.
        coarse = max(1, round(_CANYON_BLOCK_M / config.cell_size_m))
        gain = canyon_light(
            gain, outdoor, corner, per_m * config.cell_size_m, shadowed=loss > _SHADOW_DB, coarse=coarse
        )
    gens = [torch.Generator(device=device) for _ in samples]
    for gen, sample in zip(gens, samples, strict=True):
        gen.manual_seed(sample.torch_seed)
    # Samples with a zero std skip their draws, so that a fixed config draws as before ranges existed.
    shadow_std = [p.shadowing_std_db for p in physics]
    if any(v > 0 for v in shadow_std):
        corr_cells = config.shadowing_decorrelation_m / config.cell_size_m
        noise = torch.zeros((S, *shadowing_noise_shape(T, n, n, corr_cells)), device=device)
        for s, gen in enumerate(gens):
            if shadow_std[s] > 0:
                noise[s].normal_(generator=gen)
        rows = noise.shape[1]
        std = frame_values(physics, rows, "shadowing_std_db", device).view(-1, 1, 1)
        fields = shadowing_from_noise(noise.flatten(0, 1), n, n, std, corr_cells)
        gain += fields.view(S, -1, n, n)[:, :T]
    noise_std = [p.noise_std_db for p in physics]
    if any(v > 0 for v in noise_std):
        noise = torch.zeros_like(gain)
        for s, gen in enumerate(gens):
            if noise_std[s] > 0:
                noise[s].normal_(generator=gen)
        gain += frame_values(physics, 1, "noise_std_db", device).view(S, 1, 1, 1) * noise
    fractions = [p.floor_fraction for p in physics]
    if any(q > 0 for q in fractions):
        gain = _quantile_floor(gain, fractions)
    # Deep inside 100 m blocks of real cities the multi-wall sum reaches -600 dB: no receiver hears that, and
    # stores must stay within the value range every reader accepts (data.integrity.DB_RANGE).
    floor_db = max(config.floor_db, NOTHING_RECEIVED_DB) if config.floor_db is not None else NOTHING_RECEIVED_DB
    gain = torch.where(gain < floor_db, float("nan"), gain)
    if config.measured_fraction < 1:
        if config.sparsity_mode == "path":
            mask = to_device(torch.from_numpy(np.stack([s.visited for s in samples])), device)
        else:
            # Exactly k cells per frame: the k smallest of iid uniforms.
            u = torch.empty((S, T, n * n), device=device)
            for s, gen in enumerate(gens):
                u[s].uniform_(generator=gen)
            mask = torch.zeros((S * T, n * n), dtype=torch.bool, device=device)
            mask.scatter_(1, u.view(S * T, -1).argsort(dim=1)[:, : _measured_cells(config)], True)
        gain = torch.where(mask.view(S, T, n, n), gain, float("nan"))
    return gain


def _quantile_floor(gain: torch.Tensor, fractions: list[float]) -> torch.Tensor:
    """gain [S, T, H, W] with the weakest fractions[s] of every frame of sample s set to NaN."""
    S, T = gain.shape[:2]
    flat = gain.reshape(S, T, -1)
    for s, q in enumerate(fractions):
        k = int(q * flat.shape[-1])
        if k > 0:
            level = flat[s].kthvalue(k, dim=1, keepdim=True).values
            flat[s].masked_fill_(flat[s] <= level, float("nan"))
    return flat.view_as(gain)


def _measured_cells(config: SimConfig) -> int:
    """Cells kept per frame."""
    return max(1, round(config.measured_fraction * config.size**2))


def sample_tx(config: SimConfig, heights: np.ndarray, free: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Transmitter positions float32 [T, 3] (row, col in cells, height m above the local ground).

    Layouts other than "random" (config.tx_layout: inside, ring, rooftop, street) come from
    ``tomoformer.sim.layouts``; the rest of this docstring is the "random" layout, always outdoors.

    "random": an outdoor cell (plus sub-cell jitter) and a height per frame, a fraction possibly outside
    the grid. "path": one street walk at a fixed height, tx_path_step_cells 4-neighbour steps per frame.
    """
    T, n = config.frames, config.size
    if config.tx_mode == "random" and config.tx_layout != "random":
        height_range = (config.tx_height_min_m, config.tx_height_max_m)
        return layout_positions(
            config.tx_layout, heights, config.rx_height_m, T, height_range, config.tx_outside_max_cells, rng
        )
    pos = np.empty((T, 3), np.float32)
    if config.tx_mode == "path":
        walk, _ = street_walks(free, 1, (T - 1) * config.tx_path_step_cells, rng)
        pos[:, :2] = walk[0, :: config.tx_path_step_cells]
        pos[:, 2] = rng.uniform(config.tx_height_min_m, config.tx_height_max_m)
        return pos
    outdoor = np.argwhere(heights <= config.rx_height_m)
    if len(outdoor) == 0:  # fully built tile: no outdoor cell to choose from
        outdoor = np.argwhere(np.ones_like(free))
    cells = outdoor[rng.integers(0, len(outdoor), size=T)]
    pos[:, :2] = cells + rng.uniform(-0.5, 0.5, size=(T, 2))
    pos[:, 2] = rng.uniform(config.tx_height_min_m, config.tx_height_max_m, size=T)
    outside = rng.random(T) < config.tx_outside_fraction
    if outside.any():
        pos[outside, :2] = _outside_positions(int(outside.sum()), n, config.tx_outside_max_cells, rng)
    return pos


def _outside_positions(m: int, n: int, margin: float, rng: np.random.Generator) -> np.ndarray:
    """m points uniform in the band of width ``margin`` cells around the grid [-0.5, n - 0.5]^2."""
    lo, hi = -0.5 - margin, n - 0.5 + margin
    out = np.empty((0, 2))
    while len(out) < m:
        cand = rng.uniform(lo, hi, size=(4 * m, 2))
        keep = ((cand < -0.5) | (cand > n - 0.5)).any(axis=1)
        out = np.concatenate([out, cand[keep]])
    return out[:m]

"""Dataset-level simulation: cities, transmitters, propagation, shadowing, noise, floor and sparsity.

Sample i of a dataset with seed s depends only on (s, i): every random draw comes from generators seeded
by ``numpy.random.SeedSequence([s, i])``, and each sample is computed on its own, so splitting a dataset
into batches (or resuming) gives identical arrays on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from tomoformer.sim.cities import STYLES, make_city, outdoor_component, street_walks
from tomoformer.sim.config import SimConfig
from tomoformer.sim.propagation import path_gain_db, shadowing_db


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
    config: SimConfig, seed: int, start: int, count: int, device: str | torch.device = "cpu"
) -> dict[str, np.ndarray]:
    """Simulate samples ``start .. start + count - 1`` of the dataset defined by (config, seed).

    Returns signals float32 [count, T, H, W] dB path gain (NaN = not measured or below floor_db),
    buildings uint8 [count, H, W] (taller than the receiver), heights float32 [count, H, W] metres,
    tx_pos float32 [count, T, 3] (row, col in cells, height in metres), group int16 [count] (style index).
    """
    if seed < 0 or start < 0 or count < 0:
        raise ValueError("seed, start and count must be >= 0")
    device = torch.device(device)
    n, T = config.size, config.frames
    out = {
        "signals": np.empty((count, T, n, n), np.float32),
        "buildings": np.empty((count, n, n), np.uint8),
        "heights": np.empty((count, n, n), np.float32),
        "tx_pos": np.empty((count, T, 3), np.float32),
        "group": np.empty((count,), np.int16),
    }
    # On CPU, samples run on parallel threads with single-threaded torch ops: a sample's ops are too small
    # to split well across cores. Each sample has its own generators, so the result does not depend on it.
    workers = min(count, torch.get_num_threads()) if device.type == "cpu" else 1
    with _torch_threads(1 if workers > 1 else None), ThreadPoolExecutor(max(workers, 1)) as pool:
        samples = pool.map(lambda index: _simulate_one(config, seed, index, device), range(start, start + count))
        for i, sample in enumerate(samples):
            for key, value in sample.items():
                out[key][i] = value
    return out


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


def _simulate_one(config: SimConfig, seed: int, index: int, device: torch.device) -> dict[str, np.ndarray]:
    seq = np.random.SeedSequence([seed, index])
    rng = np.random.default_rng(seq.spawn(1)[0])
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))

    styles = config.styles
    style = styles[int(rng.integers(len(styles)))]
    heights = make_city(style, config.size, rng, config.cell_size_m)
    free = outdoor_component(heights, config.rx_height_m)
    tx_pos = sample_tx(config, heights, free, rng)

    h = torch.from_numpy(heights).to(device)[None]
    gain = path_gain_db(h, torch.from_numpy(tx_pos).to(device)[None], config)[0]
    T, n = config.frames, config.size
    if config.shadowing_std_db > 0:
        corr_cells = config.shadowing_decorrelation_m / config.cell_size_m
        gain += shadowing_db(T, n, n, config.shadowing_std_db, corr_cells, gen, device)
    if config.noise_std_db > 0:
        gain += config.noise_std_db * torch.randn(gain.shape, generator=gen, device=device)
    if config.floor_db is not None:
        gain = torch.where(gain < config.floor_db, float("nan"), gain)
    if config.measured_fraction < 1:
        gain = torch.where(_measured_mask(config, free, rng, gen, device), gain, float("nan"))
    return {
        "signals": gain.cpu().numpy(),
        "buildings": (heights > config.rx_height_m).astype(np.uint8),
        "heights": heights,
        "tx_pos": tx_pos,
        "group": np.int16(STYLES.index(style)),
    }


def sample_tx(config: SimConfig, heights: np.ndarray, free: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Transmitter positions float32 [T, 3] (row, col in cells, height m), always outdoors.

    "random": an outdoor cell (plus sub-cell jitter) and a height per frame, a fraction possibly outside
    the grid. "path": one street walk at a fixed height, tx_path_step_cells 4-neighbour steps per frame.
    """
    T, n = config.frames, config.size
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


def _measured_mask(
    config: SimConfig, free: np.ndarray, rng: np.random.Generator, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """bool [T, H, W]: cells measured in each frame."""
    T, n = config.frames, config.size
    k = max(1, round(config.measured_fraction * n * n))
    if config.sparsity_mode == "path":
        # One drive test per frame through the street network, until k distinct cells are visited.
        _, visited = street_walks(free, T, None, rng, target_cells=k)
        return torch.from_numpy(visited).to(device)
    # Exactly k cells per frame: the k smallest of iid uniforms.
    u = torch.rand((T, n * n), generator=gen, device=device)
    mask = torch.zeros((T, n * n), dtype=torch.bool, device=device)
    return mask.scatter_(1, u.argsort(dim=1)[:, :k], True).reshape(T, n, n)

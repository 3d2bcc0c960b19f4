"""Throughput of the fast simulator (maps/s) on CPU and CUDA, and of Sionna RT when it is installed.

python benchmarks/bench_simulate.py --frames 64 --size 100 --n-samples 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tomoformer.sim import SimConfig, simulate_samples
from tomoformer.sim.cities import make_city


def bench_fast(config: SimConfig, n_samples: int, device: str) -> float:
    """maps/s of simulate_samples on ``device`` (after one warm-up sample)."""
    simulate_samples(config, seed=0, start=0, count=1, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    simulate_samples(config, seed=0, start=1, count=n_samples, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n_samples * config.frames / (time.perf_counter() - t0)


def bench_sionna(config: SimConfig, n_maps: int) -> float | None:
    """maps/s of Sionna RT coverage maps for the same kind of tile, or None when sionna.rt is missing."""
    try:
        import sionna.rt  # noqa: F401
    except ImportError:
        return None
    from tomoformer.sim import sionna as sionna_scene  # the ray-tracing bridge (optional module)

    heights = make_city("dense", config.size, np.random.default_rng(0), config.cell_size_m)
    tx = np.array([[config.size / 2, config.size / 2, 20.0]] * n_maps, np.float32)
    t0 = time.perf_counter()
    sionna_scene.radio_maps(heights, tx, config)
    return n_maps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--style", default="mixed")
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if present)")
    args = parser.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    config = SimConfig(size=args.size, frames=args.frames, style=args.style)
    print(
        f"fast simulator, {args.size}x{args.size}, T={args.frames}, {args.n_samples} samples, "
        f"torch threads={torch.get_num_threads()}"
    )
    baseline = None
    for device in devices:
        rate = bench_fast(config, args.n_samples, device)
        baseline = baseline or rate
        print(f"  {device:5s}: {rate:9.1f} maps/s  ({rate / baseline:.2f}x {devices[0]})")
    try:
        sionna_rate = bench_sionna(config, n_maps=4)
    except Exception as exc:  # the optional bridge may be absent or fail on this machine
        print(f"  sionna.rt: skipped ({type(exc).__name__}: {exc})")
        return
    if sionna_rate is None:
        print("  sionna.rt: skipped (not installed)")
    else:
        ratio = baseline / sionna_rate
        print(f"  sionna.rt: {sionna_rate:9.3f} maps/s  (fast {devices[0]} is {ratio:.0f}x faster)")


if __name__ == "__main__":
    main()

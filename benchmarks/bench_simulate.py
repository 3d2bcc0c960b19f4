"""Throughput of the fast simulator (maps/s) on CPU and CUDA, and of Sionna RT when it is installed.

python benchmarks/bench_simulate.py --frames 64 1000 --size 100 --n-samples 8 --device-samples 64 --repeats 5

For each T: the per-sample CPU path (the baseline every ratio refers to), the batched path on CPU, and
the batched and per-sample paths on CUDA when it is present (skipped with a note otherwise). Each row is
timed ``--repeats`` times (after one warm-up) and prints the median and the best (max maps/s = min time):
on a shared machine the best run is the closest to the uncontended figure. ``--set key=value`` overrides
SimConfig fields (e.g. ``--set canyon_probability=0`` to time the model without canyon light).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from tomoformer.sim import SimConfig, simulate_samples
from tomoformer.sim.cities import make_city


def bench_fast(
    config: SimConfig, n_samples: int, device: str, batched: bool, repeats: int = 1
) -> tuple[list[float], list[float]]:
    """maps/s of simulate_samples on ``device``, one figure per repeat (each on other samples), after a warm-up
    run of the same size on GPUs, of one sample on CPU; and maps per CPU-second of this process (all threads),
    which other jobs on a shared machine disturb much less than the wall clock.

    The GPU warm-up builds the cached geometry tables and the pinned output buffer.
    """
    cuda = device.startswith("cuda")
    simulate_samples(config, seed=0, start=0, count=n_samples if cuda else 1, device=device, batched=batched)
    if cuda:
        torch.cuda.synchronize()
    rates, cpu_rates = [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        simulate_samples(config, seed=0, start=(r + 1) * n_samples, count=n_samples, device=device, batched=batched)
        if cuda:
            torch.cuda.synchronize()
        maps = n_samples * config.frames
        rates.append(maps / (time.perf_counter() - t0))
        cpu_rates.append(maps / max(time.process_time() - c0, 1e-9))
    return rates, cpu_rates


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
    parser.add_argument("--frames", type=int, nargs="+", default=[64], help="one run per T (e.g. 64 1000)")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--n-samples", type=int, default=8, help="samples per CPU run")
    parser.add_argument("--device-samples", type=int, default=64, help="samples per CUDA run")
    parser.add_argument("--style", default="mixed")
    parser.add_argument("--no-sionna", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median and best printed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--device", action="append", help="cpu and/or cuda (default: both); the CPU per-sample baseline always runs"
    )
    args = parser.parse_args()
    devices = args.device or ["cpu", "cuda"]
    cuda = "cuda" in devices and torch.cuda.is_available()
    baseline = None
    for frames in args.frames:
        from tomoformer.safe_yaml import load_yaml

        overrides = {k: load_yaml(v, f"--set {k}") for k, v in (item.split("=", 1) for item in args.overrides)}
        config = SimConfig.from_dict({"size": args.size, "frames": frames, "style": args.style, **overrides})
        print(
            f"fast simulator, {args.size}x{args.size}, T={frames}, {args.n_samples} samples on CPU "
            f"({args.device_samples} on CUDA), torch threads={torch.get_num_threads()}"
        )
        rows = [("cpu", False, args.n_samples)] + ([("cpu", True, args.n_samples)] if "cpu" in devices else [])
        if cuda:
            rows += [("cuda", True, args.device_samples), ("cuda", False, max(1, args.device_samples // 8))]
        cpu_rate = None
        for device, batched, n_samples in rows:
            rates, cpu_rates = bench_fast(config, n_samples, device, batched, args.repeats)
            rate, best = statistics.median(rates), max(rates)
            cpu_rate = cpu_rate or rate
            baseline = baseline or rate
            path = "batched" if batched else "per-sample"
            print(
                f"  {device:4s} {path:10s}: median {rate:8.1f} maps/s, best {best:8.1f} maps/s over {len(rates)} runs"
                f"  ({rate / cpu_rate:6.2f}x cpu per-sample); {statistics.median(cpu_rates):7.1f} maps per CPU-second"
            )
        if "cuda" in devices and not cuda:
            print("  cuda: skipped (torch.cuda.is_available() is False)")
    if args.no_sionna:
        return
    try:
        sionna_rate = bench_sionna(SimConfig(size=args.size, frames=args.frames[0], style=args.style), n_maps=4)
    except Exception as exc:  # the optional bridge may be absent or fail on this machine
        print(f"  sionna.rt: skipped ({type(exc).__name__}: {exc})")
        return
    if sionna_rate is None:
        print("  sionna.rt: skipped (not installed)")
    else:
        ratio = baseline / sionna_rate
        print(f"  sionna.rt: {sionna_rate:9.3f} maps/s  (fast cpu per-sample is {ratio:.0f}x faster)")


if __name__ == "__main__":
    main()

"""Measured scaling of corpus building: maps/s of the simulators with 1 and 2 workers, by shards and by Ray.

    OMP_NUM_THREADS=1 python benchmarks/scale.py            # 2-3 minutes on 2 cores

Every configuration simulates the same corpus (``--n`` samples of T = 32 frames on 100 x 100 cells at 2 m, the
ray-traced corpus's shape; one map = one frame of one sample), each worker on one core:

* ``1 worker``: one process, ``simulate_dataset`` in-process (the baseline every ratio is against);
* ``shards``: ``tomoformer simulate --shard I/W`` in W processes at once, then ``data merge`` (wall time of all of
  it, process start-up included);
* ``ray``: ``simulate --ray --shards W`` on a local Ray cluster of 2 CPUs (started, and its workers warmed up,
  before the clock starts; the cluster's start-up is reported on its own row), merge included.

Every store is checked to equal the baseline's, array for array. Sionna RT is measured the same way when sionna-rt
and an LLVM >= 19 are installed (``--sionna-n`` samples); otherwise its row says so. Writes
``benchmarks/results/scale/results.csv`` and ``results.md``, with the projected cost of a 100,000-map corpus on N
machines from the measured per-map cost (and, for Sionna RT when it is not installed here, from the per-map cost
recorded when the real-city corpus was built: benchmarks/results/realcity/corpus.csv).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomoformer.data.format import open_dataset
from tomoformer.data.merge import merge_shards
from tomoformer.data.simulated import simulate_dataset
from tomoformer.sim.config import SimConfig

RESULTS = Path(__file__).resolve().parent / "results" / "scale"
CORPUS_LOG = Path(__file__).resolve().parent / "results" / "realcity" / "corpus.csv"
SIZE, FRAMES, SEED = 100, 32, 0
CORPUS_MAPS = 100_000


@dataclass
class Row:
    engine: str
    method: str
    workers: int
    maps: int
    seconds: float
    baseline_seconds: float
    identical: str
    note: str = ""
    simulate_seconds: float | None = None  # the slowest worker's simulation alone (no start-up, no merge)

    @property
    def maps_per_s(self) -> float:
        return self.maps / self.seconds if self.seconds > 0 else float("nan")

    @property
    def speedup(self) -> float:
        return self.baseline_seconds / self.seconds if self.seconds > 0 else float("nan")

    @property
    def simulate_speedup(self) -> float | None:
        """Speed-up of the simulation alone: the baseline over the slowest worker's simulation time."""
        return self.baseline_seconds / self.simulate_seconds if self.simulate_seconds else None


def timed(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def same_store(a: Path, b: Path) -> bool:
    with open_dataset(a) as x, open_dataset(b) as y:
        return sorted(x.arrays) == sorted(y.arrays) and all(
            np.array_equal(x.read(k, slice(None)), y.read(k, slice(None)), equal_nan=True) for k in x.arrays
        )


def cli_args(engine: str, n: int) -> list[str]:
    args = ["--size", str(SIZE), "--frames", str(FRAMES), "--seed", str(SEED), "--n", str(n), "--no-progress"]
    return args + (["--engine", "sionna", "--samples-per-tx", "100000"] if engine == "sionna" else [])


# One shard process: the CLI, timed after the imports (torch, tomoformer) so that the time is the simulation's.
_TIMED_CLI = (
    "import sys, time, torch, tomoformer.cli, tomoformer.data.simulated; tomoformer.cli.build_parser(); "
    "began = time.perf_counter(); "
    "code = tomoformer.cli.main(sys.argv[1:]); print(f'SIMULATE_SECONDS {time.perf_counter() - began}'); "
    "sys.exit(code)"
)


def by_shards(engine: str, n: int, workers: int, folder: Path) -> tuple[float, float, Path]:
    """W processes of ``simulate --shard I/W`` at once, then the merge: wall seconds of it all, seconds of the
    slowest process's simulation alone, and the merged store."""
    parts = [folder / f"{engine}-shard{workers}-{i}.zarr" for i in range(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = folder / f"{engine}-shards{workers}.zarr"

    simulate_seconds: list[float] = []

    def run() -> None:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _TIMED_CLI, "simulate", *cli_args(engine, n), "--shard", f"{i}/{workers}",
                 "--out", str(part)],
                env=env, stdout=subprocess.PIPE, text=True,
            )
            for i, part in enumerate(parts)
        ]  # fmt: skip
        for proc in procs:
            stdout, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit("a shard process failed")
            simulate_seconds.append(float(stdout.split("SIMULATE_SECONDS")[-1]))
        merge_shards([str(p) for p in parts], out)

    return timed(run), max(simulate_seconds), out


def measure(engine: str, n: int, folder: Path, ray_start: float | None) -> list[Row]:
    """The rows of one engine: the in-process baseline, shards of 2 processes, Ray with 1 and 2 workers."""
    from tomoformer.data.ray_runner import simulate_with_ray

    options = None
    if engine == "sionna":
        from tomoformer.sim.sionna import RayOptions

        options = RayOptions(samples_per_tx=100_000)
    config = SimConfig(size=SIZE, frames=FRAMES)
    args = {"config": config, "seed": SEED, "device": "cpu", "chunk": 32 if engine == "fast" else 1}
    args |= {"ray_options": options, "scene": None}
    maps = n * FRAMES
    base = folder / f"{engine}-one.zarr"
    seconds = timed(lambda: simulate_dataset(base, n, progress=False, **args))
    rows = [Row(engine, "one process", 1, maps, seconds, seconds, "baseline")]
    shard_s, simulate_s, merged = by_shards(engine, n, 2, folder)
    rows.append(Row(engine, "shards (processes)", 2, maps, shard_s, seconds, str(same_store(base, merged)),
                    "process start-up and merge included", simulate_s))  # fmt: skip
    if ray_start is not None:
        for workers in (1, 2):
            out = folder / f"{engine}-ray{workers}.zarr"
            ray_s = timed(lambda: simulate_with_ray(out, n, args, shards=workers, progress=False))  # noqa: B023
            rows.append(Row(engine, "ray", workers, maps, ray_s, seconds, str(same_store(base, out)),
                            "merge included; cluster already up"))  # fmt: skip
    return rows


def start_ray(folder: Path) -> float | None:
    """Start a local 2-CPU cluster and warm its two workers up (imports) with a tiny run; seconds, or None."""
    try:
        import ray
    except ImportError:
        return None
    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    from tomoformer.data.ray_runner import simulate_with_ray

    tiny = {"config": SimConfig(size=16, frames=2), "seed": 0, "device": "cpu", "chunk": 1}
    simulate_with_ray(folder / "warmup.zarr", 2, tiny | {"ray_options": None, "scene": None}, shards=2, progress=False)
    return time.perf_counter() - began


def sionna_ready() -> str | None:
    """None when Sionna RT can run here, else why not."""
    from tomoformer.errors import ConfigError
    from tomoformer.sim.sionna import import_sionna

    try:
        import_sionna("cpu")
    except ConfigError as err:
        return str(err)
    return None


def recorded_sionna_cost() -> tuple[float, str] | None:
    """Seconds per ray-traced map (one core) over the whole recorded real-city corpus build, and its source."""
    if not CORPUS_LOG.exists():
        return None
    with CORPUS_LOG.open() as handle:
        rows = list(csv.DictReader(handle))
    maps, seconds = sum(int(r["maps"]) for r in rows), sum(float(r["seconds"]) for r in rows)
    return seconds / maps, f"recorded build of the real-city corpus ({maps} maps, {CORPUS_LOG.name})"


def projection(seconds_per_map: float, efficiency: float, cores: int) -> list[tuple[int, float]]:
    """Hours for 100,000 maps on N machines of ``cores`` workers each, at ``efficiency`` per worker."""
    return [(m, CORPUS_MAPS * seconds_per_map / (m * cores * efficiency) / 3600) for m in (1, 4, 16, 64)]


def write(rows: list[Row], ray_start: float | None, cores: int, sionna_note: str | None) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "results.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["engine", "method", "workers", "maps", "seconds", "maps_per_s", "speedup_vs_1_worker",
                      "simulation_only_speedup", "identical_to_1_worker", "note"])  # fmt: skip
        for r in rows:
            alone = f"{r.simulate_speedup:.2f}" if r.simulate_speedup else ""
            out.writerow([r.engine, r.method, r.workers, r.maps, f"{r.seconds:.2f}", f"{r.maps_per_s:.1f}",
                          f"{r.speedup:.2f}", alone, r.identical, r.note])  # fmt: skip
        if ray_start is not None:
            out.writerow(["-", "ray cluster start + worker warm-up", 2, 0, f"{ray_start:.2f}", "", "", "", "", ""])
        if sionna_note:
            out.writerow(["sionna", "not installed", 0, 0, "", "", "", "", "", sionna_note])
    lines = [
        "# Scaling of corpus building (benchmarks/scale.py)",
        "",
        f"Machine: {os.cpu_count()} CPU cores, **shared with other jobs while this ran** (the figures are noisy and "
        "a 2-worker speed-up is bounded by the cores actually free). Each worker on one core (OMP_NUM_THREADS=1); "
        f"{SIZE} x {SIZE} cells, T = {FRAMES}; a map is one frame of one sample.",
        "",
        "| engine | method | workers | maps | seconds | maps/s | speed-up | speed-up, simulation only | same store "
        "| note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        alone = f"{r.simulate_speedup:.2f}" if r.simulate_speedup else "-"
        lines.append(f"| {r.engine} | {r.method} | {r.workers} | {r.maps} | {r.seconds:.1f} | {r.maps_per_s:.0f} | "
                     f"{r.speedup:.2f} | {alone} | {r.identical} | {r.note} |")  # fmt: skip
    if ray_start is not None:
        lines.append(f"| - | ray cluster start + warm-up | 2 | - | {ray_start:.1f} | - | - | - | - | paid once |")
    if sionna_note:
        lines.append(f"| sionna | not installed | - | - | - | - | - | - | - | {sionna_note} |")
    lines += ["", "Speed-up: the 1-worker baseline's seconds over the row's, measured in the same run. Simulation "
              "only: over the slowest shard process's simulation, without process start-up and merge."]  # fmt: skip
    lines += ["", f"## Projected cost of a {CORPUS_MAPS:,}-map corpus", ""]
    lines.append(
        f"Wall time on N machines of {cores} single-core workers each, from the one-worker cost per map: with perfect "
        "scaling (efficiency 1), and with the parallel efficiency measured here with 2 shard processes "
        "(simulation-only speed-up / 2). On this shared machine the second worker gets only what the other jobs "
        "leave of the second core, so the measured efficiency is a pessimistic bound; shards share nothing while "
        "they run, so machines of their own should come close to 1. Merge and start-up are excluded."
    )
    lines += ["", "| engine | seconds per map (1 core) | source | efficiency | " +
              " | ".join(f"{m} machine{'s' if m > 1 else ''}" for m in (1, 4, 16, 64)) + " |",
              "|---|---:|---|---:|" + "---:|" * 4]  # fmt: skip
    for engine in ("fast", "sionna"):
        base = [r for r in rows if r.engine == engine and r.workers == 1 and r.method == "one process"]
        two = [r.simulate_speedup for r in rows if r.engine == engine and r.simulate_speedup]
        measured = min(1.0, max(two) / 2) if two else _best_efficiency(rows)
        if base:
            cost, source = base[0].seconds / base[0].maps, "measured here"
        elif engine == "sionna" and (recorded := recorded_sionna_cost()):
            cost, source = recorded
        else:
            continue
        for efficiency in (1.0, measured):
            if efficiency is None:
                continue
            hours = " | ".join(_duration(h) for _, h in projection(cost, efficiency, cores))
            lines.append(f"| {engine} | {cost:.4f} | {source} | {efficiency:.2f} | {hours} |")
    lines += ["", "Reproduce: `OMP_NUM_THREADS=1 python benchmarks/scale.py`", ""]
    (RESULTS / "results.md").write_text("\n".join(lines))


def _duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"


def _best_efficiency(rows: list[Row]) -> float | None:
    """The fast simulator's measured 2-worker efficiency, used for an engine not measured here."""
    two = [r.simulate_speedup for r in rows if r.engine == "fast" and r.simulate_speedup]
    return min(1.0, max(two) / 2) if two else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=192, help="samples of the fast simulator's corpus")
    parser.add_argument("--sionna-n", type=int, default=4, help="samples of the Sionna RT corpus (when installed)")
    parser.add_argument("--cores-per-machine", type=int, default=32, help="workers per machine in the projection")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="tomoformer-scale-") as tmp:
        folder = Path(tmp)
        ray_start = start_ray(folder)
        rows = measure("fast", args.n, folder, ray_start)
        why_not = sionna_ready()
        if why_not is None:
            rows += measure("sionna", args.sionna_n, folder, ray_start)
        if ray_start is not None:
            import ray

            ray.shutdown()
    note = None if why_not is None else "not installed here: " + why_not.split(": ")[-1]
    write(rows, ray_start, args.cores_per_machine, note)
    print((RESULTS / "results.md").read_text())


if __name__ == "__main__":
    main()

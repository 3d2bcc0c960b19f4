"""Canyon light on or off at fixed losses: distribution statistics and per-cell RMSE against ray-traced maps.

python benchmarks/canyon_ablation.py --data data/calib/rt_city.zarr --walls 11 18 25 --roof 9 --indoor 0.19

For each wall loss: the full fast simulator on the data set's own geometry without canyon light and with each
``--canyon CORNER_DB,PER_M`` strength (``tomoformer.sim.calibrate_stats.compare_distributions``, ``--draws`` draws).
The table in docs/sionna.md ("Why canyon light") comes from this script.
"""

from __future__ import annotations

import argparse

import numpy as np

from tomoformer.data.format import open_dataset
from tomoformer.sim.calibrate_stats import compare_distributions
from tomoformer.sim.config import SimConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ray-traced data set with heights and tx_pos")
    parser.add_argument("--walls", type=float, nargs="+", default=[11.0, 18.0, 25.0], help="wall losses, dB")
    parser.add_argument("--roof", type=float, default=9.0, help="roof loss, dB")
    parser.add_argument("--indoor", type=float, default=0.19, help="indoor loss, dB/m")
    parser.add_argument("--shadowing", type=float, default=6.0, help="shadowing std, dB")
    parser.add_argument("--canyon", nargs="+", default=["5,0.4", "0,0.4", "0,0.2"], help="CORNER_DB,PER_M pairs")
    parser.add_argument("--draws", type=int, default=2)
    args = parser.parse_args()
    with open_dataset(args.data) as ds:
        heights = ds.read("heights", slice(0, len(ds))).astype(np.float32)
        tx_pos = ds.read("tx_pos", slice(0, len(ds))).astype(np.float32)
        signals = ds.read("signals", slice(0, len(ds))).astype(np.float32)
        _, frames, size, _ = ds.shape
    strengths: list[tuple[float, float] | None] = [None]
    strengths += [tuple(float(v) for v in item.split(",")) for item in args.canyon]  # type: ignore[misc]
    print("| walls | canyon light | indoor - outdoor | shadowed - lit | per-cell RMSE |")
    print("|---|---|---|---|---|")
    for wall in args.walls:
        for strength in strengths:
            canyon = {"canyon_probability": 0.0}
            if strength is not None:
                canyon = {"canyon_probability": 1.0, "canyon_corner_loss_db": strength[0]}
                canyon["canyon_loss_db_per_m"] = strength[1]
            config = SimConfig(
                size=size,
                frames=frames,
                wall_loss_db=wall,
                roof_loss_db=args.roof,
                indoor_loss_db_per_m=args.indoor,
                shadowing_std_db=args.shadowing,
                noise_std_db=1.0,
                **canyon,
            )
            d = compare_distributions(heights, tx_pos, signals, config, draws=args.draws)
            fast, rt = d["fast"], d["ray_tracer"]
            label = "off" if strength is None else f"{strength[0]:g} dB corner, {strength[1]:g} dB/m"
            cells = [
                f"{fast[k]['median']:.2f} (ray tracer {rt[k]:.2f})"
                for k in ("indoor_minus_outdoor_db", "shadowed_minus_lit_outdoor_db")
            ]
            print(f"| {wall:g} dB | {label} | {cells[0]} | {cells[1]} | {d['rmse_db']['median']:.2f} |")


if __name__ == "__main__":
    main()

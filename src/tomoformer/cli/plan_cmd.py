"""``tomoformer plan``: where to put the next transmitters to learn the most about the building map."""

from __future__ import annotations

import argparse

from tomoformer.cli.common import add_model_source, add_overwrite_flag, device_name, positive_int
from tomoformer.outputs import check_not_input, claim_output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "plan", help="choose the next K transmitter positions among candidates (most information about the map)"
    )
    add_model_source(p)
    p.add_argument("--data", required=True, help="the maps measured so far (N samples, with tx_pos)")
    p.add_argument("--candidates", required=True, help="C.npy: [N, K0, 3] or [K0, 3] row, column (cells), height (m)")
    p.add_argument("--k", type=positive_int, required=True, help="how many transmitters to choose per sample")
    p.add_argument("--out", required=True, help="plan.csv: sample, rank, candidate, row, col, height, score")
    p.add_argument("--png", metavar="DIR", help="also draw each sample's uncertainty with the chosen positions")
    p.add_argument("--views", type=positive_int, default=1, help="test-time views averaged first (1: one pass)")
    p.add_argument("--seed", type=int, default=0, help="seed of the plausible building maps")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", type=device_name, default="auto")
    add_overwrite_flag(p)
    p.set_defaults(handler=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from tomoformer.checkpoint import load_checkpoint
    from tomoformer.data.datamodule import SignalMapDataset
    from tomoformer.data.format import open_dataset
    from tomoformer.tasks.planning import PlanOptions, load_candidates, plan_dataset, write_plan_csv, write_plan_pngs

    if args.pretrained:
        from tomoformer.pretrained import weights_for_data

        args.checkpoint = weights_for_data(args.pretrained, args.data)
    inputs = (args.data, args.checkpoint, args.candidates)
    check_not_input(args.out, [*inputs, args.png])
    with open_dataset(args.data) as source:
        candidates = load_candidates(args.candidates, len(source), args.k)  # before any output is claimed
        loaded = load_checkpoint(args.checkpoint)
        with (
            claim_output(args.out, overwrite=args.overwrite, command="plan", inputs=inputs),
            claim_output(
                args.png, overwrite=args.overwrite, command="plan", inputs=inputs, option="--png", folder=True
            ),
        ):
            dataset = SignalMapDataset(source)
            result = plan_dataset(
                loaded.calibrated(),
                dataset,
                candidates,
                args.k,
                PlanOptions(seed=args.seed),
                batch_size=args.batch_size,
                device=args.device,
                views=args.views,
            )
            write_plan_csv(args.out, result)
            if args.png:
                write_plan_pngs(args.png, result, dataset.indices)
    print(f"wrote {args.out} ({args.k} transmitters for each of {len(result.plans)} samples)")
    return 0

"""``tomoformer evaluate``, ``tomoformer predict`` and ``tomoformer calibrate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from tomoformer.cli.common import (
    add_model_source,
    add_overwrite_flag,
    device_name,
    non_negative_int,
    positive_int,
    probability,
)
from tomoformer.outputs import check_not_input, claim_output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="metrics.json and report.html of one or more models on labelled data")
    p.add_argument("--checkpoint", action="append", default=[], help="a trained checkpoint (repeatable)")
    p.add_argument(
        "--pretrained", action="append", default=[], help="a shipped model (`tomoformer models --pretrained`)"
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="a model that needs no gradient training, e.g. threshold or rti (repeatable)",
    )
    p.add_argument("--fit-data", help="labelled data to fit --model models on (else their defaults are used)")
    p.add_argument("--data", required=True, help="labelled test dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--figures", type=non_negative_int, default=4, help="samples shown in the report")
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also score the per-cell uncertainty: AUROC for the wrong cells and the risk-coverage curve",
    )
    add_overwrite_flag(p)
    p.set_defaults(handler=run_evaluate)

    q = commands.add_parser("predict", help="building probabilities and maps for every sample of a dataset")
    add_model_source(q, onnx=True)
    q.add_argument("--data", required=True, help="dataset; it needs no 'buildings' array")
    q.add_argument("--out", required=True, help="OUT.npz, OUT.h5 or OUT.zarr")
    q.add_argument("--threshold", type=probability, default=0.5)
    q.add_argument("--png", metavar="DIR", help="also write one picture per sample here")
    q.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write 'uncertainty' [N, H, W]: entropy in bits (0 sure .. 1 unsure) over 8 test-time views",
    )
    q.add_argument("--batch-size", type=positive_int, default=8)
    q.add_argument("--device", type=device_name, default="auto")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_predict)

    c = commands.add_parser(
        "calibrate", help="fit a checkpoint's temperature on labelled validation data and write the calibrated copy"
    )
    add_model_source(c)
    c.add_argument("--data", required=True, help="labelled validation data (never the test data)")
    c.add_argument("--out", required=True, help="the calibrated checkpoint: OUT.ckpt or OUT.safetensors")
    c.add_argument("--batch-size", type=positive_int, default=8)
    c.add_argument("--device", type=device_name, default="auto")
    add_overwrite_flag(c)
    c.set_defaults(handler=run_calibrate)


def run_evaluate(args: argparse.Namespace) -> int:
    from tomoformer.pretrained import weights_for_data
    from tomoformer.tasks.evaluate import evaluate_checkpoints, print_table

    args.checkpoint += [weights_for_data(name, args.data) for name in args.pretrained]
    inputs = (args.data, args.fit_data, *args.checkpoint)
    with claim_output(args.out, overwrite=args.overwrite, command="evaluate", inputs=inputs, folder=True):
        results = evaluate_checkpoints(
            args.checkpoint,
            args.model,
            args.data,
            args.out,
            fit_data=args.fit_data,
            batch_size=args.batch_size,
            device=args.device,
            n_figures=args.figures,
            uncertainty=args.uncertainty,
        )
    print_table(results)
    print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.html'}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tomoformer.data.format import dataset_format

    dataset_format(args.out)  # fail on a bad suffix before the work, not after
    if args.pretrained:
        from tomoformer.pretrained import weights_for_data

        args.checkpoint = weights_for_data(args.pretrained, args.data)
    inputs = (args.data, args.checkpoint, args.onnx)
    check_not_input(args.out, [*inputs, args.png])
    with (
        claim_output(args.out, overwrite=args.overwrite, command="predict", inputs=inputs),
        claim_output(args.png, overwrite=args.overwrite, command="predict", inputs=inputs, option="--png", folder=True),
    ):
        return _predict(args)


def _predict(args: argparse.Namespace) -> int:
    from tomoformer.tasks.inference import predict_dataset

    n = predict_dataset(
        args.data,
        args.out,
        checkpoint=args.checkpoint,
        onnx=args.onnx,
        threshold=args.threshold,
        png=args.png,
        batch_size=args.batch_size,
        device=args.device,
        uncertainty=args.uncertainty,
    )
    print(f"wrote {args.out} ({n} maps)")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from tomoformer.tasks.calibrate import calibrate_checkpoint

    if args.pretrained:
        from tomoformer.pretrained import weights_for_data

        args.checkpoint = weights_for_data(args.pretrained, args.data)
    inputs = (args.data, args.checkpoint)
    check_not_input(args.out, list(inputs))
    with claim_output(args.out, overwrite=args.overwrite, command="calibrate", inputs=inputs):
        record = calibrate_checkpoint(args.checkpoint, args.data, args.out, args.batch_size, args.device)
    print(
        f"temperature {record['temperature']:.3f}: NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f}, "
        f"ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f} on {args.data}; wrote {args.out}"
    )
    return 0

"""``tomoformer evaluate`` and ``tomoformer predict``."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from torch import nn

from tomoformer.cli.common import add_overwrite_flag, device_name, non_negative_int, positive_int, probability
from tomoformer.errors import ConfigError
from tomoformer.outputs import check_not_input, claim_output


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="metrics.json and report.html of one or more models on labelled data")
    p.add_argument("--checkpoint", action="append", default=[], help="a trained checkpoint (repeatable)")
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
    add_overwrite_flag(p)
    p.set_defaults(handler=run_evaluate)

    q = commands.add_parser("predict", help="building probabilities and maps for every sample of a dataset")
    model = q.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a trained checkpoint")
    model.add_argument("--onnx", help="a file from `tomoformer export --format onnx` (runs with onnxruntime)")
    q.add_argument("--data", required=True, help="dataset; it needs no 'buildings' array")
    q.add_argument("--out", required=True, help="OUT.npz, OUT.h5 or OUT.zarr")
    q.add_argument("--threshold", type=probability, default=0.5)
    q.add_argument("--png", metavar="DIR", help="also write one picture per sample here")
    q.add_argument("--batch-size", type=positive_int, default=8)
    q.add_argument("--device", type=device_name, default="auto")
    add_overwrite_flag(q)
    q.set_defaults(handler=run_predict)


def load_models(checkpoints: list[str], names: list[str], fit_data: str | None) -> dict[str, nn.Module]:
    """Models by display name: checkpoints (named after their model, plus their run folder and file when several
    share a model) and fitted models."""
    from tomoformer.checkpoint import load_checkpoint
    from tomoformer.models.registry import create_model

    loaded = [load_checkpoint(path) for path in checkpoints]
    counts = Counter(item.name for item in loaded)
    models: dict[str, nn.Module] = {}
    for path, item in zip(checkpoints, loaded, strict=True):
        key = item.name if counts[item.name] == 1 else f"{item.name} ({_run_label(path)})"
        while key in models:
            key += "'"
        models[key] = item.model
    for name in names:
        model = create_model(name)
        if getattr(model, "requires_fit", False):
            if fit_data:
                model.fit(_fit_batches(fit_data))
            else:
                print(f"note: {name} uses its default parameters (give --fit-data to fit it)")
        models[name] = model.eval()
    if not models:
        raise ConfigError("give at least one --checkpoint or --model")
    return models


def _run_label(path: str) -> str:
    """``run/best`` for ``run/checkpoints/best.ckpt``: what tells checkpoints of one model apart."""
    file = Path(path)
    run = file.parent.parent if file.parent.name == "checkpoints" else file.parent
    return f"{run.name}/{file.stem}"


def _fit_batches(path: str, batch_size: int = 8, limit: int = 64) -> list[dict]:
    from torch.utils.data import DataLoader

    from tomoformer.data.datamodule import SignalMapDataset, collate
    from tomoformer.data.format import open_dataset

    source = open_dataset(path, require_buildings=True)
    loader = DataLoader(SignalMapDataset(source), batch_size=batch_size, collate_fn=collate)
    return [batch for _, batch in zip(range(limit), loader, strict=False)]


def run_evaluate(args: argparse.Namespace) -> int:
    from tomoformer.tasks.evaluate import evaluate_models, print_table

    inputs = (args.data, args.fit_data, *args.checkpoint)
    with claim_output(args.out, overwrite=args.overwrite, command="evaluate", inputs=inputs, folder=True):
        models = load_models(args.checkpoint, args.model, args.fit_data)
        results = evaluate_models(
            models, args.data, args.out, batch_size=args.batch_size, device=args.device, n_figures=args.figures
        )
    print_table(results)
    print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.html'}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tomoformer.data.format import dataset_format

    dataset_format(args.out)  # fail on a bad suffix before the work, not after
    inputs = (args.data, args.checkpoint, args.onnx)
    check_not_input(args.out, [*inputs, args.png])
    with (
        claim_output(args.out, overwrite=args.overwrite, command="predict", inputs=inputs),
        claim_output(args.png, overwrite=args.overwrite, command="predict", inputs=inputs, option="--png", folder=True),
    ):
        return _predict(args)


def _predict(args: argparse.Namespace) -> int:
    from tomoformer.checkpoint import load_checkpoint
    from tomoformer.data.datamodule import SignalMapDataset
    from tomoformer.data.format import open_dataset, write_dataset
    from tomoformer.tasks.inference import check_finite_probabilities, predict_probabilities

    if args.onnx:
        from tomoformer.export import OnnxPredictor

        predictor = OnnxPredictor(args.onnx)
        name = predictor.model_name
    else:
        loaded = load_checkpoint(args.checkpoint)
        name = loaded.name
    with open_dataset(args.data) as source:
        dataset = SignalMapDataset(source)
        if args.onnx:
            probabilities = predictor.predict_probabilities(dataset, batch_size=args.batch_size)
            check_finite_probabilities(probabilities, dataset)
        else:
            probabilities = predict_probabilities(
                loaded.model, dataset, batch_size=args.batch_size, device=args.device, progress=True
            )
        attrs = {
            "source": f"tomoformer predict {name}",
            "checkpoint": str(args.checkpoint or args.onnx),
            "threshold": args.threshold,
            "input": str(args.data),
        }
        buildings = (probabilities > args.threshold).astype(np.uint8)
        write_dataset(args.out, {"probabilities": probabilities, "buildings": buildings}, attrs)
        if args.png:
            _write_pngs(Path(args.png), dataset, probabilities)
    print(f"wrote {args.out} ({len(probabilities)} maps)")
    return 0


def _write_pngs(folder: Path, dataset, probabilities: np.ndarray) -> None:
    from tomoformer.evaluation.figures import sample_figure, save_figure

    for i in range(len(dataset)):
        raw = dataset.raw(i)
        figure = sample_figure(
            signals=raw["signals"].astype(np.float32),
            tx_pos=raw.get("tx_pos"),
            buildings=raw.get("buildings"),
            probabilities=probabilities[i],
            title=f"sample {int(dataset.indices[i])}",
        )
        save_figure(figure, folder / f"sample_{int(dataset.indices[i]):05d}.png")

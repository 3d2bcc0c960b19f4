"""``tomoformer experts fit|evaluate|predict``: clustered sub-models, their combination and global fine-tuning."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tomoformer.cli.common import (
    add_config_flag,
    add_overwrite_flag,
    device_name,
    parse_key_values,
    positive_int,
    probability,
    read_yaml,
)
from tomoformer.cli.options import add_options, values_from_args
from tomoformer.errors import ConfigError
from tomoformer.outputs import claim_output

_S = argparse.SUPPRESS
# ExpertsConfig fields without a flag: the augmentation is given in the YAML file (augment:).
_SKIP = ("augment",)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("experts", help="clustered sub-models (divide and conquer): fit, evaluate, predict")
    sub = parser.add_subparsers(dest="experts_command", metavar="ACTION", required=True)

    fit = sub.add_parser("fit", help="cluster, train one sub-model per cluster, combine, fine-tune globally")
    from tomoformer.experts.config import ExpertsConfig

    add_options(fit, ExpertsConfig, _SKIP)  # generated from the fields (tasks/options.py)
    fit.add_argument(
        "--expert-model",
        dest="expert_models",
        action="append",
        metavar="NAME[,KEY=VALUE...]",
        help="sub-model architecture, repeatable: used in turn for clusters 0, 1, ... (e.g. unet,base_channels=8)",
    )
    add_config_flag(fit)
    fit.set_defaults(handler=run_fit)

    ev = sub.add_parser("evaluate", help="IoU overall and per cluster of a fitted experts model")
    pr = sub.add_parser("predict", help="probabilities, building maps and clusters for every sample")
    for p in (ev, pr):
        p.add_argument("--checkpoint", help="experts model (default: OUT/model.ckpt of --config)")
        add_config_flag(p)
        p.add_argument("--batch-size", type=positive_int, default=8)
        p.add_argument("--device", type=device_name, default="auto")
        add_overwrite_flag(p)
    ev.add_argument("--data", help="labelled dataset (default: val_data, else data, of --config)")
    ev.add_argument("--out", help="output folder (default: OUT/evaluate of --config)")
    ev.set_defaults(handler=run_evaluate)
    pr.add_argument("--data", required=True, help="dataset; it needs no 'buildings'")
    pr.add_argument("--out", required=True, help="OUT.npz, OUT.h5 or OUT.zarr")
    pr.add_argument("--threshold", type=probability, default=0.5)
    pr.set_defaults(handler=run_predict)


def config_from_args(args: argparse.Namespace) -> Any:
    """ExpertsConfig defaults < --config YAML < flags."""
    from tomoformer.experts.config import ExpertsConfig

    values = values_from_args(args, ExpertsConfig, (*_SKIP, "expert_models"))  # --expert-model: below
    if getattr(args, "expert_models", None):
        values["expert_models"] = [_expert_spec(text) for text in args.expert_models]
    return ExpertsConfig.from_dict(values)


def _expert_spec(text: str) -> dict[str, Any]:
    name, _, rest = text.partition(",")
    if not name:
        raise ConfigError(f"--expert-model: expected NAME[,KEY=VALUE...], got {text!r}")
    return {"model": name, "model_kwargs": parse_key_values([p for p in rest.split(",") if p], "--expert-model")}


def run_fit(args: argparse.Namespace) -> int:
    from tomoformer.experts.fit import run_experts_fit

    result = run_experts_fit(config_from_args(args))
    print(_summary(result.metrics))
    print(f"done in {result.seconds:.0f} s; model: {result.model_path}")
    return 0


def _summary(scores: dict[str, Any]) -> str:
    per = ", ".join(f"cluster {k}: {v['iou']:.3f} (n={v['n_samples']})" for k, v in scores["per_cluster"].items())
    return f"IoU {scores['iou']:.4f} overall; {per}"


def _defaults(args: argparse.Namespace) -> dict[str, Any]:
    return read_yaml(args.config) if args.config else {}


def _checkpoint(args: argparse.Namespace) -> Path:
    """--checkpoint, else model.ckpt in the --config's run folder."""
    return Path(args.checkpoint or (Path(_defaults(args).get("out", "runs/experts")) / "model.ckpt"))


def run_evaluate(args: argparse.Namespace) -> int:
    from tomoformer.experts.inference import evaluate_experts

    defaults = _defaults(args)
    data = args.data or defaults.get("val_data") or defaults.get("data")
    if not data:
        raise ConfigError("give --data (or a --config with data)")
    out = Path(args.out or Path(defaults.get("out", "runs/experts")) / "evaluate")
    inputs = (data, args.checkpoint)
    with claim_output(out, overwrite=args.overwrite, command="experts evaluate", inputs=inputs, folder=True):
        scores = evaluate_experts(_checkpoint(args), data, out, args.batch_size, args.device)
    print(_summary(scores))
    print(f"wrote {out / 'metrics.csv'} and {out / 'metrics.json'}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from tomoformer.data.format import dataset_format
    from tomoformer.experts.inference import predict_experts

    dataset_format(args.out)  # a bad suffix fails before the work
    inputs = (args.data, args.checkpoint)
    with claim_output(args.out, overwrite=args.overwrite, command="experts predict", inputs=inputs):
        clusters = predict_experts(_checkpoint(args), args.data, args.out, args.threshold, args.batch_size, args.device)
    print(f"wrote {args.out} ({len(clusters)} maps; clusters {np.bincount(clusters).tolist()})")
    return 0

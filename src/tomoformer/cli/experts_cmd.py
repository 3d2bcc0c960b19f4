"""``tomoformer experts fit|evaluate|predict``: clustered sub-models, their combination and global fine-tuning."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tomoformer.cli.common import (
    add_config_flag,
    add_overwrite_flag,
    below_one,
    device_name,
    non_negative_float,
    non_negative_int,
    parse_key_values,
    positive_int,
    probability,
    read_yaml,
    seed_value,
)
from tomoformer.errors import ConfigError
from tomoformer.outputs import claim_output

_S = argparse.SUPPRESS
# Flag dest -> type, for flags that set an ExpertsConfig field of the same name.
_FIT_FLAGS: dict[str, tuple[Any, str]] = {
    "data": (str, "training dataset with 'buildings'"),
    "val_data": (str, "validation dataset (default: a seeded --val-fraction of --data)"),
    "out": (str, "run folder"),
    "features": (str, "clustering features: stats or encoder"),
    "encoder_checkpoint": (str, "pretrained checkpoint whose pooled features are clustered (features: encoder)"),
    "clusterer": (str, "kmeans, dbscan or gmm"),
    "k": (positive_int, "number of clusters (default: silhouette for kmeans, BIC for gmm)"),
    "partition": (str, "cluster (one expert per cluster) or region (one expert per map region)"),
    "combine": (str, "hard, soft, gate, fusion or attention"),
    "init_checkpoint": (str, "pretrained checkpoint the sub-models start from (expert model 'init' or same model)"),
    "policy": (str, "fine-tuning policy of pretrained sub-models: full, head, freeze:K, llrd:G, lora:R, lp-ft"),
    "epochs": (positive_int, "epochs per sub-model over its own samples"),
    "global_epochs": (non_negative_int, "epochs of end-to-end fine-tuning of the combined model (0 = none)"),
    "global_lr": (non_negative_float, "learning rate of the global stage"),
    "batch_size": (positive_int, "samples per step"),
    "lr": (non_negative_float, "learning rate of the sub-models"),
    "val_fraction": (below_one, "share of --data held out when no --val-data is given"),
    "seed": (seed_value, "seed of the split, clustering, shuffling and initialisation"),
    "accelerator": (str, "auto, cpu or gpu"),
}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("experts", help="clustered sub-models (divide and conquer): fit, evaluate, predict")
    sub = parser.add_subparsers(dest="experts_command", metavar="ACTION", required=True)

    fit = sub.add_parser("fit", help="cluster, train one sub-model per cluster, combine, fine-tune globally")
    for name, (kind, text) in _FIT_FLAGS.items():
        fit.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=_S, help=text)
    fit.add_argument(
        "--expert-model",
        dest="expert_models",
        action="append",
        metavar="NAME[,KEY=VALUE...]",
        help="sub-model architecture, repeatable: used in turn for clusters 0, 1, ... (e.g. unet,base_channels=8)",
    )
    switches = (
        ("film", "film", "condition each expert's head on the sample's offset from its cluster centre"),
        ("aux", "aux", "auxiliary targets: cluster membership and offset"),
        ("share-backbone", "share_backbone", "lora:R experts share one frozen backbone (adapter + head each)"),
    )
    for flag, dest, text in switches:
        fit.add_argument(f"--{flag}", dest=dest, action="store_true", default=_S, help=text)
        fit.add_argument(f"--no-{flag}", dest=dest, action="store_false", default=_S)
    fit.add_argument("--resume", action="store_true", default=_S, help="skip finished stages, continue the rest")
    add_overwrite_flag(fit, default=_S)
    fit.add_argument("--no-progress", dest="progress", action="store_false", default=_S)
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

    values: dict[str, Any] = read_yaml(args.config) if getattr(args, "config", None) else {}
    for name in (*_FIT_FLAGS, "film", "aux", "share_backbone", "resume", "overwrite", "progress"):
        if hasattr(args, name):
            values[name] = getattr(args, name)
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


def _load(args: argparse.Namespace) -> Any:
    from tomoformer.checkpoint import load_checkpoint

    defaults = _defaults(args)
    path = args.checkpoint or (Path(defaults.get("out", "runs/experts")) / "model.ckpt")
    return load_checkpoint(path, expect_model="experts")


def run_evaluate(args: argparse.Namespace) -> int:
    from tomoformer.data.datamodule import SignalMapDataset
    from tomoformer.data.format import open_dataset
    from tomoformer.experts.fit import evaluate_into
    from tomoformer.tasks.inference import resolve_device

    defaults = _defaults(args)
    data = args.data or defaults.get("val_data") or defaults.get("data")
    if not data:
        raise ConfigError("give --data (or a --config with data)")
    out = Path(args.out or Path(defaults.get("out", "runs/experts")) / "evaluate")
    inputs = (data, args.checkpoint)
    with claim_output(out, overwrite=args.overwrite, command="experts evaluate", inputs=inputs, folder=True):
        loaded = _load(args)
        with open_dataset(data, require_buildings=True) as source:
            scores = evaluate_into(
                loaded.model, SignalMapDataset(source), out, args.batch_size, resolve_device(args.device)
            )
    print(_summary(scores))
    print(f"wrote {out / 'metrics.csv'} and {out / 'metrics.json'}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tomoformer.data.format import dataset_format

    dataset_format(args.out)  # a bad suffix fails before the work
    inputs = (args.data, args.checkpoint)
    with claim_output(args.out, overwrite=args.overwrite, command="experts predict", inputs=inputs):
        return _predict(args)


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from tomoformer.data.datamodule import SignalMapDataset
    from tomoformer.data.format import open_dataset, write_dataset
    from tomoformer.experts.task import predict_with_clusters
    from tomoformer.tasks.inference import resolve_device

    loaded = _load(args)
    with open_dataset(args.data) as source:
        probabilities, clusters, _ = predict_with_clusters(
            loaded.model, SignalMapDataset(source), args.batch_size, resolve_device(args.device)
        )
    arrays = {
        "probabilities": probabilities,
        "buildings": (probabilities > args.threshold).astype(np.uint8),
        "group": clusters.astype(np.int16),  # the cluster each sample was routed to
    }
    write_dataset(args.out, arrays, {"source": "tomoformer experts predict", "input": str(args.data)})
    print(f"wrote {args.out} ({len(probabilities)} maps; clusters {np.bincount(clusters).tolist()})")
    return 0

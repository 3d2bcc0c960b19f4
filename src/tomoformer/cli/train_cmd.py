"""``tomoformer train``: train any registered model; ``tomoformer models``: list them."""

from __future__ import annotations

import argparse
from typing import Any

from tomoformer.cli.common import add_config_flag, add_overwrite_flag, parse_key_values, read_yaml
from tomoformer.errors import ConfigError

_S = argparse.SUPPRESS
# Flag dest → TrainConfig field type, for flags that set a top-level field.
_TRAIN_FLAGS: dict[str, Any] = {
    "data": str,
    "val_data": str,
    "out": str,
    "model": str,
    "max_epochs": int,
    "max_steps": int,
    "batch_size": int,
    "lr": float,
    "weight_decay": float,
    "warmup_fraction": float,
    "val_fraction": float,
    "seed": int,
    "accelerator": str,
    "devices": str,
    "num_nodes": int,
    "strategy": str,
    "precision": str,
    "num_workers": int,
}


_FLAG_HELP = {
    "data": "training dataset (.zarr, .npz, .h5) with 'buildings'",
    "val_data": "validation dataset (default: a seeded --val-fraction of --data)",
    "out": "run folder (config, metrics, checkpoints, figures)",
    "model": "registered model name (see `tomoformer models`)",
    "max_epochs": "epochs (default 50)",
    "max_steps": "optimiser steps; -1 = no limit (default)",
    "batch_size": "samples per step (default 8)",
    "lr": "peak AdamW learning rate (default 1e-3)",
    "weight_decay": "AdamW weight decay (default 0.05)",
    "warmup_fraction": "fraction of the steps spent warming up (default 0.05)",
    "val_fraction": "share of --data held out when no --val-data is given (default 0.1)",
    "seed": "seed for the split, shuffling, augmentation and initialisation (default 0)",
    "accelerator": "auto, cpu or gpu (default auto)",
    "devices": "devices per node (default 1)",
    "num_nodes": "nodes (default 1)",
    "strategy": "Lightning strategy, e.g. ddp (default auto)",
    "precision": "e.g. 32-true, bf16-mixed (default: bf16-mixed on CUDA, else 32-true)",
    "num_workers": "data-loading worker processes (default 0)",
}


def train_flags(*drop: str) -> dict[str, Any]:
    """The TrainConfig flags (dest → type) minus ``drop``, for commands that fix some of them."""
    return {name: kind for name, kind in _TRAIN_FLAGS.items() if name not in drop}


def add_train_flags(parser: argparse.ArgumentParser, flags: dict[str, Any] | None = None) -> None:
    """The TrainConfig flags (all default to SUPPRESS, so YAML values survive unless a flag is given)."""
    for name, kind in (flags or _TRAIN_FLAGS).items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=_S, help=_FLAG_HELP.get(name))


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train a model on a dataset")
    add_train_flags(p)
    p.add_argument(
        "--model-opt",
        dest="model_opts",
        action="append",
        metavar="KEY=VALUE",
        help="model option, e.g. --model-opt decoder=transformer (repeatable)",
    )
    p.add_argument("--resume", action="store_true", default=_S, help="continue from OUT/checkpoints/last.ckpt")
    add_overwrite_flag(p, default=_S)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=_S)
    p.add_argument(
        "--data-on-device",
        dest="data_on_device",
        action="store_true",
        default=_S,
        help="load the datasets into the training device's memory (float16) and augment batches there",
    )
    p.add_argument("--no-d4", dest="d4", action="store_false", default=_S, help="no symmetry augmentation")
    p.add_argument(
        "--frames",
        dest="max_frames",
        type=int,
        default=_S,
        help="train on random subsets of at most this many frames",
    )
    p.add_argument("--min-frames", dest="min_frames", type=int, default=_S)
    p.add_argument(
        "--min-keep-fraction",
        dest="min_keep_fraction",
        type=float,
        default=_S,
        help="random sparsity: keep between this fraction and all of the cells of each frame",
    )
    p.add_argument(
        "--max-floor-fraction",
        dest="max_floor_fraction",
        type=float,
        default=_S,
        help="random receiver floor: the weakest 0 to this fraction of each sample's cells become NaN "
        "(default 0.4; 0 = off)",
    )
    add_config_flag(p)
    p.set_defaults(handler=run)

    q = commands.add_parser("models", help="list the registered models")
    q.set_defaults(handler=run_models)


def train_config_from_args(args: argparse.Namespace) -> Any:
    """TrainConfig defaults < --config YAML < flags."""
    from tomoformer.tasks.train import TrainConfig

    values: dict[str, Any] = read_yaml(args.config) if getattr(args, "config", None) else {}
    _check_types(values, TrainConfig, "")
    for name in _TRAIN_FLAGS:
        if hasattr(args, name):
            values[name] = getattr(args, name)
    if "devices" in values and str(values["devices"]).isdigit():
        values["devices"] = int(values["devices"])
    for name in ("resume", "overwrite", "progress", "data_on_device"):
        if hasattr(args, name):
            values[name] = getattr(args, name)
    augment = dict(values.get("augment") or {})
    for name in ("d4", "max_frames", "min_frames", "min_keep_fraction", "max_floor_fraction"):
        if hasattr(args, name):
            augment[name] = getattr(args, name)
    if augment.get("max_frames") and not augment.get("min_frames"):
        augment["min_frames"] = max(1, augment["max_frames"] // 2)
    values["augment"] = augment
    values["model_kwargs"] = {
        **(values.get("model_kwargs") or {}),
        **parse_key_values(args.model_opts, "--model-opt"),
    }
    config = TrainConfig.from_dict(values)
    if config.max_epochs < 1 and config.max_steps < 1:
        raise ConfigError("give --max-epochs or --max-steps of at least 1")
    return config


_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
    "dict[str, Any]": (dict,),
    "AugmentOptions": (dict,),
}


def _check_types(values: dict[str, Any], cls: type, prefix: str) -> None:
    """Refuse a YAML value of the wrong type (``max_epochs: ten``) with one line, before it fails deep inside."""
    import dataclasses

    from tomoformer.data.datamodule import AugmentOptions

    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, allowed = values[f.name], str(f.type).split(" | ")
        kinds = tuple(t for name in allowed for t in _TYPES.get(name.strip(), (object,)))
        if not isinstance(value, kinds) or (isinstance(value, bool) and "bool" not in allowed):
            raise ConfigError(f"option {prefix}{f.name} is {value!r}, expected {str(f.type).replace(' | ', ' or ')}")
        if f.name == "augment" and isinstance(value, dict):
            _check_types(value, AugmentOptions, "augment.")
    if isinstance(values.get("model_kwargs"), dict):
        bad = [k for k in values["model_kwargs"] if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise ConfigError(f"model_kwargs: {bad[0]!r} is not an option name")


def run(args: argparse.Namespace) -> int:
    from tomoformer.tasks.train import run_training

    config = train_config_from_args(args)
    result = run_training(config)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()))
    print(f"done in {result.seconds:.0f} s: {shown}")
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    from tomoformer.models.registry import create_model, list_models

    for name in list_models():
        model = create_model(name)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:20s} {n:>12,} parameters")
    return 0

"""``tomoformer train``: train any registered model; ``tomoformer models``: list them."""

from __future__ import annotations

import argparse
from typing import Any

from tomoformer.cli.common import add_config_flag, parse_key_values
from tomoformer.cli.options import add_options, values_from_args
from tomoformer.errors import ConfigError

_S = argparse.SUPPRESS
# Frame subsets of train, pretrain and finetune when neither --sample-frames nor a YAML augment.max_frames is given.
DEFAULT_SAMPLE_FRAMES = {"min_frames": 1, "max_frames": 128, "frame_sampling": "log-uniform"}


def add_train_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """The TrainConfig flags, generated from its fields (tasks/options.py) minus ``skip``; all default to SUPPRESS,
    so YAML values survive unless a flag is given."""
    from tomoformer.tasks.config import TrainConfig

    add_options(parser, TrainConfig, (*skip, "augment"))


def add_augment_flags(parser: argparse.ArgumentParser) -> None:
    """The training-augmentation flags of train, pretrain and finetune (``augment:`` in YAML), generated from the
    fields of :class:`~tomoformer.data.augment_options.AugmentOptions`; values are checked with the config, so a
    bad one names its field."""
    from tomoformer.data.augment_options import AugmentOptions

    add_options(parser, AugmentOptions)


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
    add_augment_flags(p)
    add_config_flag(p)
    p.set_defaults(handler=run)

    q = commands.add_parser("models", help="list the registered models (or, with --pretrained, the shipped weights)")
    q.add_argument(
        "--pretrained", action="store_true", help="list the pretrained weights that ship with the package instead"
    )
    q.set_defaults(handler=run_models)


def train_config_from_args(args: argparse.Namespace, skip: tuple[str, ...] = (), cls: type | None = None) -> Any:
    """The run config ``cls`` (default :class:`TrainConfig`; ``FinetuneConfig``, ``PretrainConfig``): its defaults
    < --config YAML < flags (``skip``: fields a command sets itself)."""
    from tomoformer.tasks.config import TrainConfig

    cls = cls or TrainConfig
    values = values_from_args(args, cls, skip)
    augment = values.get("augment") or {}
    if not isinstance(augment, dict):
        raise ConfigError(f"option augment is {augment!r}, expected a mapping")
    augment = dict(augment)
    if isinstance(augment.get("max_frames"), tuple):  # --sample-frames A-B
        augment["min_frames"], augment["max_frames"] = augment["max_frames"]
        augment["frame_sampling"] = "log-uniform"
    elif "max_frames" not in augment:  # neither flag nor YAML: T log-uniform over a wide range (stable in T)
        augment.update(DEFAULT_SAMPLE_FRAMES)
    if augment.get("max_frames") and not augment.get("min_frames"):
        augment["min_frames"] = max(1, augment["max_frames"] // 2)
    values["augment"] = augment
    kwargs = values.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"option model_kwargs is {kwargs!r}, expected a mapping")
    values["model_kwargs"] = {**kwargs, **parse_key_values(getattr(args, "model_opts", None), "--model-opt")}
    return cls.from_dict(values)  # the cross-field rules (step budget, ...) are the config's own


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

    if args.pretrained:
        from tomoformer.pretrained import available

        for card in available():
            print(card.summary())
        return 0
    for name in list_models():
        model = create_model(name)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:20s} {n:>12,} parameters")
    return 0

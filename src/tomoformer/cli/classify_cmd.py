"""``tomoformer classify pretrain|finetune|evaluate|demo``: timm image classifiers under the fine-tuning policies."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tomoformer.cli.common import (
    add_config_flag,
    add_overwrite_flag,
    parse_key_values,
    positive_int,
    seed_value,
)
from tomoformer.cli.options import add_options, values_from_args
from tomoformer.errors import ConfigError
from tomoformer.tasks.policy import Policy, parse_policy

_S = argparse.SUPPRESS
_DATA_HELP = "image folder (root/<class>/*.png|jpg) or .npz with images [N, C, H, W] and labels [N]"
# ClassifyConfig fields that get no flag: in-memory images need no loader workers; the policy is finetune's.
_SKIP = ("num_workers",)


def _add_run_flags(p: argparse.ArgumentParser, *, policy: bool) -> None:
    """The ClassifyConfig flags, generated from its fields (tasks/options.py); all default to SUPPRESS."""
    from tomoformer.classify.config import ClassifyConfig

    add_options(p, ClassifyConfig, _SKIP if policy else (*_SKIP, "policy"))
    p.add_argument("--model-opt", dest="model_opts", action="append", metavar="KEY=VALUE", help="timm option")
    add_config_flag(p)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("classify", help="image classification with timm ViTs (pretrain, fine-tune, ...)")
    sub = parser.add_subparsers(dest="classify_command", metavar="ACTION", required=True)

    p = sub.add_parser("pretrain", help="train a classifier (from scratch, or from --weights / --pretrained)")
    _add_run_flags(p, policy=False)
    p.set_defaults(handler=run_pretrain, model_opts=None)

    f = sub.add_parser("finetune", help="fine-tune a classifier checkpoint (or timm weights) under a policy")
    f.add_argument("--from", dest="checkpoint", metavar="CKPT", help="a checkpoint of `classify pretrain`")
    _add_run_flags(f, policy=True)
    f.set_defaults(handler=run_finetune, model_opts=None)

    e = sub.add_parser("evaluate", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint")
    e.add_argument("--checkpoint", required=True, metavar="CKPT")
    e.add_argument("--data", required=True, help=_DATA_HELP)
    e.add_argument("--out", required=True, help="folder for metrics.json and figures/confusion_matrix.png")
    e.add_argument("--image-size", type=positive_int, default=None, help="resize folder images to N x N")
    e.add_argument("--batch-size", type=positive_int, default=256)
    add_overwrite_flag(e)
    e.set_defaults(handler=run_evaluate)

    d = sub.add_parser("demo", help="offline: pretrain on generated strokes, fine-tune on digits per policy")
    d.add_argument("--out", default="runs/classify_demo")
    d.add_argument("--policies", default=None, help="comma-separated policies (default: all six)")
    d.add_argument("--pretrain-size", type=positive_int, default=None, help="generated pretraining images")
    d.add_argument("--pretrain-epochs", type=positive_int, default=None)
    d.add_argument("--train-size", type=positive_int, default=None, help="digits to fine-tune on")
    d.add_argument("--finetune-epochs", type=positive_int, default=None)
    d.add_argument("--seed", type=seed_value, default=0)
    d.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    add_overwrite_flag(d)
    d.set_defaults(handler=run_demo)


def config_from_args(args: argparse.Namespace) -> Any:
    """ClassifyConfig defaults < --config YAML < flags."""
    from tomoformer.classify.config import ClassifyConfig

    values = values_from_args(args, ClassifyConfig)
    kwargs = values.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"option model_kwargs is {kwargs!r}, expected a mapping")
    values["model_kwargs"] = {**kwargs, **parse_key_values(getattr(args, "model_opts", None), "--model-opt")}
    return ClassifyConfig.from_dict(values)  # the cross-field rules are the config's own


def _report(result: Any) -> int:
    print(f"done in {result.seconds:.0f} s: validation top-1 {result.val_top1:.4f}")
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    from tomoformer.classify.run import run_classify

    config = config_from_args(args)
    if parse_policy(config.policy) != Policy("full"):
        raise ConfigError("pretrain trains every parameter; use `classify finetune --policy` for policies")
    return _report(run_classify(config))


def run_finetune(args: argparse.Namespace) -> int:
    from tomoformer.classify.run import run_classify
    from tomoformer.tasks.policy import parse_policy

    config = config_from_args(args)
    parse_policy(config.policy)  # a bad policy fails before any data is read
    if args.checkpoint and (hasattr(args, "model") or args.model_opts):
        raise ConfigError("--from CKPT fixes the model: drop --model / --model-opt")
    if not (args.checkpoint or config.weights or config.pretrained):
        raise ConfigError("nothing to fine-tune: give --from CKPT, --weights FILE or --pretrained")
    return _report(run_classify(config, source=args.checkpoint))


def run_evaluate(args: argparse.Namespace) -> int:
    import yaml

    from tomoformer.classify.data import load_images
    from tomoformer.classify.evaluate import evaluate_checkpoint
    from tomoformer.io import write_text_atomic
    from tomoformer.outputs import claim_output

    inputs = (args.data, args.checkpoint)
    with claim_output(args.out, overwrite=args.overwrite, command="classify evaluate", inputs=inputs, folder=True):
        images = load_images(args.data, args.image_size)
        metrics = evaluate_checkpoint(
            args.checkpoint, images, args.out, what=str(args.data), batch_size=args.batch_size
        )
        record = {"checkpoint": str(args.checkpoint), "data": str(args.data), "image_size": args.image_size}
        write_text_atomic(Path(args.out) / "config.yaml", yaml.safe_dump(record, sort_keys=False))
    top5 = f", top-5 {metrics['top5']:.4f}" if "top5" in metrics else ""
    print(f"{metrics['n_images']} images: top-1 {metrics['top1']:.4f}{top5}")
    print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'figures' / 'confusion_matrix.png'}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from tomoformer.classify.demo import DemoOptions, run_demo

    given = {
        "pretrain_size": args.pretrain_size,
        "pretrain_epochs": args.pretrain_epochs,
        "train_size": args.train_size,
        "finetune_epochs": args.finetune_epochs,
    }
    options = DemoOptions(out=args.out, seed=args.seed, progress=args.progress)
    for key, value in given.items():
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be at least 1")
            setattr(options, key, value)
    if args.policies:
        options.policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    from tomoformer.outputs import claim_output

    with claim_output(args.out, overwrite=args.overwrite, command="classify demo", folder=True):
        run_demo(options)
    return 0

"""``tomoformer finetune-study``: IoU against downstream set size for several fine-tuning policies and scratch."""

from __future__ import annotations

import argparse

from tomoformer.cli.options import values_from_args
from tomoformer.cli.train_cmd import add_train_flags
from tomoformer.errors import ConfigError
from tomoformer.tasks.policy import POLICY_HELP

DEFAULT_SIZES = "16,64,256"
DEFAULT_POLICIES = "full,head,freeze:6,llrd:0.75,lora:8,lp-ft"
_S = argparse.SUPPRESS
# Training flags shared by every run of the study (the model comes from the checkpoint; data, out, --resume and
# --overwrite are the study's own).
_SKIP = ("data", "val_data", "out", "model", "resume", "overwrite", "progress", "data_on_device")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("finetune-study", help="IoU against downstream set size, per fine-tuning policy")
    p.add_argument("--from", dest="checkpoint", required=True, metavar="CKPT", help="pretrained checkpoint")
    p.add_argument("--data", required=True, help="downstream dataset; subsets are drawn from it")
    p.add_argument("--val-data", help="validation dataset (default: a fixed held-out part of --data)")
    p.add_argument("--test-data", help="also score every run's best checkpoint (and the unchanged model) on this")
    p.add_argument("--out", required=True, help="study folder (results.csv, iou_vs_size.png, summary.md, runs/)")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"training-set sizes (default: {DEFAULT_SIZES})")
    p.add_argument(
        "--policies",
        default=DEFAULT_POLICIES,
        help=f"comma-separated, each {POLICY_HELP} (default: {DEFAULT_POLICIES})",
    )
    p.add_argument("--no-scratch", dest="scratch", action="store_false", help="skip training from random init")
    p.add_argument("--resume", action="store_true", help="skip the runs already in OUT/results.csv")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier study in OUT (ours only)")
    p.add_argument("--no-d4", dest="d4", action="store_false", help="no symmetry augmentation")
    add_train_flags(p, _SKIP)
    p.set_defaults(handler=run)


def _split(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{what}: give a comma-separated list")
    return items


def run(args: argparse.Namespace) -> int:
    from tomoformer.tasks.study import run_study
    from tomoformer.tasks.train import TrainConfig

    try:
        sizes = [int(s) for s in _split(args.sizes, "--sizes")]
    except ValueError:
        raise ConfigError(f"--sizes: expected integers like {DEFAULT_SIZES}, got {args.sizes!r}") from None
    values = values_from_args(args, TrainConfig, _SKIP)
    config = TrainConfig.from_dict({**values, "augment": {"d4": args.d4}, "progress": False})
    rows = run_study(
        args.checkpoint,
        args.data,
        args.out,
        sizes,
        _split(args.policies, "--policies"),
        config=config,
        val_data=args.val_data,
        scratch=args.scratch,
        resume=args.resume,
        test_data=args.test_data,
        overwrite=args.overwrite,
    )
    print(f"{len(rows)} runs; results in {args.out}/results.csv, {args.out}/summary.md, {args.out}/iou_vs_size.png")
    return 0

"""``tomoformer finetune``: fine-tune a trained checkpoint under a policy (full, head, freeze:K, llrd:G, lora:R,
lp-ft)."""

from __future__ import annotations

import argparse

from tomoformer.cli.common import add_config_flag
from tomoformer.cli.train_cmd import add_augment_flags, add_train_flags, train_config_from_args
from tomoformer.tasks.policy import POLICY_HELP

_S = argparse.SUPPRESS
# The training flags that make sense when the model comes from a checkpoint (no --model).
_SKIP = ("model",)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("finetune", help="fine-tune a trained checkpoint under a policy")
    p.add_argument(
        "--from",
        dest="checkpoint",
        required=True,
        metavar="CKPT",
        help="pretrained checkpoint, or a shipped model's name (`tomoformer models --pretrained`)",
    )
    p.add_argument("--policy", default="full", help=f"one of {POLICY_HELP} (default: full)")
    add_train_flags(p, _SKIP)
    add_augment_flags(p)
    add_config_flag(p)
    p.set_defaults(handler=run, model_opts=None)


def run(args: argparse.Namespace) -> int:
    from tomoformer.tasks.finetune import run_finetune
    from tomoformer.tasks.policy import parse_policy

    policy = parse_policy(args.policy)  # a bad policy fails before any data is read
    config = train_config_from_args(args, _SKIP)
    result = run_finetune(args.checkpoint, str(policy), config)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.train.metrics.items()))
    print(f"done in {result.train.seconds:.0f} s ({result.policy}): {shown}")
    print(f"best checkpoint: {result.train.best_checkpoint}")
    return 0

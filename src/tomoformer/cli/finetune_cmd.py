"""``tomoformer finetune``: fine-tune a trained checkpoint under a policy (full, head, freeze:K, llrd:G, lora:R,
lp-ft)."""

from __future__ import annotations

import argparse

from tomoformer.cli.common import add_config_flag, add_overwrite_flag, non_negative_int, positive_int
from tomoformer.cli.train_cmd import add_train_flags, train_config_from_args, train_flags
from tomoformer.finetune.policies import POLICY_HELP

_S = argparse.SUPPRESS
# The training flags that make sense when the model comes from a checkpoint (no --model).
_FLAGS = train_flags("model")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("finetune", help="fine-tune a trained checkpoint under a policy")
    p.add_argument("--from", dest="checkpoint", required=True, metavar="CKPT", help="pretrained checkpoint")
    p.add_argument("--policy", default="full", help=f"one of {POLICY_HELP} (default: full)")
    add_train_flags(p, _FLAGS)
    p.add_argument("--resume", action="store_true", default=_S, help="continue from OUT/checkpoints/last.ckpt")
    add_overwrite_flag(p, default=_S)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=_S)
    p.add_argument("--no-d4", dest="d4", action="store_false", default=_S, help="no symmetry augmentation")
    p.add_argument(
        "--frames", dest="max_frames", type=non_negative_int, default=_S, help="random subsets of at most N frames"
    )
    p.add_argument("--min-frames", dest="min_frames", type=positive_int, default=_S)
    add_config_flag(p)
    p.set_defaults(handler=run, model_opts=None)


def run(args: argparse.Namespace) -> int:
    from tomoformer.finetune.policies import parse_policy
    from tomoformer.finetune.run import run_finetune

    policy = parse_policy(args.policy)  # a bad policy fails before any data is read
    config = train_config_from_args(args)
    result = run_finetune(args.checkpoint, str(policy), config)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.train.metrics.items()))
    print(f"done in {result.train.seconds:.0f} s ({result.policy}): {shown}")
    print(f"best checkpoint: {result.train.best_checkpoint}")
    return 0

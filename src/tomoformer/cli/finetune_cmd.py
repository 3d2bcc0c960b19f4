"""``tomoformer finetune``: fine-tune a trained checkpoint under a policy (full, head, freeze:K, llrd:G, lora:R,
lp-ft)."""

from __future__ import annotations

import argparse

from tomoformer.cli.common import add_config_flag
from tomoformer.cli.options import add_options
from tomoformer.cli.train_cmd import add_augment_flags, add_train_flags, train_config_from_args

_S = argparse.SUPPRESS
# The training flags that make sense when the model comes from a checkpoint (no --model).
_SKIP = ("model",)


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("finetune", help="fine-tune a trained checkpoint under a policy")
    from tomoformer.tasks.options import AdaptOptions

    add_options(p, AdaptOptions)  # --from CKPT (YAML: init), --policy
    add_train_flags(p, _SKIP)
    add_augment_flags(p)
    add_config_flag(p)
    p.set_defaults(handler=run, model_opts=None)


def run(args: argparse.Namespace) -> int:
    from tomoformer.tasks.config import FinetuneConfig
    from tomoformer.tasks.finetune import run_finetune

    config = train_config_from_args(args, _SKIP, FinetuneConfig)  # a bad policy fails before any data is read
    result = run_finetune(config=config)  # no --from (init): a one-line error before any output
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.train.metrics.items()))
    print(f"done in {result.train.seconds:.0f} s ({result.policy}): {shown}")
    print(f"best checkpoint: {result.train.best_checkpoint}")
    return 0

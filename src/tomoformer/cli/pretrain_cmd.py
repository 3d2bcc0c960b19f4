"""``tomoformer pretrain``: supervised pretraining on a dataset store (like ``train``) or on samples simulated on
the fly (``--stream``), new ones every epoch, validated on a fixed simulated set; or, with ``--objective masked``,
self-supervised masked signal modelling that needs no building labels."""

from __future__ import annotations

import argparse
from typing import Any

from tomoformer.cli.common import (
    add_config_flag,
    open_fraction,
    parse_key_values,
    positive_int,
)
from tomoformer.cli.train_cmd import add_augment_flags, add_train_flags, train_config_from_args
from tomoformer.errors import ConfigError

_S = argparse.SUPPRESS


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("pretrain", help="pretrain a model on a dataset or on data simulated on the fly")
    add_train_flags(p)
    p.add_argument("--model-opt", dest="model_opts", action="append", metavar="KEY=VALUE", help="model option")
    add_augment_flags(p)
    p.add_argument(
        "--objective", choices=("supervised", "masked"), default="supervised", help="masked: no labels needed"
    )
    p.add_argument("--mask-ratio", type=open_fraction, default=0.5, help="masked: fraction of frames or patches hidden")
    p.add_argument("--mask-mode", choices=("frames", "patches"), default="frames", help="masked: what is hidden")
    add_config_flag(p)
    s = p.add_argument_group("streaming from the simulator")
    s.add_argument("--stream", action="store_true", help="simulate new training samples every epoch")
    s.add_argument("--sim-config", metavar="YAML", help="SimConfig fields (see `tomoformer simulate`)")
    s.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="a SimConfig field")
    s.add_argument("--samples-per-epoch", type=positive_int, default=1024, help="simulated training samples per epoch")
    s.add_argument("--val-samples", type=positive_int, default=64, help="size of the fixed simulated validation set")
    p.set_defaults(handler=run)


def sim_config_from_args(args: argparse.Namespace) -> Any:
    """SimConfig defaults < ``--sim-config`` YAML < ``--set`` pairs."""
    from tomoformer.cli.common import read_yaml
    from tomoformer.sim.config import SimConfig

    values: dict[str, Any] = read_yaml(args.sim_config) if args.sim_config else {}
    values.update(parse_key_values(args.overrides, "--set"))
    return SimConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from tomoformer.tasks.train import run_training

    config = train_config_from_args(args)
    if args.stream:
        if hasattr(args, "data") or hasattr(args, "val_data"):
            raise ConfigError("give either --stream or --data, not both")
        if args.objective == "masked":
            raise ConfigError("--objective masked trains on a dataset store: give --data, not --stream")
        from tomoformer.tasks.stream_pretraining import run_stream_pretraining

        result = run_stream_pretraining(config, sim_config_from_args(args), args.samples_per_epoch, args.val_samples)
    else:
        if args.sim_config or args.overrides:
            raise ConfigError("--sim-config and --set need --stream")
        if args.objective == "masked":
            from tomoformer.tasks.pretraining import run_masked_pretraining

            result = run_masked_pretraining(config, args.mask_ratio, args.mask_mode)
        else:
            result = run_training(config)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()))
    print(f"done in {result.seconds:.0f} s: {shown}")
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0

"""``tomoformer pretrain``: supervised pretraining on a dataset store (like ``train``) or on samples simulated on
the fly (``--stream``), new ones every epoch, validated on a fixed simulated set; or, with ``--objective masked``,
self-supervised masked signal modelling that needs no building labels."""

from __future__ import annotations

import argparse
from typing import Any

from tomoformer.cli.common import add_config_flag, parse_key_values
from tomoformer.cli.options import add_options
from tomoformer.cli.train_cmd import add_augment_flags, add_train_flags, train_config_from_args
from tomoformer.errors import ConfigError

_S = argparse.SUPPRESS


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("pretrain", help="pretrain a model on a dataset or on data simulated on the fly")
    add_train_flags(p)
    p.add_argument("--model-opt", dest="model_opts", action="append", metavar="KEY=VALUE", help="model option")
    add_augment_flags(p)
    from tomoformer.tasks.options import PretrainOptions, StreamOptions

    add_options(p, PretrainOptions)  # --objective, --mask-ratio, --mask-mode
    add_config_flag(p)
    s = p.add_argument_group("streaming from the simulator")
    add_options(s, StreamOptions)  # --stream, --sim-config, --samples-per-epoch, --val-samples
    s.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="a SimConfig field")
    p.set_defaults(handler=run)


def sim_config_from_args(args: argparse.Namespace, path: str | None = None) -> Any:
    """SimConfig defaults < ``--sim-config`` YAML (``path``: the run config's ``sim_config``) < ``--set`` pairs."""
    from tomoformer.cli.common import read_yaml
    from tomoformer.sim.config import SimConfig

    path = path if path is not None else getattr(args, "sim_config", None)
    values: dict[str, Any] = read_yaml(path) if path else {}
    values.update(parse_key_values(args.overrides, "--set"))
    return SimConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from tomoformer.tasks.config import PretrainConfig
    from tomoformer.tasks.train import run_training

    config = train_config_from_args(args, cls=PretrainConfig)
    if config.stream:  # the config refuses --data and --objective masked with --stream
        if hasattr(args, "data"):  # --data given as the default path is still a store, not a stream
            raise ConfigError("give either --stream or --data, not both")
        from tomoformer.tasks.stream_pretraining import run_stream_pretraining

        sim = sim_config_from_args(args, config.sim_config)
        result = run_stream_pretraining(config, sim, config.samples_per_epoch, config.val_samples)
    else:
        if args.overrides:  # --sim-config without --stream: refused by the config
            raise ConfigError("--sim-config and --set need --stream")
        if config.objective == "masked":
            from tomoformer.tasks.pretraining import run_masked_pretraining

            result = run_masked_pretraining(config, config.mask_ratio, config.mask_mode)
        else:
            result = run_training(config)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items()))
    print(f"done in {result.seconds:.0f} s: {shown}")
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0

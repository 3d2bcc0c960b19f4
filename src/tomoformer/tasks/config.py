"""The options of a mapping run (``train``, ``pretrain``, ``finetune``, ``finetune-study``): :class:`TrainConfig`.

A module of its own, importing no torch, so that the command line can build its flags from the fields without
paying for the deep-learning imports on every call (``tomoformer --help``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tomoformer.data.augment_options import AugmentOptions
from tomoformer.errors import ConfigError
from tomoformer.tasks.options import (
    AdaptOptions,
    OptimOptions,
    PretrainOptions,
    RunOptions,
    StreamOptions,
    check_budget,
    check_fields,
    config_from_dict,
    option,
)


def augment_options(**values: Any) -> AugmentOptions:
    """:class:`AugmentOptions` from keyword arguments (the ``nested`` builder of an ``augment`` field)."""
    return AugmentOptions(**values)


@dataclass
class TrainConfig(RunOptions, OptimOptions):
    """Everything a training run needs; every field has a default that works on a laptop CPU. The run and
    optimiser options are :class:`RunOptions` and :class:`OptimOptions` (tasks/options.py)."""

    data: str = option("data/train.zarr", "training dataset (.zarr, .npz, .h5) with 'buildings'")
    val_data: str | None = option(None, "validation dataset (default: a seeded --val-fraction of --data)")
    out: str = option("runs/train", "run folder (config, metrics, checkpoints, figures)")
    model: str = option("tomoformer_tiny", "registered model name (see `tomoformer models`)")
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = option(50, "epochs", bounds=("int", -1, None))
    dice_weight: float = option(1.0, None, bounds=("float", 0.0, None, False, False))
    val_fraction: float = option(
        0.1, "share of --data held out when no --val-data is given", bounds=("float", 0.0, 1.0, False, True)
    )
    augment: AugmentOptions = field(default_factory=augment_options, metadata={"nested": augment_options})
    data_on_device: bool = option(
        False, "load the datasets into the training device's memory (float16) and augment batches there"
    )
    fit_batches: int = option(64, None, bounds=("int", 1, None))

    def __post_init__(self) -> None:
        # Range checks here, so a bad value fails as one line whether it came from a flag, a YAML file or code.
        if isinstance(self.augment, dict):
            self.augment = augment_options(**self.augment)
        check_fields(self)
        self.augment.check()
        check_budget(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a YAML file): flat keys or ``run:``/``optim:`` sections; unknown keys, wrong
        types and bad values fail with one clear line."""
        return config_from_dict(cls, values, "training")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FinetuneConfig(TrainConfig, AdaptOptions):
    """A ``finetune`` run: :class:`TrainConfig` plus where it starts and its policy (:class:`AdaptOptions`);
    ``model`` and ``model_kwargs`` come from the ``init`` checkpoint (required by
    :func:`tomoformer.tasks.finetune.run_finetune`, so a config file may name it later)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from tomoformer.tasks.policy import parse_policy  # torch: only when a fine-tuning config is built

        parse_policy(self.policy)  # a bad policy fails before any data is read

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        return config_from_dict(cls, values, "finetune")


@dataclass
class PretrainConfig(TrainConfig, PretrainOptions, StreamOptions):
    """A ``pretrain`` run: :class:`TrainConfig` plus the objective (:class:`PretrainOptions`) and the streaming
    options (:class:`StreamOptions`). Streaming trains on simulated samples: no dataset store, and no masked
    objective (that one trains on a store)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stream:
            default_data = {f.name: f.default for f in dataclasses.fields(TrainConfig)}["data"]
            if self.data != default_data or self.val_data is not None:
                raise ConfigError("give either --stream or --data, not both")
            if self.objective == "masked":
                raise ConfigError("--objective masked trains on a dataset store: give --data, not --stream")
        elif self.sim_config:
            raise ConfigError("--sim-config and --set need --stream")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        return config_from_dict(cls, values, "pretraining")

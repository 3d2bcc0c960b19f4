"""The options of a classification run (``classify pretrain|finetune``): :class:`ClassifyConfig`.

A module of its own, importing no torch or timm, so that the command line builds its flags from the fields cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tomoformer.errors import ConfigError
from tomoformer.tasks.config import TrainConfig
from tomoformer.tasks.options import (
    POLICY_HELP,
    OptimOptions,
    RunOptions,
    check_budget,
    check_fields,
    config_from_dict,
    like,
    option,
    shared_values,
)

DEFAULT_MODEL = "vit_tiny_patch16_224"  # a timm name; the demo and the tests build it at the data's image size
DATA_HELP = "image folder (root/<class>/*.png|jpg) or .npz with images [N, C, H, W] and labels [N]"


@dataclass
class ClassifyConfig(RunOptions, OptimOptions):
    """Everything a classification run needs; the defaults suit small images on a laptop CPU. The run and optimiser
    options are :class:`RunOptions` and :class:`OptimOptions` (tasks/options.py)."""

    data: str = option("data/images", DATA_HELP)
    val_data: str | None = option(None, "validation images (default: a seeded --val-fraction of --data)")
    out: str = option("runs/classify", "run folder (config.yaml, metrics.csv, checkpoints/, figures/)")
    model: str = option(DEFAULT_MODEL, "any timm model name")
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    patch_size: int | None = option(
        None,
        "ViT patch size (default: the model's, or smaller so that small images get a grid)",
        bounds=("int", 1, None),
    )
    image_size: int | None = option(
        None, "resize folder images to N x N (default: they must all have one size)", bounds=("int", 1, None)
    )
    policy: str = option("full", f"fine-tuning policy: {POLICY_HELP}")
    weights: str | None = option(None, "initial weights: a timm or Hugging Face .safetensors (or torch) file")
    pretrained: bool = option(False, "download timm's pretrained weights")
    max_epochs: int = option(30, "epochs", bounds=("int", -1, None))
    batch_size: int = like(OptimOptions, "batch_size", 64)
    label_smoothing: float = option(0.0, "cross-entropy label smoothing", bounds=("float", 0.0, 1.0, False, True))
    val_fraction: float = option(
        0.2, "share of --data held out without --val-data", bounds=("float", 0.0, 1.0, False, True)
    )

    def __post_init__(self) -> None:
        check_fields(self)
        check_budget(self)
        if self.weights and self.pretrained:
            raise ConfigError("give --weights or --pretrained, not both")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ClassifyConfig:
        """Build from a plain dict (a YAML file): flat keys or ``run:``/``optim:`` sections; unknown keys, wrong
        types and bad values fail with one clear line."""
        return config_from_dict(cls, values, "classify")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def train_config(self, model: str, model_kwargs: dict[str, Any]) -> TrainConfig:
        """The :class:`TrainConfig` that drives the shared Lightning loop."""
        return TrainConfig(
            **shared_values(self),
            data=self.data,
            val_data=self.val_data,
            out=self.out,
            model=model,
            model_kwargs=model_kwargs,
            max_epochs=self.max_epochs,
        )

"""Options of ``tomoformer experts fit`` (``configs/experts.yaml``); every field has a default that runs on a CPU."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tomoformer.errors import ConfigError
from tomoformer.tasks.config import TrainConfig, augment_options
from tomoformer.tasks.options import (
    POLICY_HELP,
    OptimOptions,
    RunOptions,
    check_fields,
    config_from_dict,
    option,
    shared_values,
)

if TYPE_CHECKING:
    from tomoformer.data.datamodule import AugmentOptions


def _default_experts() -> list[dict[str, Any]]:
    # Imported when a config is built: models.experts.model pulls in torch and the model registry.
    from tomoformer.models.experts.model import DEFAULT_EXPERT

    return [dict(DEFAULT_EXPERT)]


@dataclass
class ExpertsConfig(RunOptions, OptimOptions):
    """Clustering, sub-models, combination and the two training stages (per-expert, then global). The run and
    optimiser options are :class:`RunOptions` and :class:`OptimOptions` (tasks/options.py); ``max_steps`` caps
    each training stage (every sub-model, then the global stage)."""

    data: str = option("data/train.zarr", "training dataset with 'buildings'")
    val_data: str | None = option(None, "validation dataset (default: a seeded --val-fraction of --data)")
    out: str = option("runs/experts", "run folder")
    # Clustering
    features: str = option("stats", "clustering features: stats or encoder")
    encoder_checkpoint: str | None = option(
        None, "pretrained checkpoint whose pooled features are clustered (features: encoder)"
    )
    clusterer: str = option("kmeans", "kmeans, dbscan or gmm")
    k: int | None = option(
        None, "number of clusters (default: silhouette for kmeans, BIC for gmm)", bounds=("int", 1, None)
    )
    k_max: int = option(4, None, bounds=("int", 2, None))
    dbscan_eps: float | None = None  # None: 90th percentile of the distance to the min_samples-th neighbour
    dbscan_min_samples: int = 5
    # Sub-models
    partition: str = option("cluster", "cluster (one expert per cluster) or region (one expert per map region)")
    regions: list[int] = field(default_factory=lambda: [2, 2])
    halo: int = 4
    # Architectures, used in turn for cluster (or region) 0, 1, 2, ...; {"model": "init"} = init_checkpoint's.
    expert_models: list[dict[str, Any]] = field(default_factory=_default_experts)
    init_checkpoint: str | None = option(
        None, "pretrained checkpoint the sub-models start from (expert model 'init' or same model)"
    )
    policy: str = option("full", f"fine-tuning policy of pretrained sub-models: {POLICY_HELP}")
    # With policy lora:R and every expert "init": the experts share one frozen backbone (one LoRA adapter and
    # one head each) instead of K full copies.
    share_backbone: bool = option(False, "lora:R experts share one frozen backbone (adapter + head each)")
    # Together, the sub-models make `epochs` passes over the data.
    epochs: int = option(10, "epochs per sub-model over its own samples", bounds=("int", 1, None))
    # Combination and global fine-tuning
    combine: str = option("soft", "hard, soft, gate, fusion or attention")
    film: bool = option(False, "condition each expert's head on the sample's offset from its cluster centre")
    aux: bool = option(False, "auxiliary targets: cluster membership and offset")
    aux_weight: float = 0.1
    hidden: int = 16
    global_epochs: int = option(
        0, "epochs of end-to-end fine-tuning of the combined model (0 = none)", bounds=("int", 0, None)
    )
    global_lr: float = option(3e-4, "learning rate of the global stage", bounds=("float", 0.0, None, False, False))
    global_policy: str = "full"  # full | head | freeze:K, applied to every expert during the global stage
    # Optimisation (batch_size, lr, weight_decay, warmup_fraction: OptimOptions)
    dice_weight: float = 1.0
    val_fraction: float = option(
        0.1, "share of --data held out when no --val-data is given", bounds=("float", 0.0, 1.0, False, True)
    )
    augment: AugmentOptions = field(default_factory=augment_options, metadata={"nested": augment_options})

    def __post_init__(self) -> None:
        from tomoformer.experts.clustering import METHODS
        from tomoformer.models.experts.model import COMBINES
        from tomoformer.tasks.policy import parse_policy, require_kind

        if isinstance(self.augment, dict):
            self.augment = augment_options(**self.augment)
        check_fields(self)
        checks = [
            (self.features in ("stats", "encoder"), f"features must be stats or encoder, got {self.features!r}"),
            (self.clusterer in METHODS, f"clusterer must be one of {', '.join(METHODS)}, got {self.clusterer!r}"),
            (self.partition in ("cluster", "region"), f"partition must be cluster or region, got {self.partition!r}"),
            (self.combine in COMBINES, f"combine must be one of {', '.join(COMBINES)}, got {self.combine!r}"),
            (len(self.regions) == 2 and min(self.regions) >= 1, "regions must be [rows, cols] >= 1"),
            (self.features != "encoder" or self.encoder_checkpoint, "features: encoder needs encoder_checkpoint"),
            (bool(self.expert_models), "expert_models must name at least one model"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for spec in self.expert_models:
            if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
                raise ConfigError(f"each expert_models entry needs a 'model' name, got {spec!r}")
            if spec["model"] == "init" and not self.init_checkpoint:
                raise ConfigError("expert model 'init' needs init_checkpoint")
        parse_policy(self.policy)
        if self.share_backbone:
            require_kind(self.policy, ("lora",), "with share_backbone, policy")
            if not self.init_checkpoint:
                raise ConfigError("share_backbone needs init_checkpoint and policy lora:R")
            if any(spec["model"] != "init" for spec in self.expert_models):
                raise ConfigError("share_backbone needs every expert to be init_checkpoint's model ({'model': 'init'})")
            require_kind(self.global_policy, ("full", "head"), "global_policy", " (share_backbone keeps it frozen)")
        require_kind(self.global_policy, ("full", "head", "freeze"), "global_policy")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExpertsConfig:
        """Build from a plain mapping (YAML): flat keys or ``run:``/``optim:`` sections; unknown keys, wrong types
        and bad values fail with one line."""
        return config_from_dict(cls, values, "experts")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def train_config(self, out: str, epochs: int, lr: float, model: str = "experts") -> TrainConfig:
        """The :class:`TrainConfig` one training stage runs under (``fit_task`` reads its trainer options)."""
        return TrainConfig(
            **{**shared_values(self), "lr": lr, "overwrite": False},
            data=self.data,
            val_data=self.val_data,
            out=out,
            model=model,
            max_epochs=epochs,
            dice_weight=self.dice_weight,
            val_fraction=self.val_fraction,
            augment=self.augment,
        )

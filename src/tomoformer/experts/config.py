"""Options of ``tomoformer experts fit`` (``configs/experts.yaml``); every field has a default that runs on a CPU."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tomoformer.data.datamodule import AugmentOptions
from tomoformer.errors import ConfigError
from tomoformer.experts.clustering import METHODS
from tomoformer.experts.model import COMBINES, DEFAULT_EXPERT
from tomoformer.finetune.policies import parse_policy
from tomoformer.tasks.train import TrainConfig


@dataclass
class ExpertsConfig:
    """Clustering, sub-models, combination and the two training stages (per-expert, then global)."""

    data: str = "data/train.zarr"
    val_data: str | None = None
    out: str = "runs/experts"
    # Clustering
    features: str = "stats"  # "stats" | "encoder" (pooled features of encoder_checkpoint's model)
    encoder_checkpoint: str | None = None
    clusterer: str = "kmeans"  # kmeans | dbscan | gmm
    k: int | None = None  # None: silhouette (kmeans) or BIC (gmm) over 2..k_max
    k_max: int = 4
    dbscan_eps: float | None = None  # None: 90th percentile of the distance to the min_samples-th neighbour
    dbscan_min_samples: int = 5
    # Sub-models
    partition: str = "cluster"  # "cluster" | "region"
    regions: list[int] = field(default_factory=lambda: [2, 2])
    halo: int = 4
    # Architectures, used in turn for cluster (or region) 0, 1, 2, ...; {"model": "init"} = init_checkpoint's.
    expert_models: list[dict[str, Any]] = field(default_factory=lambda: [dict(DEFAULT_EXPERT)])
    init_checkpoint: str | None = None
    policy: str = "full"  # fine-tuning policy of the sub-models initialised from init_checkpoint
    # With policy lora:R and every expert "init": the experts share one frozen backbone (one LoRA adapter and
    # one head each) instead of K full copies.
    share_backbone: bool = False
    epochs: int = 10  # per sub-model, over its own samples: the experts together cost `epochs` passes over the data
    # Combination and global fine-tuning
    combine: str = "soft"  # hard | soft | gate | fusion | attention
    film: bool = False
    aux: bool = False
    aux_weight: float = 0.1
    hidden: int = 16
    global_epochs: int = 0
    global_lr: float = 3e-4
    global_policy: str = "full"  # full | head | freeze:K, applied to every expert during the global stage
    # Optimisation and run
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    dice_weight: float = 1.0
    val_fraction: float = 0.1
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    seed: int = 0
    accelerator: str = "auto"
    precision: str | None = None
    progress: bool = True
    resume: bool = False
    overwrite: bool = False  # replace an earlier run in ``out`` (tomoformer.outputs.run_folder)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentOptions(**self.augment)
        checks = [
            (self.features in ("stats", "encoder"), f"features must be stats or encoder, got {self.features!r}"),
            (self.clusterer in METHODS, f"clusterer must be one of {', '.join(METHODS)}, got {self.clusterer!r}"),
            (self.partition in ("cluster", "region"), f"partition must be cluster or region, got {self.partition!r}"),
            (self.combine in COMBINES, f"combine must be one of {', '.join(COMBINES)}, got {self.combine!r}"),
            (self.k is None or self.k >= 1, "k must be >= 1"),
            (self.k_max >= 2, "k_max must be >= 2"),
            (len(self.regions) == 2 and min(self.regions) >= 1, "regions must be [rows, cols] >= 1"),
            (self.epochs >= 1 and self.global_epochs >= 0, "epochs >= 1 and global_epochs >= 0"),
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
        policy = parse_policy(self.policy)
        if self.share_backbone:
            if policy.kind != "lora" or not self.init_checkpoint:
                raise ConfigError("share_backbone needs init_checkpoint and policy lora:R")
            if any(spec["model"] != "init" for spec in self.expert_models):
                raise ConfigError("share_backbone needs every expert to be init_checkpoint's model ({'model': 'init'})")
            if parse_policy(self.global_policy).kind not in ("full", "head"):
                raise ConfigError("with share_backbone the backbone stays frozen: global_policy must be full or head")
        if parse_policy(self.global_policy).kind not in ("full", "head", "freeze"):
            raise ConfigError(f"global_policy must be full, head or freeze:K, got {self.global_policy!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExpertsConfig:
        """Build from a plain mapping (YAML), refusing unknown keys with one line."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown experts option(s): {', '.join(unknown)}")
        augment = values.get("augment")
        if isinstance(augment, dict):
            bad = sorted(set(augment) - {f.name for f in dataclasses.fields(AugmentOptions)})
            if bad:
                raise ConfigError(f"unknown augment option(s): {', '.join(bad)}")
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(f"bad experts option ({err})") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def train_config(self, out: str, epochs: int, lr: float, model: str = "experts") -> TrainConfig:
        """The :class:`TrainConfig` one training stage runs under (``fit_task`` reads its trainer options)."""
        return TrainConfig(
            data=self.data,
            val_data=self.val_data,
            out=out,
            model=model,
            max_epochs=epochs,
            batch_size=self.batch_size,
            lr=lr,
            weight_decay=self.weight_decay,
            warmup_fraction=self.warmup_fraction,
            dice_weight=self.dice_weight,
            val_fraction=self.val_fraction,
            augment=self.augment,
            seed=self.seed,
            accelerator=self.accelerator,
            precision=self.precision,
            resume=self.resume,
            progress=self.progress,
        )

"""The mapping task: signal sequences in, building-presence logits out (a LightningModule over any registry model)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

from tomoformer.models.registry import create_model


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of the building class; ``logits, target: [B, H, W]``."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    intersection = (prob * target).sum(1)
    union = prob.sum(1) + target.sum(1)
    return (1 - (2 * intersection + eps) / (union + eps)).mean()


def mapping_metrics(prefix: str) -> MetricCollection:
    """IoU, F1, precision, recall and accuracy of the building class."""
    return MetricCollection(
        {
            "iou": BinaryJaccardIndex(),
            "f1": BinaryF1Score(),
            "precision": BinaryPrecision(),
            "recall": BinaryRecall(),
            "accuracy": BinaryAccuracy(),
        },
        prefix=prefix,
    )


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.01) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class MappingTask(L.LightningModule):
    """Train any registered model with BCE + Dice, AdamW, warm-up and cosine decay."""

    def __init__(
        self,
        model: str = "tomoformer_tiny",
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        dice_weight: float = 1.0,
        data_attrs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Only plain values go into hparams so that checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.model: nn.Module = create_model(model, **(model_kwargs or {}))
        self.train_metrics = mapping_metrics("train_")
        self.val_metrics = mapping_metrics("val_")

    def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None = None) -> torch.Tensor:
        """``signals [B, T, H, W]`` dB, ``tx_pos [B, T, 3]`` cells → logits ``[B, H, W]``."""
        return self.model(signals, tx_pos)

    def loss(self, logits: torch.Tensor, buildings: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits.float(), buildings.float())
        return bce + self.hparams.dice_weight * dice_loss(logits, buildings)

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["signals"], batch.get("tx_pos"))
        loss = self.loss(logits, batch["buildings"])
        metrics = self.train_metrics if stage == "train" else self.val_metrics
        metrics.update(logits.detach().float(), batch["buildings"].long())
        batch_size = batch["signals"].shape[0]
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=batch_size)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")
        if batch_idx == 0:
            self._log_figure(batch)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> torch.Tensor:
        return torch.sigmoid(self(batch["signals"], batch.get("tx_pos")).float())

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        train_set = getattr(datamodule, "train_set", None)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(self.current_epoch)

    def _log_figure(self, batch: dict[str, torch.Tensor]) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if not hasattr(experiment, "add_figure") or self.trainer.sanity_checking:
            return
        from tomoformer.evaluation.figures import sample_figure

        with torch.no_grad():
            prob = torch.sigmoid(self(batch["signals"][:1], _first(batch.get("tx_pos")))[0].float())
        tx = batch.get("tx_pos")
        figure = sample_figure(
            signals=batch["signals"][0].cpu().numpy(),
            tx_pos=None if tx is None else tx[0].cpu().numpy(),
            buildings=batch["buildings"][0].cpu().numpy(),
            probabilities=prob.cpu().numpy(),
            title=f"epoch {self.current_epoch}",
        )
        experiment.add_figure("val_sample", figure, global_step=self.global_step)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: no weight decay on biases, norms, position embeddings and learned queries."""
        skip = set(getattr(self.model, "no_weight_decay", lambda: set())())
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.hparams.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(self.hparams.warmup_fraction * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _first(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x[:1]

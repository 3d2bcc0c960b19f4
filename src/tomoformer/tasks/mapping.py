"""The mapping task: signal sequences in, building-presence logits out (a LightningModule over any registry model)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinaryStatScores,
)
from torchmetrics.utilities.compute import _safe_divide

from tomoformer.models.protocol import forward_train_of
from tomoformer.models.registry import create_model
from tomoformer.tasks.base import BaseTask
from tomoformer.tasks.losses import bce_dice_loss


class BinaryIoU(BinaryStatScores):
    """IoU of the building class, tp / (tp + fp + fn) (0 when empty), from the counts F1, precision, recall and
    accuracy share. torchmetrics' BinaryJaccardIndex counts with ``torch.bincount``, which on CUDA reads the
    maximum back to the host at every update: a device synchronisation in every training step."""

    def compute(self) -> torch.Tensor:
        tp, fp, _, fn = self._final_state()
        return _safe_divide(tp, tp + fp + fn)


def mapping_metrics(prefix: str) -> MetricCollection:
    """IoU, F1, precision, recall and accuracy of the building class; update with ``(logits > 0, target)``.

    One shared set of counts (``compute_groups``), and no argument validation: it checks the target values
    with ``torch.unique`` and a Python ``if``, which waits for the device at every step.
    """
    names = ("iou", "f1", "precision", "recall", "accuracy")
    kinds = (BinaryIoU, BinaryF1Score, BinaryPrecision, BinaryRecall, BinaryAccuracy)
    metrics = {name: kind(validate_args=False) for name, kind in zip(names, kinds, strict=True)}
    return MetricCollection(metrics, prefix=prefix, compute_groups=[list(names)])


class MappingTask(BaseTask):
    """Train any registered model with BCE + Dice, AdamW, warm-up and cosine decay, under a fine-tuning ``policy``
    (``full`` when training from scratch; call :meth:`load_pretrained` to fine-tune)."""

    def __init__(
        self,
        model: str = "tomoformer_tiny",
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        dice_weight: float = 1.0,
        data_attrs: dict[str, Any] | None = None,
        policy: str = "full",
    ) -> None:
        super().__init__(policy)
        # Only plain values go into hparams so that checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.model: nn.Module = create_model(model, **(model_kwargs or {}))
        config = getattr(self.model, "cfg", None)
        if dataclasses.is_dataclass(config):
            # Record every option, not only the overrides, so a checkpoint rebuilds the same network even after
            # a preset's defaults change.
            self.hparams["model_kwargs"] = dataclasses.asdict(config)
        self.train_metrics = mapping_metrics("train_")
        self.val_metrics = mapping_metrics("val_")

    def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None = None) -> torch.Tensor:
        """``signals [B, T, H, W]`` dB, ``tx_pos [B, T, 3]`` cells → logits ``[B, H, W]``."""
        return self.model(signals, tx_pos)

    def loss(self, logits: torch.Tensor, buildings: torch.Tensor) -> torch.Tensor:
        return bce_dice_loss(logits, buildings, self.hparams.dice_weight)

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        forward_train = forward_train_of(self.model)
        if stage == "train" and forward_train is not None:
            logits, auxiliary = forward_train(batch["signals"], batch.get("tx_pos"))
        else:
            logits, auxiliary = self(batch["signals"], batch.get("tx_pos")), []
        loss = self.loss(logits, batch["buildings"])
        for weight, aux_logits in auxiliary:
            loss = loss + weight * self.loss(aux_logits, batch["buildings"])
        return self._log_step(loss, logits, batch, stage)

    def _log_step(self, loss: torch.Tensor, logits: torch.Tensor, batch: dict[str, torch.Tensor], stage: str) -> Any:
        """Update the stage's metrics from ``logits`` and log them with ``loss``; returns ``loss``."""
        metrics = self.train_metrics if stage == "train" else self.val_metrics
        # Boolean predictions (logit > 0, i.e. probability > 0.5): float ones make torchmetrics guess whether
        # they are logits or probabilities from their range, which differs between batches.
        metrics.update(logits.detach() > 0, batch["buildings"].long())
        batch_size = batch["signals"].shape[0]
        # sync_dist reduces over DDP ranks once, at the epoch end (on_step=False), so every rank monitors the same
        # value; it adds no synchronisation inside the step.
        self.log(
            f"{stage}_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True
        )
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


def _first(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x[:1]

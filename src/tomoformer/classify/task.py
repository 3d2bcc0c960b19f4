"""The classification task: images in, class logits out, any timm model under a fine-tuning policy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tomoformer.classify.data import MEAN, STD
from tomoformer.classify.models import create_classifier
from tomoformer.tasks.base import BaseTask

TASK_NAME = "classify"  # hyper_parameters["task"] of every classifier checkpoint


class ClassifyTask(BaseTask):
    """Cross-entropy training of ``timm.create_model(model, **model_kwargs)`` with AdamW, warm-up and cosine
    decay; the ``policy`` (see ``tasks.policy``) decides what trains once :meth:`apply_policy` is called (the base
    task owns the policy, the parameter groups, LP-FT and LoRA checkpoints).

    Checkpoints hold plain timm weights (LoRA adapters merged) under ``model.`` and the hyper-parameters needed
    to rebuild the model: ``model``, ``model_kwargs``, ``class_names`` and ``task = "classify"``.
    """

    def __init__(
        self,
        model: str,
        model_kwargs: dict[str, Any],
        class_names: list[str],
        policy: str = "full",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.05,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(policy)
        # Only plain values go into hparams so that checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.model: nn.Module = create_classifier(model, model_kwargs)
        k = len(class_names)
        self.train_acc = MulticlassAccuracy(num_classes=k, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=k, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=k, top_k=5, average="micro") if k >= 5 else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, C, H, W]`` in [0, 1] → logits ``[B, K]``."""
        return self.model((images - MEAN) / STD)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        size = images.shape[0]
        # sync_dist: one reduction over DDP ranks at the epoch end, so every rank monitors the same value.
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        accuracy = self.train_acc if stage == "train" else self.val_acc
        accuracy(logits.detach(), labels)
        self.log(f"{stage}_acc", accuracy, prog_bar=True, on_step=False, on_epoch=True, batch_size=size)
        if stage == "val" and self.val_top5 is not None:
            self.val_top5(logits, labels)
            self.log("val_top5", self.val_top5, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hyper_parameters"]["task"] = TASK_NAME
        super().on_save_checkpoint(checkpoint)

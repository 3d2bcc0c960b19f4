"""The classification task: images in, class logits out, any timm model under a fine-tuning policy."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from tomoformer.classify.data import MEAN, STD
from tomoformer.classify.models import create_classifier
from tomoformer.finetune.policies import Policy, apply_policy, layer_decay_groups, merge_lora, parse_policy
from tomoformer.finetune.run import LinearProbeThenFinetune
from tomoformer.tasks.mapping import adamw_warmup_cosine, weight_decay_groups

TASK_NAME = "classify"  # hyper_parameters["task"] of every classifier checkpoint


class ClassifyTask(L.LightningModule):
    """Cross-entropy training of ``timm.create_model(model, **model_kwargs)`` with AdamW, warm-up and cosine
    decay; the ``policy`` (see ``finetune.policies``) decides what trains once :meth:`apply_policy` is called.

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
        super().__init__()
        # Only plain values go into hparams so that checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.model: nn.Module = create_classifier(model, model_kwargs)
        self.policy: Policy = parse_policy(policy)
        k = len(class_names)
        self.train_acc = MulticlassAccuracy(num_classes=k, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=k, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=k, top_k=5, average="micro") if k >= 5 else None

    def apply_policy(self) -> ClassifyTask:
        """Freeze / adapt the model as the policy says (after pretrained weights are loaded)."""
        apply_policy(self.model, self.policy)
        return self

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

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: layer-wise LR decay for ``llrd``; otherwise no weight decay on biases, norms and
        ``no_weight_decay()`` names. Frozen parameters are left out, except under ``lp-ft`` (see below)."""
        skip = set(getattr(self.model, "no_weight_decay", lambda: set())())
        if self.policy.kind == "llrd":
            return layer_decay_groups(
                self.model, self.hparams.lr, float(self.policy.value or 1.0), self.hparams.weight_decay, skip
            )
        # lp-ft: the backbone joins the optimiser from the start; AdamW skips parameters without gradients
        # during the probe phase, so they neither move nor decay until the callback thaws them.
        return weight_decay_groups(self.model, self.hparams.weight_decay, include_frozen=self.policy.kind == "lp-ft")

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_warmup_cosine(self, self.parameter_groups())

    def configure_callbacks(self) -> list[L.Callback]:
        if self.policy.kind == "lp-ft":
            return [LinearProbeThenFinetune(float(self.policy.value or 0.5))]
        return []

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hyper_parameters"]["task"] = TASK_NAME
        if self.policy.kind != "lora":
            return
        # Merging into a copy at every save keeps best.ckpt (written mid-run) loadable as a plain timm model.
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("model.")]:
            del state[key]
        merged = merge_lora(copy.deepcopy(self.model))
        state.update({f"model.{k}": v.detach().clone() for k, v in merged.state_dict().items()})

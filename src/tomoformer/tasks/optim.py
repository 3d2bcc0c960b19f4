"""The optimiser every task uses: AdamW parameter groups (no decay on biases, norms and ``no_weight_decay()``
names) and a linear warm-up followed by cosine decay, stepped every batch."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """The parameter names ``model`` asks to keep out of weight decay (timm's ``no_weight_decay()`` hook)."""
    return set(getattr(model, "no_weight_decay", lambda: set())())


def weight_decay_groups(model: nn.Module, weight_decay: float, include_frozen: bool = False) -> list[dict[str, Any]]:
    """AdamW groups of ``model``'s trainable parameters (all of them with ``include_frozen``): ``weight_decay`` on
    weight matrices, none on biases, norms and the model's ``no_weight_decay()`` names."""
    skip = no_weight_decay_names(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad or include_frozen:
            (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def adamw_warmup_cosine(task: L.LightningModule, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Lightning's optimiser config: AdamW at ``task.hparams.lr``, linear warm-up over ``warmup_fraction`` of the
    steps, then cosine decay, stepped every batch."""
    optimizer = torch.optim.AdamW(groups, lr=task.hparams.lr)
    total = max(1, int(task.trainer.estimated_stepping_batches))
    warmup = max(1, int(task.hparams.warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total, warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.01) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

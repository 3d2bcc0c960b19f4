"""Losses of the mapping tasks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss of the building class; ``logits, target: [B, H, W]``."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    intersection = (prob * target).sum(1)
    union = prob.sum(1) + target.sum(1)
    return (1 - (2 * intersection + eps) / (union + eps)).mean()


def bce_dice_loss(logits: torch.Tensor, buildings: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy plus ``dice_weight`` x Dice; ``logits, buildings: [B, H, W]``."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), buildings.float())
    return bce + dice_weight * dice_loss(logits, buildings)

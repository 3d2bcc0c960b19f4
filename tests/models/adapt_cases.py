"""Tiny models and training helpers shared by the adaptation and policy tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tests.conftest import toy_arrays

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 4}
MODELS = {
    "tomoformer_tiny": TINY,
    "unet": {"base_channels": 8, "depth": 2},
    "seednet": {"d_model": 16, "num_heads": 2, "num_layers": 2, "dim_feedforward": 32},
}


class BatchNormNet(nn.Module):
    """A tiny timm-style model with BatchNorm, to check that frozen normalisation statistics never move."""

    def __init__(self, t: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(t, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(
            *(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)) for _ in range(2))
        )
        self.head = nn.Conv2d(8, 1, 1)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^stem", "blocks": r"^blocks\.(\d+)"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, signals: torch.Tensor, tx_pos: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.blocks(self.stem((signals + 80) / 20)))[:, 0]


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    arrays = toy_arrays(n=4, t=4, size=16, seed=seed)
    return (
        torch.from_numpy(arrays["signals"]),
        torch.from_numpy(arrays["tx_pos"]),
        torch.from_numpy(arrays["buildings"]).float(),
    )


def train_steps(model: nn.Module, steps: int = 3, lr: float = 1e-2) -> None:
    """A few AdamW steps in train mode on the toy data; only requires_grad parameters go to the optimiser."""
    signals, tx_pos, target = batch()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    model.train()
    for _ in range(steps):
        loss = nn.functional.binary_cross_entropy_with_logits(model(signals, tx_pos), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

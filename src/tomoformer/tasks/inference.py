"""Batched inference of building probabilities over a whole dataset."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tomoformer.data.datamodule import SignalMapDataset, collate


def resolve_device(device: str | None = None) -> torch.device:
    """``"auto"``/None → CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    dataset: SignalMapDataset,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Building probabilities ``[N, H, W]`` float32 for every sample of ``dataset`` (in its order)."""
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    _, _, h, w = dataset.source.shape
    out = np.empty((len(dataset), h, w), dtype=np.float32)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    position = 0
    batches = _progress(loader, "predict") if progress else loader
    for batch in batches:
        signals = batch["signals"].to(device, non_blocking=True)
        tx_pos = batch["tx_pos"].to(device, non_blocking=True) if "tx_pos" in batch else None
        with autocast:
            logits = model(signals, tx_pos)
        prob = torch.sigmoid(logits.float()).cpu().numpy()
        out[position : position + len(prob)] = prob
        position += len(prob)
    return out


def _progress(iterable, description: str):
    from rich.progress import track

    return track(iterable, description=description, transient=True)

"""Batched inference of building probabilities over a whole dataset."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tomoformer.data.datamodule import SignalMapDataset, collate
from tomoformer.errors import ConfigError
from tomoformer.tasks.guards import check_finite_probabilities
from tomoformer.validation import resolve_device


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    dataset: SignalMapDataset,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    progress: bool = False,
    logits: bool = False,
) -> np.ndarray:
    """Building probabilities ``[N, H, W]`` float32 for every sample of ``dataset`` (in its order); with
    ``logits`` the model's logits instead (what a temperature is fitted on)."""
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    model = model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    _, _, h, w = dataset.source.shape
    out = np.empty((len(dataset), h, w), dtype=np.float32)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    position = 0
    logits_out = logits
    batches = _progress(loader, "predict") if progress else loader
    for batch in batches:
        signals = batch["signals"].to(device, non_blocking=True)
        tx_pos = batch["tx_pos"].to(device, non_blocking=True) if "tx_pos" in batch else None
        with autocast:
            logits = model(signals, tx_pos)
        prob = torch.sigmoid(logits.float()).cpu().numpy()
        check_finite_probabilities(prob, dataset, position)
        out[position : position + len(prob)] = logits.float().cpu().numpy() if logits_out else prob
        position += len(prob)
    return out


def _progress(iterable, description: str):
    from rich.progress import track

    return track(iterable, description=description, transient=True)


def predict_dataset(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    checkpoint: str | None = None,
    onnx: str | None = None,
    threshold: float = 0.5,
    png: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    device: str | None = None,
    uncertainty: bool = False,
) -> int:
    """``tomoformer predict``: building probabilities float32 [N, H, W] and maps uint8 [N, H, W] (probability >
    ``threshold``) of every sample of ``data`` by a ``checkpoint`` (its fitted temperature applied) or an ``onnx``
    export, written to ``out`` (with one picture per sample in the folder ``png`` if given). With ``uncertainty``
    (checkpoints only) also ``uncertainty`` float32 [N, H, W]: the binary entropy in bits of the probability
    averaged over test-time views (:mod:`tomoformer.tasks.uncertainty`). Returns the number of maps."""
    from tomoformer.checkpoint import load_checkpoint
    from tomoformer.data.format import open_dataset, write_dataset

    if uncertainty and onnx:
        raise ConfigError("--uncertainty needs a --checkpoint or --pretrained model, not --onnx")
    if onnx:
        from tomoformer.export import OnnxPredictor

        predictor = OnnxPredictor(onnx)
        name = predictor.model_name
    else:
        loaded = load_checkpoint(checkpoint)
        name = loaded.name
    with open_dataset(data) as source:
        dataset = SignalMapDataset(source)
        if onnx:
            probabilities = predictor.predict_probabilities(dataset, batch_size=batch_size)
            check_finite_probabilities(probabilities, dataset)
        else:
            probabilities = predict_probabilities(
                loaded.calibrated(), dataset, batch_size=batch_size, device=device, progress=True
            )
        arrays = {"probabilities": probabilities, "buildings": (probabilities > threshold).astype(np.uint8)}
        if uncertainty:
            from tomoformer.tasks.uncertainty import DEFAULT_FRAME_FRACTION, predict_with_uncertainty

            _, arrays["uncertainty"] = predict_with_uncertainty(
                loaded.calibrated(),
                dataset,
                batch_size=batch_size,
                device=device,
                frame_fraction=DEFAULT_FRAME_FRACTION,
            )
        attrs = {
            "source": f"tomoformer predict {name}",
            "checkpoint": str(checkpoint or onnx),
            "threshold": threshold,
            "input": str(data),
        }
        if not onnx:
            attrs["temperature"] = loaded.temperature
        write_dataset(out, arrays, attrs)
        if png:
            _write_pngs(Path(png), dataset, probabilities, arrays.get("uncertainty"))
    return len(probabilities)


def _write_pngs(
    folder: Path, dataset: SignalMapDataset, probabilities: np.ndarray, uncertainty: np.ndarray | None = None
) -> None:
    from tomoformer.evaluation.figures import sample_figure, save_figure

    for i in range(len(dataset)):
        raw = dataset.raw(i)
        figure = sample_figure(
            signals=raw["signals"].astype(np.float32),
            tx_pos=raw.get("tx_pos"),
            buildings=raw.get("buildings"),
            probabilities=probabilities[i],
            title=f"sample {int(dataset.indices[i])}",
            uncertainty=uncertainty[i] if uncertainty is not None else None,
        )
        save_figure(figure, folder / f"sample_{int(dataset.indices[i]):05d}.png")

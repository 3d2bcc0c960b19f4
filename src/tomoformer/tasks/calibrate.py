"""Temperature scaling of a checkpoint on validation data: at the end of training, or later for any checkpoint.

The fitted record is stored in the checkpoint as ``hyper_parameters["calibration"]``::

    {"method": "temperature", "temperature": T, "fitted_on": ..., "n_samples": ..,
     "nll_before": .., "nll_after": .., "ece_before": .., "ece_after": ..}

and :meth:`tomoformer.checkpoint.LoadedModel.calibrated` divides the logits by ``T`` (predict, evaluate, plan).
Checkpoints without the record load with ``T = 1``. Temperature scaling never moves a probability across 0.5,
so the building maps at the default threshold stay exactly as they were.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoformer.data.datamodule import SignalMapDataset
from tomoformer.evaluation.calibration import calibration_metrics, fit_temperature
from tomoformer.tasks.inference import predict_probabilities


def fit_calibration(
    model: Any, dataset: SignalMapDataset, batch_size: int = 8, device: str | None = None, fitted_on: str = ""
) -> dict[str, Any]:
    """The calibration record of ``model`` (uncalibrated logits) fitted on the labelled ``dataset``."""
    logits = predict_probabilities(model, dataset, batch_size=batch_size, device=device, logits=True)
    truth = dataset.cache["buildings"] if dataset.cache else dataset.source.read("buildings", dataset.indices)
    temperature = fit_temperature(logits, truth)
    before = calibration_metrics(_sigmoid(logits), truth)
    after = calibration_metrics(_sigmoid(logits / temperature), truth)
    return {
        "method": "temperature",
        "temperature": round(temperature, 6),
        "fitted_on": fitted_on,
        "n_samples": len(dataset),
        "nll_before": round(before["nll"], 6),
        "nll_after": round(after["nll"], 6),
        "ece_before": round(before["ece"], 6),
        "ece_after": round(after["ece"], 6),
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float64)))).astype(np.float32)


def calibrate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    """``tomoformer calibrate``: fit the temperature of ``checkpoint`` on labelled validation ``data`` and write
    the checkpoint with it to ``out`` (same weights; ``.ckpt`` or ``.safetensors`` by suffix). Returns the record."""
    from tomoformer.checkpoint import load_checkpoint, read_checkpoint, write_with_hparams
    from tomoformer.data.format import open_dataset

    loaded = load_checkpoint(checkpoint)
    with open_dataset(data, require_buildings=True) as source:
        record = fit_calibration(loaded.model, SignalMapDataset(source), batch_size, device, fitted_on=str(data))
    hparams = {**read_checkpoint(checkpoint)["hyper_parameters"], "calibration": record}
    write_with_hparams(checkpoint, out, hparams)
    return record


def calibrate_after_training(checkpoint: Path, val_set: Any, batch_size: int = 8) -> dict[str, Any] | None:
    """Fit the temperature of the run's best ``checkpoint`` on its validation split and store it in place.

    ``val_set``: the data module's validation set (a :class:`SignalMapDataset` or a device-resident set with
    ``source`` and ``indices``). Returns the record, or None when there is nothing to calibrate (no checkpoint, no
    labelled validation samples).
    """
    from tomoformer.checkpoint import load_checkpoint, read_checkpoint, write_with_hparams

    if not Path(checkpoint).is_file() or val_set is None:
        return None
    if not isinstance(val_set, SignalMapDataset):
        source, indices = getattr(val_set, "source", None), getattr(val_set, "indices", None)
        if source is None:
            return None
        val_set = SignalMapDataset(source, None if indices is None else np.asarray(indices))
    if len(val_set) == 0 or val_set.source.buildings is None:
        return None
    loaded = load_checkpoint(checkpoint)
    record = fit_calibration(loaded.model, val_set, batch_size, fitted_on="validation split")
    hparams = {**read_checkpoint(checkpoint)["hyper_parameters"], "calibration": record}
    write_with_hparams(checkpoint, checkpoint, hparams)
    print(
        f"calibrated {Path(checkpoint).name} on the validation split: temperature {record['temperature']:.3f} "
        f"(NLL {record['nll_before']:.4f} -> {record['nll_after']:.4f}, "
        f"ECE {record['ece_before']:.4f} -> {record['ece_after']:.4f})"
    )
    return record

"""Load a classifier checkpoint, score it on labelled images, write metrics.json and a confusion-matrix figure."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tomoformer.checkpoint import build_with_weights, read_checkpoint
from tomoformer.classify.data import MEAN, STD, ImageSet, match_classes
from tomoformer.classify.models import create_classifier
from tomoformer.classify.task import TASK_NAME
from tomoformer.errors import CheckpointError, DataError


@dataclass
class LoadedClassifier:
    """A timm classifier rebuilt from a checkpoint (eval mode, CPU) with its class names."""

    model: nn.Module
    name: str
    model_kwargs: dict[str, Any]
    class_names: list[str]
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]

    @property
    def image_size(self) -> tuple[int, int] | None:
        size = self.model_kwargs.get("img_size")
        return None if size is None else (int(size[0]), int(size[1]))

    @property
    def in_chans(self) -> int:
        return int(self.model_kwargs.get("in_chans", 3))


def load_classifier(path: str | Path) -> LoadedClassifier:
    """Rebuild the classifier in ``path`` (read with ``weights_only=True``); a mapping checkpoint is refused."""
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint["hyper_parameters"])
    name = hparams["model"]
    if hparams.get("task") != TASK_NAME:
        raise CheckpointError(
            f"{path}: holds the building-mapping model {name!r}, not an image classifier "
            "(make one with `tomoformer classify pretrain`)"
        )
    kwargs = dict(hparams.get("model_kwargs") or {})
    model = build_with_weights(path, name, lambda: create_classifier(name, kwargs), checkpoint["state_dict"])
    model.eval()
    return LoadedClassifier(model, name, kwargs, list(hparams["class_names"]), hparams, model.state_dict())


def prepare_images(images: ImageSet, loaded: LoadedClassifier, what: str) -> ImageSet:
    """``images`` with the model's channel count and class indices, after checking their size."""
    if loaded.image_size is not None and images.image_size != loaded.image_size:
        h, w = loaded.image_size
        raise DataError(f"{what}: images are {images.image_size[0]}x{images.image_size[1]}, the model takes {h}x{w}")
    return match_classes(images, loaded.class_names, what).with_channels(loaded.in_chans)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits ``[N, K]`` float32 of ``images [N, C, H, W]`` in [0, 1], on the model's device, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = [model((batch.to(device) - MEAN) / STD).float().cpu() for batch in images.split(batch_size)]
    model.train(was_training)
    return torch.cat(chunks)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """``top1`` (and ``top5`` with >= 5 classes) accuracy, per-class accuracy (recall, for classes present) and
    the confusion matrix (rows: true class, columns: predicted) of ``logits [N, K]`` against ``labels [N]``."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import confusion_matrix, top_k_accuracy_score

    k = len(class_names)
    truth = labels.numpy()
    predicted = logits.argmax(1).numpy()
    matrix = confusion_matrix(truth, predicted, labels=np.arange(k))
    present = matrix.sum(1) > 0
    metrics: dict[str, Any] = {
        "n_images": len(truth),
        "top1": float((predicted == truth).mean()),
        "per_class_accuracy": {class_names[i]: float(matrix[i, i] / matrix[i].sum()) for i in range(k) if present[i]},
        "class_names": class_names,
        "confusion_matrix": matrix,
    }
    if k >= 5:
        scores = logits.softmax(1).numpy()
        with warnings.catch_warnings():  # with exactly 5 classes top-5 is 1 by definition; sklearn warns
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            metrics["top5"] = float(top_k_accuracy_score(truth, scores, k=5, labels=np.arange(k)))
    return metrics


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str = ""):  # -> matplotlib Figure
    """Counts of (true, predicted) classes, one cell each; cells are annotated up to 20 classes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    k = len(class_names)
    side = min(12.0, 2.0 + 0.45 * k)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    display = ConfusionMatrixDisplay(matrix, display_labels=class_names)
    display.plot(ax=ax, include_values=k <= 20, cmap="Blues", colorbar=True, xticks_rotation="vertical")
    ax.set_title(title, fontsize=10)
    return fig


def write_evaluation(metrics: dict[str, Any], out: str | Path, name: str = "metrics.json") -> Path:
    """``out/name`` (metrics as JSON) and ``out/figures/confusion_matrix.png``; returns the JSON path."""
    from tomoformer.evaluation.figures import save_figure
    from tomoformer.evaluation.report import write_metrics_json

    out = Path(out)
    title = f"top-1 {metrics['top1']:.3f} on {metrics['n_images']} images"
    save_figure(
        confusion_figure(metrics["confusion_matrix"], metrics["class_names"], title),
        out / "figures" / "confusion_matrix.png",
    )
    return write_metrics_json(out / name, metrics)


def evaluate_checkpoint(
    checkpoint: str | Path,
    images: ImageSet,
    out: str | Path,
    what: str = "data",
    batch_size: int = 256,
    name: str = "metrics.json",
) -> dict[str, Any]:
    """Score ``checkpoint`` on ``images`` (on the GPU when there is one); write ``out/name`` and
    ``out/figures/confusion_matrix.png``."""
    loaded = load_classifier(checkpoint)
    images = prepare_images(images, loaded, what)
    model = loaded.model.to("cuda" if torch.cuda.is_available() else "cpu")
    logits = predict_logits(model, images.images, batch_size)
    metrics = classification_metrics(logits, images.labels, loaded.class_names)
    metrics["checkpoint"] = str(checkpoint)
    write_evaluation(metrics, out, name)
    return metrics

"""Scoring a classifier: top-1/top-5, per-class accuracy, confusion matrix, and refusing foreign checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tomoformer.classify.evaluate import classification_metrics, load_classifier, write_evaluation
from tomoformer.errors import CheckpointError


def test_metrics_on_known_predictions(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(6)]
    labels = torch.tensor([0, 0, 1, 2, 3, 5])
    logits = torch.zeros(6, 6)
    ranking = [[0, 1, 2, 3, 4, 5], [1, 0, 2, 3, 4, 5], [1, 0, 2, 3, 4, 5], [2, 0, 1, 3, 4, 5]]
    ranking += [[3, 0, 1, 2, 4, 5], [0, 1, 2, 3, 4, 5]]  # last: true class 5 ranked last
    for i, order in enumerate(ranking):
        logits[i, order] = torch.arange(6, 0, -1).float()
    metrics = classification_metrics(logits, labels, names)
    assert metrics["top1"] == pytest.approx(4 / 6)  # rows 1 and 5 are wrong
    assert metrics["top5"] == pytest.approx(5 / 6)
    assert metrics["per_class_accuracy"] == {"c0": 0.5, "c1": 1.0, "c2": 1.0, "c3": 1.0, "c5": 0.0}  # no c4
    matrix = metrics["confusion_matrix"]
    assert matrix.shape == (6, 6) and matrix.sum() == 6 and matrix[0, 1] == 1 and matrix[5, 0] == 1
    write_evaluation(metrics, tmp_path)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["top1"] == pytest.approx(4 / 6) and np.array_equal(stored["confusion_matrix"], matrix)
    assert (tmp_path / "figures" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_no_top5_with_fewer_than_five_classes() -> None:
    metrics = classification_metrics(torch.eye(3), torch.tensor([0, 1, 1]), ["a", "b", "c"])
    assert "top5" not in metrics and metrics["top1"] == pytest.approx(2 / 3)


def test_mapping_checkpoint_is_refused(tmp_path: Path) -> None:
    from tomoformer.checkpoint import save_checkpoint
    from tomoformer.models.registry import create_model

    path = save_checkpoint(tmp_path / "map.ckpt", create_model("threshold"), {"model": "threshold"})
    with pytest.raises(CheckpointError, match="building-mapping model 'threshold', not an image classifier"):
        load_classifier(path)

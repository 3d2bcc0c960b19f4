import numpy as np
import pytest
import torch

from tomoformer.evaluation.metrics import (
    BinaryCounts,
    MetricAccumulator,
    best_threshold,
    evaluate_predictions,
)


def test_counts_match_hand_computed_values():
    pred = np.array([[[1, 1, 0, 0], [1, 0, 0, 0]]], dtype=bool)
    truth = np.array([[[1, 0, 1, 0], [1, 0, 0, 0]]], dtype=np.uint8)
    counts = BinaryCounts.from_masks(pred, truth)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (2, 1, 1, 4)
    m = counts.metrics()
    assert m["iou"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)


def test_counts_add_up_over_batches_and_accept_tensors():
    rng = np.random.default_rng(0)
    pred, truth = rng.random((6, 8, 8)) > 0.5, rng.random((6, 8, 8)) > 0.3
    whole = BinaryCounts.from_masks(pred, truth)
    parts = BinaryCounts().update(torch.from_numpy(pred[:2]), torch.from_numpy(truth[:2]))
    parts = parts + BinaryCounts.from_masks(pred[2:], truth[2:])
    assert parts == whole
    assert whole.total == pred.size


def test_zero_denominators():
    empty = np.zeros((1, 4, 4), dtype=bool)
    assert BinaryCounts.from_masks(empty, empty).metrics() == {
        "iou": 1.0,
        "f1": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "accuracy": 1.0,
    }
    missed = BinaryCounts.from_masks(empty, ~empty).metrics()  # predicts nothing, all buildings
    assert missed["iou"] == 0.0 and missed["f1"] == 0.0 and missed["recall"] == 0.0
    assert missed["precision"] == 1.0  # no false alarm was raised
    with pytest.raises(ValueError, match="shape"):
        BinaryCounts.from_masks(empty, np.zeros((1, 4, 5), dtype=bool))


def test_evaluate_predictions_threshold_groups_and_streaming():
    prob = np.array([[[0.9, 0.6], [0.4, 0.1]], [[0.7, 0.2], [0.8, 0.3]], [[0.1, 0.1], [0.1, 0.1]]])
    truth = np.array([[[1, 0], [1, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 0]]], dtype=np.uint8)
    groups = np.array([1, 0, 1])
    out = evaluate_predictions(prob, truth, groups=groups, group_names=["dense", "suburb"])
    # sample 0: tp 1, fp 1, fn 1, tn 1; sample 1: tp 1, fp 1, tn 2; sample 2: tn 4.
    assert out["counts"] == {"tp": 2, "fp": 2, "fn": 1, "tn": 7}
    assert out["iou"] == pytest.approx(2 / 5)
    assert out["n_samples"] == 3
    assert out["iou_per_sample"] == pytest.approx((1 / 3 + 1 / 2 + 1.0) / 3)
    assert set(out["per_group"]) == {"dense", "suburb"}
    assert out["per_group"]["dense"]["iou"] == pytest.approx(1 / 2)
    assert out["per_group"]["suburb"]["iou"] == pytest.approx(1 / 3)
    assert out["per_group"]["suburb"]["n_samples"] == 2
    # A higher threshold drops the 0.6 and 0.7 predictions.
    assert evaluate_predictions(prob, truth, threshold=0.75)["counts"]["tp"] == 1
    assert "per_group" not in evaluate_predictions(prob, truth)

    acc = MetricAccumulator(group_names=["dense", "suburb"])
    acc.update(torch.from_numpy(prob[:1]), torch.from_numpy(truth[:1]), torch.tensor([1]))
    acc.update(prob[1:], truth[1:], groups[1:])
    assert acc.compute() == out


def test_evaluate_predictions_errors():
    prob, truth = np.zeros((2, 4, 4)), np.zeros((2, 4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        evaluate_predictions(prob, truth[:1])
    with pytest.raises(ValueError, match="out of range"):
        evaluate_predictions(prob, truth, groups=[0, 2], group_names=["a", "b"])
    with pytest.raises(ValueError, match="entries"):
        evaluate_predictions(prob, truth, groups=[0])


def test_best_threshold_finds_planted_threshold():
    rng = np.random.default_rng(1)
    prob = rng.random((4, 32, 32))
    for planted in (0.23, 0.5, 0.71):
        assert best_threshold(prob, prob > planted) == pytest.approx(planted)
    assert best_threshold(torch.from_numpy(prob), torch.from_numpy(prob > 0.3), thresholds=[0.1, 0.3]) == 0.3


def test_best_threshold_tie_prefers_half():
    prob = np.array([0.05, 0.95])
    assert best_threshold(prob, np.array([0, 1])) == 0.5

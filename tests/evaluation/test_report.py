import base64
import json
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from tomoformer.evaluation.figures import sample_figure
from tomoformer.evaluation.metrics import evaluate_predictions
from tomoformer.evaluation.report import write_metrics_json, write_report


@pytest.fixture
def metrics():
    rng = np.random.default_rng(0)
    truth = (rng.random((4, 8, 8)) > 0.5).astype(np.uint8)
    groups = np.array([0, 1, 0, 1])
    good = np.clip(truth + 0.3 * rng.standard_normal(truth.shape), 0, 1)
    bad = rng.random(truth.shape)
    return {
        name: evaluate_predictions(p, truth, groups=groups, group_names=["dense", "<park>"])
        for name, p in (("tomoformer_tiny", good), ("threshold", bad))
    }


def _figure():
    return sample_figure(torch.randn(2, 8, 8), None, torch.ones(8, 8), torch.rand(8, 8))


def _rows(table_html):
    return table_html.split("<tbody>")[1].split("</tbody>")[0].count("<tr>")


def test_report_tables_and_images(tmp_path, metrics):
    path = write_report(tmp_path / "report.html", "Two models", metrics, [("sample 0", _figure())], notes="a<b")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    tables = text.split("<table>")[1:]
    assert _rows(tables[0]) == 2  # one row per model
    assert "<td>tomoformer_tiny</td>" in tables[0] and "<td>threshold</td>" in tables[0]
    # The better model holds the best IoU, highlighted.
    best = f'<td class="best">{metrics["tomoformer_tiny"]["iou"]:.4f}</td>'
    assert best in tables[0]
    # Per group: an IoU overview plus one table per group; names escaped.
    assert len(tables) == 1 + 1 + 2
    assert "&lt;park&gt;" in text and "<park>" not in text
    assert "a&lt;b" in text
    encoded = text.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(encoded)[:4] == b"\x89PNG"
    assert "sample 0" in text


def test_report_single_model_without_groups(tmp_path):
    m = evaluate_predictions(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))
    text = write_report(tmp_path / "r.html", "one", {"unet": m}, None).read_text()
    assert text.count("<table>") == 1 and 'class="best"' not in text and "data:image" not in text


def test_report_is_atomic(tmp_path, metrics):
    path = tmp_path / "report.html"

    def broken(*args, **kwargs):
        raise RuntimeError("rendering failed")

    fig = Figure()
    fig.savefig = broken
    with pytest.raises(RuntimeError, match="rendering failed"):
        write_report(path, "crash", metrics, [("ok", _figure()), ("broken", fig)])
    assert list(tmp_path.iterdir()) == []  # neither the report nor a temporary file
    # An earlier report stays intact when a rewrite fails.
    write_report(path, "first", metrics)
    before = path.read_text()
    with pytest.raises(RuntimeError):
        write_report(path, "second", metrics, [("broken", fig)])
    assert path.read_text() == before and len(list(tmp_path.iterdir())) == 1


def test_metrics_json(tmp_path, metrics):
    data = {"b": {"x": 1 / 3, "nan": math.nan, "t": torch.tensor(0.5), "n": np.int64(3)}, "a": metrics}
    path = write_metrics_json(tmp_path / "m.json", data)
    text = path.read_text()
    loaded = json.loads(text)
    assert list(loaded) == ["a", "b"]
    assert loaded["b"] == {"n": 3, "nan": None, "t": 0.5, "x": 0.333333}
    assert loaded["a"]["threshold"]["per_group"]["dense"]["n_samples"] == 2
    assert "NaN" not in text

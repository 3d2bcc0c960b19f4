"""Evaluation reports: one self-contained HTML file (figures embedded) and a metrics JSON file."""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from tomoformer import __version__
from tomoformer.evaluation.calibration import CALIBRATION_NAMES
from tomoformer.evaluation.figures import figure_png
from tomoformer.evaluation.metrics import METRIC_NAMES
from tomoformer.io import atomic_path

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; } h3 { font-size: 1.05em; margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { padding: .3em .8em; border-bottom: 1px solid #e3e3e3; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child { text-align: left; }
td.best { font-weight: 700; background: #e6f4ea; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; margin-top: .3em; }
.notes { white-space: pre-wrap; background: #fafafa; border-left: 3px solid #ccc; padding: .6em 1em; }
footer { color: #888; font-size: .8em; margin-top: 3em; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool | int | np.integer):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    return "–" if not math.isfinite(v) else f"{v:.4f}"


def _best(rows: Mapping[str, Mapping[str, Any]], column: str) -> float | None:
    """Best finite value of ``column`` over rows: the lowest for calibration errors, else the highest."""
    values = [float(r[column]) for r in rows.values() if _is_number(r.get(column))]
    if not values:
        return None
    return min(values) if column in CALIBRATION_NAMES else max(values)


def _is_best(column: str, value: Any, best: float | None) -> bool:
    if best is None or not _is_number(value):
        return False
    if column in CALIBRATION_NAMES:
        return float(value) <= best + 1e-12
    return float(value) >= best - 1e-12


def _is_number(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _metrics_table(rows: Mapping[str, Mapping[str, Any]], first_header: str = "model") -> str:
    """One row per entry of ``rows``, columns = the scores present plus n_samples; best per column marked
    (only when there is something to compare)."""
    columns = [
        c for c in (*METRIC_NAMES, *CALIBRATION_NAMES, "uncertainty_auroc") if any(c in r for r in rows.values())
    ]
    best = {c: _best(rows, c) for c in columns} if len(rows) > 1 else {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [first_header, *columns, "n_samples"])
    body = []
    for name, r in rows.items():
        cells = [f"<td>{html.escape(str(name))}</td>"]
        for c in columns:
            v = r.get(c)
            is_best = _is_best(c, v, best.get(c))
            cells.append(f'<td class="best">{_fmt(v)}</td>' if is_best else f"<td>{_fmt(v)}</td>")
        cells.append(f"<td>{_fmt(r.get('n_samples'))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n"


def _group_sections(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """Per group: an IoU overview (groups × models) and one table per group comparing models."""
    groups: list[str] = []
    for m in metrics.values():
        for g in m.get("per_group") or {}:
            if g not in groups:
                groups.append(g)
    if not groups:
        return ""
    parts = ["<h2>Per group</h2>\n<h3>IoU by group</h3>\n"]
    models = list(metrics)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["group", *models])
    body = []
    for g in groups:
        row = {m: (metrics[m].get("per_group") or {}).get(g, {}).get("iou") for m in models}
        finite = [float(v) for v in row.values() if _is_number(v)]
        top = max(finite) if finite and len(models) > 1 else None
        cells = [f"<td>{html.escape(g)}</td>"]
        for v in row.values():
            is_best = top is not None and _is_number(v) and float(v) >= top - 1e-12
            cells.append(f'<td class="best">{_fmt(v)}</td>' if is_best else f"<td>{_fmt(v)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n")
    for g in groups:
        rows = {m: metrics[m]["per_group"][g] for m in models if g in (metrics[m].get("per_group") or {})}
        parts.append(f"<h3>{html.escape(g)}</h3>\n{_metrics_table(rows)}")
    return "".join(parts)


def write_report(
    path: str | os.PathLike[str],
    title: str,
    metrics: Mapping[str, Mapping[str, Any]],
    figures: Sequence[tuple[str, Figure]] | None = None,
    notes: str | None = None,
) -> Path:
    """Write a self-contained HTML report atomically and return its path.

    Args:
        path: the ``.html`` file to write.
        title: page title and heading.
        metrics: model name -> metrics dict as returned by ``evaluate_predictions`` (several models are
            compared side by side; the best value of every column is highlighted).
        figures: ``(caption, figure)`` pairs, embedded as base64 PNG.
        notes: free text shown verbatim (escaped) under the title.

    Figures are rendered while the temporary file is written: if one fails, no report appears at ``path``.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(
            f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n"
        )
        if notes:
            f.write(f'<div class="notes">{html.escape(notes)}</div>\n')
        if metrics:
            f.write(f"<h2>Metrics</h2>\n{_metrics_table(metrics)}")
            thresholds = {_fmt(m.get("threshold")) for m in metrics.values() if "threshold" in m}
            if len(thresholds) == 1:
                f.write(f"<p>Pixel scores of the building class at threshold {thresholds.pop()}.</p>\n")
            if any("ece" in m for m in metrics.values()):
                f.write(
                    "<p>Calibration (lower is better): ece = expected calibration error over 15 probability bins, "
                    "brier = mean squared error of the probability, nll = mean cross-entropy in nats.</p>\n"
                )
            f.write(_group_sections(metrics))
        if figures:
            f.write("<h2>Figures</h2>\n")
            for caption, fig in figures:
                data = base64.b64encode(figure_png(fig)).decode("ascii")
                alt = html.escape(caption, quote=True)
                f.write(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>\n"
                )
        f.write(f"<footer>tomoformer {html.escape(__version__)}</footer>\n</body>\n</html>\n")
    return Path(path)


def _jsonable(x: Any, digits: int) -> Any:
    """Plain JSON values: floats rounded to ``digits`` decimals, NaN/inf as null, arrays as lists."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v, digits) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist(), digits)
    if isinstance(x, list | tuple):
        return [_jsonable(v, digits) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        v = float(x)
        return round(v, digits) if math.isfinite(v) else None
    if isinstance(x, Path):
        return str(x)
    return x


def write_metrics_json(path: str | os.PathLike[str], metrics: Mapping[str, Any], digits: int = 6) -> Path:
    """Write ``metrics`` as JSON atomically: sorted keys, floats rounded to ``digits`` decimals, NaN: null."""
    text = json.dumps(_jsonable(metrics, digits), indent=2, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)

"""Figures of inputs, predictions and training curves.

Built on ``matplotlib.figure.Figure`` with an Agg canvas, never on pyplot: nothing is registered in
pyplot's global figure list, so figures are freed with their last reference and no GUI backend is touched.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tomoformer.errors import TomoFormerError
from tomoformer.evaluation.metrics import ArrayLike, BinaryCounts, to_numpy
from tomoformer.io import atomic_path

MISSING_COLOUR = "#ff66cc"  # NaN cells: a pink that no sequential colour map below contains
# Error map categories: true negative, true positive, false positive, false negative.
ERROR_COLOURS = ("#ffffff", "#9e9e9e", "#e6550d", "#3182bd")
ERROR_CMAP = ListedColormap(ERROR_COLOURS)
PANEL_INCHES = 2.4
DPI = 100


def _new_figure(n_rows: int, n_cols: int) -> Figure:
    fig = Figure(figsize=(PANEL_INCHES * n_cols, PANEL_INCHES * n_rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _signal_cmap():
    return colormaps["viridis"].with_extremes(bad=MISSING_COLOUR)


def _db_range(signals: np.ndarray) -> tuple[float, float]:
    """Robust colour limits (2nd-98th percentile of measured values) shared by all frames."""
    valid = signals[np.isfinite(signals)]
    if valid.size == 0:
        return -1.0, 0.0
    lo, hi = np.percentile(valid, [2, 98])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 1, float(lo) + 1)


def _frame_indices(T: int, n: int = 4) -> list[int]:
    """Up to ``n`` evenly spaced frame indices, first and last included."""
    return sorted({round(float(i)) for i in np.linspace(0, T - 1, min(n, T))})


def _clean_axes(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _mark_tx(ax: Axes, tx: np.ndarray | None, shape: tuple[int, int], colour: str = "#ff2020") -> None:
    """Star at the transmitter (row, col in cells) when it lies inside the grid or within 15% of it."""
    if tx is None or not np.all(np.isfinite(tx[:2])):
        return
    H, W = shape
    row, col = float(tx[0]), float(tx[1])
    mr, mc = 0.15 * H + 1, 0.15 * W + 1
    if -0.5 - mr <= row <= H - 0.5 + mr and -0.5 - mc <= col <= W - 0.5 + mc:
        ax.plot(col, row, marker="*", markersize=12, color=colour, markeredgecolor="black", clip_on=False)


def _show_signal(ax: Axes, frame: np.ndarray, vmin: float, vmax: float, tx: np.ndarray | None, title: str) -> None:
    ax.imshow(np.ma.masked_invalid(frame), cmap=_signal_cmap(), vmin=vmin, vmax=vmax, interpolation="nearest")
    H, W = frame.shape
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    _mark_tx(ax, tx, frame.shape)
    ax.set_title(title, fontsize=9)
    _clean_axes(ax)


def error_codes(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel category: 0 true negative, 1 true positive, 2 false positive, 3 false negative."""
    codes = np.zeros(pred.shape, dtype=np.int8)
    codes[pred & truth] = 1
    codes[pred & ~truth] = 2
    codes[~pred & truth] = 3
    return codes


def _show_error(ax: Axes, pred: np.ndarray, truth: np.ndarray, title: str) -> None:
    ax.imshow(error_codes(pred, truth), cmap=ERROR_CMAP, vmin=-0.5, vmax=3.5, interpolation="nearest")
    iou = BinaryCounts.from_masks(pred, truth).metrics()["iou"]
    ax.set_title(f"{title} (IoU {iou:.3f})", fontsize=9)
    handles = [
        Patch(color=ERROR_COLOURS[2], label="false pos."),
        Patch(color=ERROR_COLOURS[3], label="false neg."),
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=6, framealpha=0.8, handlelength=1)
    _clean_axes(ax)


def _show_binary(ax: Axes, mask: np.ndarray, title: str) -> None:
    ax.imshow(mask, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    _clean_axes(ax)


def _show_probability(ax: Axes, prob: np.ndarray, title: str = "probability") -> None:
    ax.imshow(prob, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    _clean_axes(ax)


def show_uncertainty(ax: Axes, uncertainty: np.ndarray, title: str = "uncertainty (bits)") -> None:
    """Draw an uncertainty map ``[H, W]`` in bits on a fixed 0..1 scale (bright = unsure)."""
    ax.imshow(uncertainty, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    _clean_axes(ax)


def reliability_figure(reliability: Mapping[str, Mapping[str, list]]) -> Figure:
    """Reliability diagrams, one panel per model: the fraction of buildings against the mean predicted
    probability per bin (dots sized by the bin's share of cells), the diagonal = perfect calibration.

    reliability: model name -> ``{"count", "confidence", "frequency"}`` per bin (as in the ``reliability`` entry
    of :func:`tomoformer.evaluation.calibration.calibration_metrics`).
    """
    n = max(1, len(reliability))
    fig = _new_figure(1, n)
    fig.set_size_inches(3.2 * n, 3.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, rel) in zip(axes, reliability.items(), strict=False):
        count = np.asarray(rel["count"], dtype=np.float64)
        conf = np.asarray(rel["confidence"], dtype=np.float64)
        freq = np.asarray(rel["frequency"], dtype=np.float64)
        ok = count > 0
        share = count / max(count.sum(), 1)
        ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1)
        ax.plot(conf[ok], freq[ok], color="#3182bd", linewidth=1)
        ax.scatter(conf[ok], freq[ok], s=10 + 400 * share[ok], color="#3182bd", edgecolor="black", zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("mean predicted probability", fontsize=8)
        ax.set_ylabel("fraction of buildings", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    return fig


def risk_coverage_figure(curves: Mapping[str, list[Mapping[str, float]]]) -> Figure:
    """IoU (left) and accuracy (right) of each model's map on its most certain x % of cells.

    curves: model name -> rows with ``coverage`` (0..1), ``iou`` and ``accuracy`` (as from
    :func:`tomoformer.tasks.uncertainty.risk_coverage`).
    """
    fig = _new_figure(1, 2)
    fig.set_size_inches(8, 3.4)
    ax_iou, ax_acc = fig.subplots(1, 2)
    for name, rows in curves.items():
        x = [100 * float(r["coverage"]) for r in rows]
        ax_iou.plot(x, [float(r["iou"]) for r in rows], marker="o", markersize=3, label=name)
        ax_acc.plot(x, [float(r["accuracy"]) for r in rows], marker="o", markersize=3, label=name)
    for ax, label in ((ax_iou, "IoU"), (ax_acc, "accuracy")):
        ax.set_xlabel("most certain cells kept (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    return fig


def plan_figure(uncertainty: ArrayLike, chosen: ArrayLike, others: ArrayLike | None = None, title: str = "") -> Figure:
    """The uncertainty map (bits) with the planned transmitters numbered by rank (1 = first) and the candidates
    not chosen as grey dots. chosen ``[K, 3]`` and others ``[K', 3]``: row, col in cells, height."""
    u = to_numpy(uncertainty).astype(np.float32)
    picks = to_numpy(chosen).reshape(-1, 3)
    fig = _new_figure(1, 1)
    fig.set_size_inches(4.2, 4.4)
    ax = fig.subplots()
    image = ax.imshow(u, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="uncertainty (bits)")
    if others is not None and len(others):
        rest = to_numpy(others).reshape(-1, 3)
        ax.scatter(rest[:, 1], rest[:, 0], s=8, color="#bbbbbb", edgecolor="none", label="candidate")
    ax.scatter(picks[:, 1], picks[:, 0], s=90, marker="o", color="#2ca25f", edgecolor="white", label="planned")
    for rank, (row, col) in enumerate(picks[:, :2], start=1):
        ax.annotate(str(rank), (col, row), color="white", fontsize=6, ha="center", va="center", weight="bold")
    H, W = u.shape
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.legend(loc="lower right", fontsize=6, framealpha=0.8)
    ax.set_title(title or "uncertainty and planned transmitters", fontsize=9)
    _clean_axes(ax)
    return fig


def _optional(x: ArrayLike | None) -> np.ndarray | None:
    return None if x is None else to_numpy(x)


def sample_figure(
    signals: ArrayLike | None,
    tx_pos: ArrayLike | None = None,
    buildings: ArrayLike | None = None,
    probabilities: ArrayLike | None = None,
    title: str = "",
    uncertainty: ArrayLike | None = None,
) -> Figure:
    """One row: up to 4 input frames, then probability, prediction (p > 0.5), uncertainty, truth and error map.

    Args:
        signals: ``[T, H, W]`` dB, NaN = missing (drawn pink); tx_pos: ``[T, 3]`` row, col in cells, or None.
        buildings: ``[H, W]`` 0/1 truth or None; probabilities: ``[H, W]`` in [0, 1] or None.
        uncertainty: ``[H, W]`` in bits (0 = sure, 1 = coin toss) or None.
    Pieces that are None are skipped; the error map needs both probabilities and buildings.
    """
    sig, tx = _optional(signals), _optional(tx_pos)
    truth, prob, unsure = _optional(buildings), _optional(probabilities), _optional(uncertainty)
    frames = _frame_indices(sig.shape[0]) if sig is not None and sig.shape[0] > 0 else []
    has_error = prob is not None and truth is not None
    n_panels = len(frames) + 2 * (prob is not None) + (unsure is not None) + (truth is not None) + has_error
    if n_panels == 0:
        raise ValueError("sample_figure needs at least one of signals, buildings, probabilities")
    fig = _new_figure(1, n_panels)
    axes = iter(fig.subplots(1, n_panels, squeeze=False)[0])
    if frames:
        vmin, vmax = _db_range(sig)
        for i, t in enumerate(frames):
            frame_tx = tx[t] if tx is not None else None
            ax = next(axes)
            _show_signal(ax, sig[t].astype(np.float32), vmin, vmax, frame_tx, f"frame {t}")
            if i == 0:
                ax.set_xlabel(f"[{vmin:.0f}, {vmax:.0f}] dB; pink = missing", fontsize=7)
    pred = prob > 0.5 if prob is not None else None
    if prob is not None:
        _show_probability(next(axes), prob)
        _show_binary(next(axes), pred, "prediction")
    if unsure is not None:
        show_uncertainty(next(axes), unsure)
    if truth is not None:
        truth_b = truth > 0.5
        _show_binary(next(axes), truth_b, "buildings" if prob is None else "truth")
        if pred is not None:
            _show_error(next(axes), pred, truth_b, "errors")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def comparison_figure(
    signals: ArrayLike | None,
    tx_pos: ArrayLike | None,
    buildings: ArrayLike | None,
    probabilities: Mapping[str, ArrayLike],
) -> Figure:
    """Models side by side: a first column with an input frame and the truth, then per model one column
    with its probability (top) and its error map against the truth (bottom; prediction if no truth)."""
    sig, tx, truth = _optional(signals), _optional(tx_pos), _optional(buildings)
    has_input = sig is not None or truth is not None
    n_cols = len(probabilities) + has_input
    if n_cols == 0:
        raise ValueError("comparison_figure needs inputs or at least one model")
    fig = _new_figure(2, n_cols)
    grid = fig.subplots(2, n_cols, squeeze=False)
    col = 0
    if has_input:
        if sig is not None and sig.shape[0] > 0:
            vmin, vmax = _db_range(sig)
            t = sig.shape[0] // 2
            _show_signal(
                grid[0, 0],
                sig[t].astype(np.float32),
                vmin,
                vmax,
                tx[t] if tx is not None else None,
                f"input frame {t}",
            )
        else:
            grid[0, 0].set_axis_off()
        if truth is not None:
            _show_binary(grid[1, 0], truth > 0.5, "truth")
        else:
            grid[1, 0].set_axis_off()
        col = 1
    for name, p in probabilities.items():
        prob = to_numpy(p).astype(np.float32)
        _show_probability(grid[0, col], prob, name)
        if truth is not None:
            _show_error(grid[1, col], prob > 0.5, truth > 0.5, "errors")
        else:
            _show_binary(grid[1, col], prob > 0.5, "prediction")
        col += 1
    return fig


def _read_metrics_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError as e:
        raise TomoFormerError(f"{path}: no such metrics file") from e
    columns: dict[str, np.ndarray] = {}
    for name in rows[0].keys() if rows else []:
        values = []
        for row in rows:
            try:
                values.append(float(row.get(name) or "nan"))
            except ValueError:
                values.append(math.nan)
        columns[name] = np.asarray(values, dtype=np.float64)
    return columns


def _per_epoch(epoch: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the logged values per epoch (step-level and epoch-level logs alike)."""
    ok = np.isfinite(values) & np.isfinite(epoch)
    if not ok.any():
        return np.empty(0), np.empty(0)
    epochs = np.unique(epoch[ok])
    return epochs, np.array([values[ok & (epoch == e)].mean() for e in epochs])


def curves_figure(metrics_csv_path: str | os.PathLike[str]) -> Figure:
    """Training curves from a Lightning ``CSVLogger`` ``metrics.csv``: losses (left) and validation
    scores such as ``val_iou`` (right) per epoch. Rows are sparse; empty cells are skipped."""
    columns = _read_metrics_csv(Path(metrics_csv_path))
    epoch = columns.get("epoch")
    if epoch is None:
        # Without an epoch column, fall back to the step, or the row number.
        epoch = columns.get("step", np.arange(len(next(iter(columns.values()), []))))
    fig = _new_figure(1, 2)
    fig.set_size_inches(9, 3.4)
    ax_loss, ax_score = fig.subplots(1, 2)
    skip = {"epoch", "step"}
    loss_cols = [c for c in columns if c not in skip and "loss" in c]
    score_cols = [c for c in columns if c not in skip and "loss" not in c and c.startswith(("val", "test"))]
    for ax, names, label in ((ax_loss, loss_cols, "loss"), (ax_score, score_cols, "score")):
        drawn = 0
        for name in names:
            x, y = _per_epoch(epoch, columns[name])
            if x.size:
                ax.plot(x, y, marker="o", markersize=3, label=name)
                drawn += 1
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {label} logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_loss.set_title("losses", fontsize=10)
    ax_score.set_title("validation scores", fontsize=10)
    return fig


def city_figure(
    heights: ArrayLike, signals: ArrayLike | None = None, tx_pos: ArrayLike | None = None, n_frames: int = 3
) -> Figure:
    """README picture: building heights (m) with every shown transmitter, then ``n_frames`` signal maps.

    heights: ``[H, W]`` m (0 = street); signals: ``[T, H, W]`` dB; tx_pos: ``[T, 3]`` row, col in cells.
    """
    h = to_numpy(heights).astype(np.float32)
    sig, tx = _optional(signals), _optional(tx_pos)
    frames = _frame_indices(sig.shape[0], n_frames) if sig is not None and sig.shape[0] > 0 else []
    fig = _new_figure(1, 1 + len(frames))
    fig.set_size_inches(3.2 * (1 + len(frames)), 3.2)
    axes = fig.subplots(1, 1 + len(frames), squeeze=False)[0]
    colours = colormaps["tab10"].colors
    cmap = colormaps["cividis"].with_extremes(under="#f2efe9")  # street level light, buildings dark to bright
    im = axes[0].imshow(h, cmap=cmap, vmin=0.01, vmax=max(float(np.nanmax(h)), 1.0), interpolation="nearest")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="height (m)")
    axes[0].set_title("building heights", fontsize=10)
    _clean_axes(axes[0])
    if frames:
        vmin, vmax = _db_range(sig)
        for i, t in enumerate(frames):
            frame_tx = tx[t] if tx is not None else None
            colour = colours[i % len(colours)]
            _mark_tx(axes[0], frame_tx, h.shape, colour=colour)
            _show_signal(axes[1 + i], sig[t].astype(np.float32), vmin, vmax, None, f"signal, transmitter {t}")
            _mark_tx(axes[1 + i], frame_tx, h.shape, colour=colour)
        fig.colorbar(axes[-1].images[0], ax=axes[1:].tolist(), shrink=0.8, label="dB")
    return fig


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = DPI) -> Path:
    """Write the figure as PNG to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(figure_png(fig, dpi=dpi))
    return Path(path)


__all__ = [
    "city_figure",
    "comparison_figure",
    "curves_figure",
    "error_codes",
    "figure_png",
    "plan_figure",
    "reliability_figure",
    "risk_coverage_figure",
    "sample_figure",
    "save_figure",
    "show_uncertainty",
]

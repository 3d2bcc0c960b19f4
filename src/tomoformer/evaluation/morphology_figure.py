"""Histograms of urban morphology (``tomoformer data morphology --figure``), several datasets overlaid per panel.

Built on ``matplotlib.figure.Figure`` with an Agg canvas, never on pyplot (see evaluation/figures.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tomoformer.evaluation.morphology import MorphologySummary

# (attribute, x label, log10 of the values?) per panel
_PANELS = (
    ("coverage", "tile coverage", False),
    ("mass_areas_m2", "built mass area, log10 m²", True),
    ("courtyard_share", "courtyard share of tile area", False),
    ("orientation_spread_deg", "edge orientation spread per tile, deg", False),
    ("street_distance_m", "building cell to street, m", False),
)


def morphology_figure(summaries: Sequence[MorphologySummary]) -> Figure:
    """One panel per measurement; each dataset (or group) is one step histogram, normalised to a density."""
    fig = Figure(figsize=(3.2 * len(_PANELS), 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(_PANELS))
    colours = colormaps["tab10"]
    for ax, (key, label, log) in zip(axes, _PANELS, strict=True):
        series = [_values(getattr(s, key), log) for s in summaries]
        present = [v for v in series if v.size]
        if not present:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        else:
            lo = min(float(v.min()) for v in present)
            hi = max(float(v.max()) for v in present)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
            for i, (summary, values) in enumerate(zip(summaries, series, strict=True)):
                if values.size:
                    ax.hist(values, bins=bins, density=True, histtype="step", color=colours(i % 10), label=summary.name)
        ax.set_xlabel(label)
        ax.set_yticks([])
    axes[0].set_ylabel("density")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize="small")
    return fig


def _values(values: np.ndarray, log: bool) -> np.ndarray:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if log:
        values = np.log10(values[values > 0])
    return values


__all__ = ["morphology_figure"]

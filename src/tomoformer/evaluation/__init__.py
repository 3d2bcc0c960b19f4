"""Evaluation: pixel metrics of the building class, figures, and HTML/JSON reports."""

from tomoformer.evaluation.figures import (
    city_figure,
    comparison_figure,
    curves_figure,
    figure_png,
    sample_figure,
    save_figure,
)
from tomoformer.evaluation.metrics import (
    METRIC_NAMES,
    BinaryCounts,
    MetricAccumulator,
    best_threshold,
    evaluate_predictions,
)
from tomoformer.evaluation.report import write_metrics_json, write_report

__all__ = [
    "METRIC_NAMES",
    "BinaryCounts",
    "MetricAccumulator",
    "best_threshold",
    "city_figure",
    "comparison_figure",
    "curves_figure",
    "evaluate_predictions",
    "figure_png",
    "sample_figure",
    "save_figure",
    "write_metrics_json",
    "write_report",
]

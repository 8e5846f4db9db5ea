"""Evaluation: split-level metrics of the trained models and the pictures that go with them."""

from components.evaluation.segment_metrics import (
    ImageRecord,
    SegmentationMetrics,
    format_metrics,
    parse_sample_name,
    to_percent,
)
from components.evaluation.visualize import overlay, plot_pr_curve

__all__ = [
    "ImageRecord",
    "SegmentationMetrics",
    "format_metrics",
    "overlay",
    "parse_sample_name",
    "plot_pr_curve",
    "to_percent",
]

"""Image-level metrics of a pass/defect classifier and the choice of its operating threshold.

They are shared with every family that makes a pass/defect call, so they live in
:mod:`components.evaluation.verdict`; this module names them for the classifier's code.
"""

from __future__ import annotations

from components.evaluation.verdict import (
    average_precision,
    choose_threshold,
    classification_metrics,
    rank_auroc,
    roc_curve,
)

__all__ = ["average_precision", "choose_threshold", "classification_metrics", "rank_auroc", "roc_curve"]

"""Model families of inspectops, one folder each (pure torch; training wrappers live elsewhere)."""

from components.models.changenet import ChangeNetSegment, DeepSupervisionLoss, PretrainedWeightsError, build_backbone

__all__ = ["ChangeNetSegment", "DeepSupervisionLoss", "PretrainedWeightsError", "build_backbone"]

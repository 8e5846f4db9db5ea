"""Data validation of the prepared datasets with Great Expectations.

``validate_datasets(params)`` runs the suites and returns a :class:`ValidationReport`;
``format_failures(report)`` gives the text the CLI prints. Importing Great Expectations
takes seconds, so this package imports it only when one of those names is first used:
``inspectops --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.validation.validate import ValidationReport, format_failures, validate_datasets

__all__ = ["ValidationReport", "format_failures", "validate_datasets"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from components.validation import validate

        return getattr(validate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

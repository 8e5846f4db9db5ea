"""The one error type of the labeler, and the shape of its multi-problem messages.

Bad input is reported as a whole: a person fixing a COCO file wants every broken
annotation in one go, not one per rerun of an expensive prediction job.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_LISTED = 20
"""Problems quoted in one message; the rest are counted."""


class LabelingError(ValueError):
    """Input or output of the mask auto-labeler is unusable; the message names the file and annotation ids."""


def problem_report(head: str, problems: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``head`` then one ``  - problem`` line each, the first ``limit`` of them and a count of the rest."""
    lines = [f"{head}: {len(problems)} problem(s)"]
    lines += [f"  - {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  - ... and {len(problems) - limit} more")
    return "\n".join(lines)

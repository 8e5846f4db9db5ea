"""How a source folder is to be read: the knobs ``inspectops data import`` takes, kept with the data.

Import writes them into ``<data>/<format>/<name>/inspectops-source.json`` so that prepare,
run later (or by DVC on another machine), reads the folder exactly as import checked it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from components.data.sources.records import SourceError

OPTIONS_FILE = "inspectops-source.json"


@dataclass(frozen=True)
class SourceOptions:
    """Reader options; each format uses the ones that concern it and ignores the rest.

    Patterns (``pairs``) are paths relative to the source root with ``{id}`` (the pair's
    name) and optionally ``{split}`` (``train``/``val``/``test``: the source's own split).
    """

    golden_pattern: str = "{id}_golden.png"
    test_pattern: str = "{id}_test.png"
    box_pattern: str | None = "{id}.txt"
    mask_pattern: str | None = "{id}_mask.png"
    box_separator: str = ","
    classes: tuple[str, ...] = ()
    """Known defect classes; empty: whatever the boxes, CSV or COCO categories name."""
    images_dir: str = "images"
    """``tao-classify``: folder the CSV paths are relative to; ``coco``: folder of the images."""

    def __post_init__(self) -> None:
        for name in ("golden_pattern", "test_pattern", "box_pattern", "mask_pattern"):
            pattern = getattr(self, name)
            if pattern is not None and "{id}" not in pattern:
                raise SourceError(f"--{name.replace('_', '-')} {pattern!r} must contain {{id}}")
        if not self.box_separator:
            raise SourceError("--box-separator must not be empty")

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["classes"] = list(self.classes)
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> SourceOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise SourceError(f"{OPTIONS_FILE}: unknown option(s) {unknown}")
        values = dict(payload)
        if "classes" in values:
            values["classes"] = tuple(values["classes"])
        return cls(**values)


def load_options(root: Path) -> tuple[str | None, SourceOptions]:
    """``(format, options)`` recorded by import in ``root``; defaults when the folder has none."""
    path = root / OPTIONS_FILE
    if not path.is_file():
        return None, SourceOptions()
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SourceError(f"{path}: cannot read ({error})") from None
    return payload.get("format"), SourceOptions.from_json(payload.get("options", {}))

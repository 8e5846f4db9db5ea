"""The params overlay ``inspectops data import`` writes: the settings a team's data implies, first time right.

``params.<name>.yaml`` holds only the keys the data decides, ``extends:`` the params file it was
imported with, and says in its header why each was chosen. So
``inspectops pipeline run --params params.<name>.yaml`` runs exactly the model families the data
supports, each fed the way it can be (painted masks, or MAL's masks of the boxes), with no
override found by failing: the lights present, an image size the images have, no defect-share
sampling without good pairs, a seeded split when the source gives none, tiling when the images
are much larger than the model's input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from components.config import EXTENDS_KEY, FAMILIES, Params, merge_overlay, parse_params, read_raw_params
from components.data.support import DataProfile, FamilySupport
from components.fsutil import atomic_file

MODEL_INPUT = 256
"""TAO's input size: real data is prepared (or tiled) at this size unless its images are smaller."""
TILE_WHEN = 2.0
"""Tile instead of resizing when the images' shorter side exceeds this many model inputs."""
TILE_OVERLAP = 32
SINGLE_LIGHT = "UniformLight"
"""The name the one unnamed light of a single-image source goes by (any of the four would do)."""


def overlay_path(base_params: Path, name: str) -> Path:
    """``params.<name>.yaml`` beside the params file it extends."""
    return base_params.parent / f"params.{name}.yaml"


def image_size(profile: DataProfile) -> int:
    """The prepared size: TAO's 256, or the largest multiple of 32 the images' shorter side holds."""
    return MODEL_INPUT if profile.short_side >= MODEL_INPUT else max(32, profile.short_side // 32 * 32)


def wants_tiling(profile: DataProfile, support: dict[str, FamilySupport]) -> bool:
    """Whether resizing would shrink the images more than :data:`TILE_WHEN` times (segmentation only).

    Only for painted masks: MAL's masks of boxes come at ``data.image_size``, which tiling does not take.
    """
    large = profile.short_side > TILE_WHEN * MODEL_INPUT
    return large and support["segment"].applies and profile.masked_defects > 0


def overlay_settings(
    fmt: str, name: str, profile: DataProfile, support: dict[str, FamilySupport], base: Params
) -> dict[str, Any]:
    """The nested keys the overlay sets (everything else comes from the base params)."""
    data: dict[str, Any] = {
        "source": fmt,
        "category": name,
        "lighting_conditions": list(profile.lights) or [SINGLE_LIGHT],
        "image_size": image_size(profile),
    }
    if not profile.source_split:
        data["val_fraction"] = base.data.val_fraction
    if wants_tiling(profile, support):
        data["tiling"] = {"tile_size": MODEL_INPUT, "overlap": TILE_OVERLAP}
    settings: dict[str, Any] = {"data": data}
    if not profile.source_split:
        settings["seed"] = base.seed
    segment_train: dict[str, Any] = {}
    if support["segment"].applies and not profile.masked_defects:
        segment_train["labels"] = "mal"
    if support["segment"].applies and profile.good == 0:
        segment_train["defect_share"] = None
    if segment_train:
        settings["segment"] = {"train": segment_train}
    settings["pipeline"] = {
        "families": [family for family in FAMILIES if support[family].applies],
        "not_applicable": {f: s.why_not for f, s in support.items() if not s.applies},
    }
    return settings


def _header(fmt: str, name: str, profile: DataProfile, support: dict[str, FamilySupport], path: Path) -> str:
    split = "the source's own split" if profile.source_split else "no split in the source: a seeded one per class"
    lights = ", ".join(profile.lights) if profile.lights else "one unnamed light"
    lines = [
        f"Written by `inspectops data import --format {fmt} --name {name}`: the settings this data implies,",
        "merged over the params file named by `extends` (edit either; rerun the import to rewrite this one).",
        f"Run it: inspectops pipeline run --params {path.name}",
        "",
        f"Found: {profile.records} part(s), {profile.good} good and {profile.defect} defective; "
        f"{profile.masked_defects} painted mask(s), {profile.boxed} part(s) with boxes;",
        f"  classes {list(profile.classes)}; {lights}; images {profile.width}x{profile.height} (median); {split}.",
        "Model families:",
        *(f"  {f}: {s.how}" if s.applies else f"  {f}: not applicable ({s.why_not})" for f, s in support.items()),
    ]
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def render_overlay(
    fmt: str, name: str, profile: DataProfile, support: dict[str, FamilySupport], base_params: Path
) -> tuple[Path, str]:
    """``(path, text)`` of ``params.<name>.yaml`` beside ``base_params``, validated merged over it.

    Import renders it before copying any data, so a bad overlay stops the import with nothing half-done.
    """
    path = overlay_path(base_params, name)
    base_raw = read_raw_params(base_params)
    settings = overlay_settings(fmt, name, profile, support, parse_params(base_raw, str(base_params)))
    parse_params(merge_overlay(base_raw, settings), str(path))
    body = {EXTENDS_KEY: os.path.relpath(base_params, path.parent), **settings}
    return path, _header(fmt, name, profile, support, path) + yaml.safe_dump(
        body, sort_keys=False, default_flow_style=None, width=1000
    )


def write_text_atomically(path: Path, text: str) -> Path:
    with atomic_file(path) as handle:
        handle.write(text)
    return path

"""What a team's data can train: its profile, the model families it supports, and why the others do not apply.

``inspectops data import`` has every file of the source decoded once by the source checks. From
those probes this module reads what a new user would otherwise learn by failing, one run at a
time: which lighting conditions exist, whether any pair is good, whether defects come with
painted masks, boxes or only an image label, and how large the images are. Each model family
then either applies (and how: ChangeNet-Segmentation on painted masks, or on MAL's masks of the
boxes) or does not, with a reason a person can act on ("no masks and no boxes").

:mod:`components.data.overlay` turns the result into the params overlay the import writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import median

from components.data.sources import source_format
from components.data.sources.records import GOOD, Record, SourceIndex
from components.validation.source_checks import FileProbe

Probes = dict[tuple[Path, bool], FileProbe]

MIN_PER_CLASS = 2
"""Good and defective parts a verdict family needs at least: one for train and one for val."""


@dataclass(frozen=True)
class DataProfile:
    """What a source holds, counted from its records and the probes of its files."""

    format: str
    records: int
    good: int
    """Parts known to be good: labelled so, or a pair whose mask is empty."""
    defect: int
    masked_defects: int
    """Defective parts with a painted change mask (segmentation ground truth)."""
    boxed: int
    """Parts with at least one box (MAL's input)."""
    with_golden: int
    """Parts compared with a golden image (all of them where prepare draws goldens from the good images)."""
    lights: tuple[str, ...]
    classes: tuple[str, ...]
    source_split: bool
    """Whether the source gives every record's split (otherwise prepare draws a seeded one)."""
    width: int
    height: int
    """Median test-image size in pixels."""

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)


@dataclass(frozen=True)
class FamilySupport:
    """Whether one model family can learn from the data: ``how`` it is fed, or ``why_not``."""

    family: str
    how: str | None = None
    why_not: str | None = None

    @property
    def applies(self) -> bool:
        return self.how is not None


def _is_defect(record: Record, probes: Probes) -> bool:
    if record.label is not None:
        return record.label != GOOD
    if record.mask is None:
        return bool(record.instances)
    return bool(probes.get((record.mask, True), FileProbe(None)).foreground)


GOLDENS_FROM_GOOD = ("folders",)
"""Formats whose goldens prepare draws from the good images (a seeded pool, MVTec's recipe), not the source."""


def profile_source(index: SourceIndex, probes: Probes) -> DataProfile:
    """Count what ``index`` holds; ``probes`` are :func:`~components.validation.source_checks.check_source`'s."""
    defects = [r for r in index.records if _is_defect(r, probes)]
    drawn = index.format in GOLDENS_FROM_GOOD
    sizes = [probes[(r.image, False)].size for r in index.records if (r.image, False) in probes]
    known = [size for size in sizes if size is not None] or [(0, 0)]
    return DataProfile(
        format=index.format,
        records=len(index.records),
        good=len(index.records) - len(defects),
        defect=len(defects),
        masked_defects=sum(r.mask is not None and r.masked for r in defects),
        boxed=sum(bool(r.instances) for r in index.records),
        with_golden=len(index.records)
        if drawn
        else sum(r.golden is not None or bool(r.golden_lights) for r in index.records),
        lights=tuple(index.lights),
        classes=tuple(index.classes),
        source_split=bool(index.records) and all(r.split is not None for r in index.records),
        width=int(median(w for w, _ in known)),
        height=int(median(h for _, h in known)),
    )


def _fed(fmt: str, family: str) -> tuple[str, ...]:
    """Prepared datasets the family's training reads that the format cannot write (empty: all fed)."""
    from components.pipeline.stages import get_stage

    return tuple(d for d in get_stage(f"train_{family}").datasets if d not in source_format(fmt).datasets)


def _verdict_gap(profile: DataProfile) -> str | None:
    """Why good/defect verdicts cannot be learnt and judged (``None``: they can)."""
    if profile.good == 0:
        return "no good parts (every part has a defect or a change)"
    if profile.defect == 0:
        return "no defective parts"
    if profile.good < MIN_PER_CLASS or profile.defect < MIN_PER_CLASS:
        return f"{profile.good} good and {profile.defect} defective part(s): at least {MIN_PER_CLASS} of each"
    return None


def family_support(profile: DataProfile) -> dict[str, FamilySupport]:
    """Each model family: how the data feeds it, or why it does not apply."""
    fmt, goldens = profile.format, profile.with_golden == profile.records
    found: dict[str, FamilySupport] = {}

    def decide(family: str, how: str | None, why_not: str | None) -> None:
        missing = _fed(fmt, family)
        if missing and why_not is None:  # what the data lacks says more than what the format cannot carry
            why_not = f"the {fmt} format feeds no {' or '.join(missing)} dataset"
        found[family] = FamilySupport(family, how if why_not is None else None, why_not)

    gap = _verdict_gap(profile)
    cam_gap = gap
    if gap is None and "segment" in source_format(fmt).datasets and profile.masked_defects < MIN_PER_CLASS:
        # Where a segmentation set exists, CAM reads its parts, and a defect without a painted mask is not one.
        cam_gap = f"{profile.masked_defects} defect(s) with a painted mask: CAM reads the segmentation set's parts"
    decide("cam", "good and defective images: the CAM classifier learns from image labels alone", cam_gap)

    if profile.boxed:
        decide("mal", f"{profile.boxed} part(s) with boxes: MAL learns masks from them", None)
    elif profile.masked_defects:
        decide("mal", "painted masks: MAL learns from their boxes and is scored on the masks", None)
    else:
        decide("mal", None, "no boxes and no masks")

    if not goldens:
        decide("segment", None, "no golden images to compare with")
    elif profile.masked_defects:
        decide("segment", f"{profile.masked_defects} painted mask(s): ChangeNet-Segmentation learns from them", None)
    elif profile.boxed and found["mal"].applies:
        decide("segment", "boxes only: MAL labels them, ChangeNet-Segmentation learns from MAL's masks", None)
    else:
        decide("segment", None, "no masks and no boxes")

    if not goldens:
        decide("classify", None, "no golden images to compare with")
    else:
        lights = f"{len(profile.lights)} lights" if profile.lights else "one light"
        decide("classify", f"PASS/defect labels, {lights}: ChangeNet-Classification", gap)
    return found

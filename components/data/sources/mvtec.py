"""MVTec AD categories (ingested or synthetic) as records: TAO ChangeNet's golden-pool recipe.

MVTec has no golden/test pairs: a seeded share of ``train/good`` becomes the golden pool and
every other image is split per class and paired with golden(s) drawn from it
(:mod:`components.data.split`). The synthetic generator adds ``lights/<Light>/...`` trees,
so its parts come under several lighting conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.config import Params
from components.data.layout import CategoryIndex, LayoutError, Sample, scan_category
from components.data.sources.options import SourceOptions
from components.data.sources.records import Record, SourceIndex
from components.data.split import SplitPlan, split_samples


class LightingError(LayoutError):
    """A configured lighting condition that the category cannot provide."""


def light_source(index: CategoryIndex, sample: Sample, light: str, lights: Sequence[str]) -> Path:
    """The raw file showing ``sample`` under ``light``.

    A category with a ``lights/<light>`` tree provides it; a single-light configuration
    may use the main image (MVTec is shot under one light). Anything else would silently
    duplicate one image under several light names, so it is an error.
    """
    if light in index.lights:
        return index.light_image(sample, light)
    if len(lights) == 1:
        return sample.image
    raise LightingError(
        f"{index.root}: lighting condition {light!r} is configured (data.lighting_conditions="
        f"{list(lights)}) but category {index.root.name!r} has no lights/{light} folder "
        f"(it provides {list(index.lights) or 'only its main images'}); "
        "configure a single lighting condition for a one-light category"
    )


def check_lights(index: CategoryIndex, lights: Sequence[str]) -> None:
    """Fail before any work if some configured light cannot be provided."""
    probe = index.train_good[0]
    for light in lights:
        light_source(index, probe, light, lights)


def plan_split(params: Params, index: CategoryIndex) -> SplitPlan:
    """The seeded split of ``index`` under ``params`` (no I/O)."""
    data = params.data
    return split_samples(
        index.samples,
        seed=params.seed,
        golden_fraction=data.golden_fraction,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        num_golden=data.num_golden,
    )


def _split_manifest(plan: SplitPlan, root: Path) -> dict[str, Any]:
    """Golden pool and per-sample split/goldens; paths relative to the raw category root."""

    def rel(sample: Sample) -> str:
        return sample.image.relative_to(root).as_posix() if sample.image.is_relative_to(root) else str(sample.image)

    return {
        "golden_pool": [{"name": s.name, "image": rel(s)} for s in plan.golden_pool],
        "samples": [
            {
                "name": a.name,
                "split": a.split,
                "label": a.sample.label,
                "image": rel(a.sample),
                "goldens": [g.name for g in a.goldens],
            }
            for a in plan.assignments
        ],
    }


def read_mvtec(root: Path, options: SourceOptions, params: Params) -> SourceIndex:
    """Index, split and pair an MVTec-layout category; raise :class:`LayoutError` naming the path."""
    del options  # the MVTec layout has nothing to configure
    index = scan_category(root)
    lights = params.data.lighting_conditions
    check_lights(index, lights)
    plan = plan_split(params, index)

    def per_light(sample: Sample) -> tuple[tuple[str, Path], ...]:
        return tuple((light, light_source(index, sample, light, lights)) for light in lights)

    records = tuple(
        Record(
            name=a.name,
            image=a.sample.image,
            label=a.sample.label,
            golden=a.golden.image,
            mask=a.sample.mask,
            split=a.split,
            lights=per_light(a.sample),
            golden_lights=tuple(per_light(g) for g in a.goldens),
            where=str(a.sample.image),
        )
        for a in plan.assignments
    )
    return SourceIndex(
        root=root,
        format="mvtec",
        records=records,
        classes=tuple(index.defect_kinds),
        lights=tuple(lights),
        all_classes=tuple(sorted({s.label for s in index.samples})),
        manifest=_split_manifest(plan, root),
        golden_pool=len(plan.golden_pool),
    )

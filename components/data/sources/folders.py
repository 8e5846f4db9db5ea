"""Class folders: good and defective part images sorted into one folder per class, nothing else.

::

    <root>/good/*.png          good parts (the folder may also be called ok/ or pass/, any case)
    <root>/scratch/*.jpg       one folder per defect kind; its name is the class
    <root>/dent/lot7/*.bmp     sub-folders of a class folder are read too (recursively, sorted)

or the same with one level of split folders above the classes, which then give the split::

    <root>/train/good/  <root>/train/scratch/  <root>/val/good/  <root>/val/scratch/  [<root>/test/...]

Any of the image extensions of :data:`~components.data.layout.IMAGE_SUFFIXES`, any size
(prepare resizes). There are no masks, boxes or goldens: a defect is known by its image label
only, so a defect record is ``masked=False`` (never taught to a segmenter as "no change") and
the source feeds ChangeNet-Classification and the CAM classifier (the ``image_labels`` lists).

**Goldens** follow TAO ChangeNet's MVTec recipe (:mod:`components.data.split`, the same
functions): a seeded pool of ``data.golden_fraction`` of the (train) good images, at least
one, is set aside as references, and every other image is paired with ``data.num_golden`` of
them (seeded by its name). The pool is drawn when prepare reads the folder; at import
(no params) every image is a record, so every image is checked and copied.

Record names are the file's path below the root, file-safe (``train/scratch/lot7/001.png``
-> ``train__scratch__lot7__001``); two files that would share a name (``a.png`` and ``a.jpg``)
keep their extension, then a counter.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from components.config import Params
from components.data.layout import IMAGE_SUFFIXES
from components.data.sources.common import assign_splits, check_unique, class_name, safe_name
from components.data.sources.options import SourceOptions
from components.data.sources.records import GOOD, Record, SourceError, SourceIndex
from components.data.split import SPLIT_NAMES, TRAIN, SplitError, draw_golden_pool, draw_goldens

GOOD_FOLDERS = ("good", "ok", "pass")
"""Folder names (any case) of the good class; a source has exactly one of them per level."""
REQUIRED_SPLITS = ("train", "val")


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def class_of(folder_name: str) -> str:
    """``good`` for :data:`GOOD_FOLDERS` (any case), else the folder name as a class (``Scratch`` -> ``scratch``)."""
    return GOOD if folder_name.strip().lower() in GOOD_FOLDERS else class_name(folder_name)


def _class_folders(level: Path) -> list[tuple[str, Path]]:
    """``(class, folder)`` of one level; two folders of one class (``good/`` and ``OK/``) are refused."""
    loose = sorted(p.name for p in level.iterdir() if _is_image(p))
    if loose:
        raise SourceError(
            f"{level / loose[0]}: an image outside a class folder; put it in {level}/good/ or a folder named "
            "after its defect kind"
        )
    found: dict[str, list[Path]] = {}
    for folder in _subfolders(level):
        found.setdefault(class_of(folder.name), []).append(folder)
    for label, folders in found.items():
        if len(folders) > 1:
            names = ", ".join(f"{f.name}/" for f in folders)
            what = f"the good class ({'/, '.join(GOOD_FOLDERS)}/, any case)" if label == GOOD else f"class {label!r}"
            raise SourceError(f"{level}: folders {names} would all be {what}; keep one of them")
    return [(label, folders[0]) for label, folders in sorted(found.items())]


def _layout(root: Path) -> list[tuple[str | None, str, Path]]:
    """``(split or None, class, folder)`` of every class folder, split folders first when there are any."""
    tops = _subfolders(root)
    splits = [p for p in tops if p.name.lower() in SPLIT_NAMES]
    if not splits:
        return [(None, label, folder) for label, folder in _class_folders(root)]
    others = [p.name for p in tops if p not in splits]
    if others:
        raise SourceError(
            f"{root}: holds split folders ({', '.join(p.name + '/' for p in splits)}) and class folders "
            f"({', '.join(n + '/' for n in others)}); put every class folder under train/, val/ (and test/), or none"
        )
    given = {p.name.lower() for p in splits}
    lacking = [s for s in REQUIRED_SPLITS if s not in given]
    if lacking:
        raise SourceError(f"{root}: split folders need both train/ and val/ (missing {', '.join(lacking)}/)")
    return [(split.name.lower(), label, folder) for split in splits for label, folder in _class_folders(split)]


def _unique_names(paths: list[Path], root: Path) -> list[str]:
    """File-safe names from the root-relative paths; clashes keep the extension, then count."""
    base = [safe_name(p.relative_to(root).with_suffix("").as_posix()) for p in paths]
    names = [
        safe_name(p.relative_to(root).as_posix()) if base.count(b) > 1 else b for p, b in zip(paths, base, strict=True)
    ]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def _scan(root: Path) -> list[Record]:
    """Every image of every class folder as a record without goldens (what import checks and copies)."""
    records: list[Record] = []
    for split, label, folder in _layout(root):
        images = sorted(
            (p for p in folder.rglob("*") if _is_image(p) and not _hidden(p, folder)), key=lambda p: p.as_posix()
        )
        if not images:
            raise SourceError(
                f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); add the {label} parts' images or remove the folder"
            )
        for path in images:
            records.append(Record(name="", image=path, label=label, masked=label == GOOD, split=split, where=str(path)))
    names = _unique_names([r.image for r in records], root)
    return [replace(r, name=name) for r, name in zip(records, names, strict=True)]


def _check_classes(root: Path, records: list[Record], split_folders: bool) -> None:
    """At least one good image (in train when the folders split) and one defect image, or say what to add."""
    good_home = root / TRAIN if split_folders else root
    if not any(r.label == GOOD and (r.split in (None, TRAIN)) for r in records):
        raise SourceError(
            f"{good_home / 'good'}: no good images; add images of good parts there (the folder may also be "
            f"called {' or '.join(f + '/' for f in GOOD_FOLDERS[1:])}): they are the goldens and the good class"
        )
    if not any(r.label != GOOD for r in records):
        raise SourceError(
            f"{good_home}: no defect images; add one folder per defect kind next to good/ "
            f"(e.g. {good_home / 'scratch'}/*.png)"
        )


def read_folders(root: Path, options: SourceOptions, params: Params | None = None) -> SourceIndex:
    """Records of every image; with ``params``, the golden pool set aside and every other image paired with it."""
    if not root.is_dir():
        raise SourceError(f"{root}: class-folder root not found")
    records = _scan(root)
    split_folders = records[0].split is not None if records else False
    _check_classes(root, records, split_folders)
    if options.classes:
        unknown = sorted({r.label for r in records if r.label != GOOD and r.label not in options.classes})
        if unknown:
            raise SourceError(f"{root}: class folder(s) {unknown} are not known classes {list(options.classes)}")
    check_unique(records)
    classes = tuple(sorted({r.label for r in records if r.label and r.label != GOOD}))
    if params is None:
        return SourceIndex(root=root, format="folders", records=tuple(records), classes=classes)
    return _with_goldens(root, records, classes, params)


def _with_goldens(root: Path, records: list[Record], classes: tuple[str, ...], params: Params) -> SourceIndex:
    data = params.data
    if len(data.lighting_conditions) != 1:
        raise SourceError(
            f"{root}: class folders hold one image per part, but data.lighting_conditions is "
            f"{list(data.lighting_conditions)}; set it to one light, e.g. [UniformLight]"
        )
    (light,) = data.lighting_conditions
    ordered = sorted(records, key=lambda r: r.name)
    train_good = [r for r in ordered if r.label == GOOD and r.split in (None, TRAIN)]
    try:
        pool = draw_golden_pool(train_good, params.seed, data.golden_fraction, data.num_golden)
    except SplitError as error:
        raise SourceError(f"{root}: {error}") from None
    pool_names = {r.name for r in pool}
    rest = assign_splits(
        tuple(r for r in ordered if r.name not in pool_names), params.seed, data.val_fraction, data.test_fraction
    )
    goldens = {r.name: draw_goldens(r, pool, params.seed, data.num_golden) for r in rest}
    paired = tuple(
        replace(r, golden=goldens[r.name][0].image, golden_lights=tuple(((light, g.image),) for g in goldens[r.name]))
        for r in rest
    )

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    manifest = {  # the shape of MVTec's split.json (components.data.sources.mvtec)
        "golden_pool": [{"name": r.name, "image": rel(r.image)} for r in pool],
        "samples": [
            {
                "name": r.name,
                "split": r.split,
                "label": r.label,
                "image": rel(r.image),
                "goldens": [g.name for g in goldens[r.name]],
            }
            for r in rest
        ],
    }
    return SourceIndex(
        root=root,
        format="folders",
        records=paired,
        classes=classes,
        manifest=manifest,
        golden_pool=len(pool),
    )

"""Images plus COCO instances (boxes, optional polygons or RLE): the Mask Auto-Labeler's input.

::

    <root>/train.json, val.json[, test.json]   or one JSON of any name (then a seeded split)
    <root>/images/<file_name>                   ``file_name`` as written in the JSON

One record per image: its instances keep their category, box and outline; an image
without annotations is a good part. There is no golden, so this source feeds MAL only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.config import Params
from components.data.sources.common import check_unique, class_name, safe_name, split_files
from components.data.sources.options import SourceOptions
from components.data.sources.records import GOOD, Box, Instance, Record, SourceError, SourceIndex


def json_files(root: Path) -> dict[str | None, Path]:
    """``{split: json}`` from ``train.json``/``val.json``/``test.json``, or ``{None: the only json}``."""
    return split_files(root, ".json", "COCO JSON")


def load_coco(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceError(f"{path}: cannot read COCO JSON ({error})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(payload.get(key), list):
            raise SourceError(f"{path}: COCO key {key!r} is missing or not a list")
    return payload


def _categories(path: Path, payload: dict[str, Any], options: SourceOptions) -> dict[int, str]:
    names: dict[int, str] = {}
    for number, category in enumerate(payload["categories"], start=1):
        try:
            cid, name = int(category["id"]), class_name(str(category["name"]))
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{path}: category {number} needs an integer 'id' and a 'name'") from None
        if options.classes and name not in options.classes:
            raise SourceError(f"{path}: category {cid} {name!r} is not a known class {list(options.classes)}")
        names[cid] = name
    return names


def _instance(path: Path, ann: dict[str, Any], categories: dict[int, str]) -> tuple[int, Instance]:
    where = f"{path}: annotation {ann.get('id', '?')}"
    try:
        image_id, cid = int(ann["image_id"]), int(ann["category_id"])
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"{where}: needs image_id, category_id and bbox [x, y, w, h]") from None
    if cid not in categories:
        raise SourceError(f"{where}: category_id {cid} is not among the categories {sorted(categories)}")
    box = Box(x, y, x + w, y + h, categories[cid])
    return image_id, Instance(box=box, segmentation=ann.get("segmentation") or None, where=where)


def read_coco(root: Path, options: SourceOptions, params: Params | None = None) -> SourceIndex:
    """Records of every COCO image; raise :class:`SourceError` naming the JSON and the annotation."""
    del params
    images_dir = root / options.images_dir
    records: list[Record] = []
    classes: set[str] = set()
    files = json_files(root)
    for split, path in files.items():
        payload = load_coco(path)
        categories = _categories(path, payload, options)
        classes.update(categories.values())
        instances: dict[int, list[Instance]] = {}
        for ann in payload["annotations"]:
            image_id, instance = _instance(path, ann, categories)
            instances.setdefault(image_id, []).append(instance)
        known_ids = set()
        for image in payload["images"]:
            try:
                image_id, file_name = int(image["id"]), str(image["file_name"])
            except (KeyError, TypeError, ValueError):
                raise SourceError(f"{path}: image entry {image!r:.80} needs 'id' and 'file_name'") from None
            known_ids.add(image_id)
            own = tuple(instances.get(image_id, ()))
            records.append(
                Record(
                    name=safe_name(str(Path(file_name).with_suffix(""))),
                    image=images_dir / file_name,
                    label=own[0].box.label if own else GOOD,
                    masked=all(i.segmentation is not None for i in own),
                    instances=own,
                    split=split,
                    where=f"{path}: image {image_id} ({file_name})",
                )
            )
        orphans = sorted(set(instances) - known_ids)
        if orphans:
            first = instances[orphans[0]][0]
            raise SourceError(f"{first.where}: image_id {orphans[0]} is not among the images of {path.name}")
    if not records:
        raise SourceError(f"{root}: the COCO file(s) hold no images")
    check_unique(records)
    return SourceIndex(
        root=root,
        format="coco",
        records=tuple(records),
        classes=tuple(sorted(classes)),
        meta_files=tuple(files.values()),
    )

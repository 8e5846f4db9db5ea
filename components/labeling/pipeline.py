"""MAL as a labeller: the ``label_mal`` stage and ``inspectops label mal``.

The stage labels the *train* boxes (``mal.boxes``: the prepared ``datasets/coco/train.json``, or
the CAM classifier's boxes of the train images, ``labels/cam/train.json``; true masks are never
read to make the labels) and writes, under ``<artifacts>/labels/mal/``:

- ``train.json``: the COCO file with an RLE ``segmentation`` and a ``score`` per box, checked by
  Great Expectations (every mask decodes to its image's size and lies in its box);
- ``masks/<name>.png``: one 0/255 mask per train pair of the segmentation dataset, the union of
  the pair's instance masks (empty for a good part). With ``segment.train.labels: mal`` ChangeNet
  trains on these instead of the painted masks: the label-efficient chain.

How good those labels are is measured against the true train masks *after* labelling
(``label/train_miou``): a number for people, never an input of anything.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.config import Params
from components.fsutil import atomic_dir, write_json

if TYPE_CHECKING:
    from components.labeling.writer import LabelSummary, Predictor


def mal_labels_dir(params: Params) -> Path:
    """``<artifacts>/labels/mal``: the label stage's DVC output."""
    return params.paths.artifacts_dir / "labels" / "mal"


def mal_mask_dir(params: Params) -> Path:
    """``<artifacts>/labels/mal/masks``: ChangeNet's train masks with ``segment.train.labels: mal``."""
    return mal_labels_dir(params) / "masks"


def mal_train_boxes(params: Params) -> Path:
    """The COCO file of the train boxes MAL learns from and labels (``mal.boxes``).

    ``annotated``: the prepared ``datasets/coco/train.json`` (drawn boxes); ``cam``: the CAM
    classifier's boxes of the train images (``labels/cam/train.json``), so that no region is drawn.
    """
    if params.mal.boxes == "cam":
        from components.labeling.cam_boxes import cam_boxes_path

        path = cam_boxes_path(params)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no CAM boxes (mal.boxes: cam); run the label_cam stage first")
        return path
    from components.data.formats import DatasetLayout

    return DatasetLayout(params.datasets_dir).coco_json("train")


def label_metrics_path(params: Params) -> Path:
    return params.metrics_dir / "mal_label.json"


def mal_predictor(model: Any, params: Params) -> Predictor:
    """``(image, boxes) -> (masks, scores)`` with the trained MAL and the ``mal.eval`` settings."""
    from components.models.mal.predict import predict_instance_masks

    return functools.partial(
        predict_instance_masks,
        model,
        crop_size=params.mal.model.crop_size,
        test_margin=params.mal.eval.test_margin,
        threshold=params.mal.eval.mask_threshold,
        batch_size=params.mal.eval.batch_size,
    )


def _load_model(params: Params, checkpoint: Path | None) -> Any:
    from components.models.family import best_checkpoint, get_family

    family = get_family("mal")
    return family.load_module(Path(checkpoint or best_checkpoint(params, family))).model


def label_file(params: Params, coco: Path, images: Path, out: Path, checkpoint: Path | None = None) -> LabelSummary:
    """Label every box of ``coco`` (images under ``images``) into ``out``, then check the result.

    Bad input stops before any prediction, naming the annotation ids and files; a failed check
    removes nothing the user had but leaves no unchecked output either.
    """
    from components.labeling.checks import validate_labels
    from components.labeling.coco_boxes import load_box_job
    from components.labeling.writer import label_coco

    job = load_box_job(Path(coco), Path(images))
    model = _load_model(params, checkpoint)
    out = Path(out)
    staged = out.with_name(f".{out.name}.unchecked")
    try:
        summary = label_coco(job, mal_predictor(model, params), staged)
        validate_labels(staged, Path(images)).raise_for_failures()
        staged.replace(out)
    finally:
        staged.unlink(missing_ok=True)
    return summary


def label_stage(params: Params, checkpoint: Path | None = None) -> dict[str, float]:
    """The ``label_mal`` stage: label the train boxes, write masks for ChangeNet, measure them."""
    from components.data.formats import DatasetLayout, read_segment_list
    from components.imageio import image_size, write_png
    from components.labeling.checks import validate_labels
    from components.labeling.coco_boxes import load_box_job
    from components.labeling.rle import decode_rle
    from components.labeling.writer import label_coco

    layout = DatasetLayout(params.datasets_dir)
    boxes = mal_train_boxes(params)
    job = load_box_job(boxes, params.datasets_dir)
    model = _load_model(params, checkpoint)
    with atomic_dir(mal_labels_dir(params)) as staging:
        summary = label_coco(job, mal_predictor(model, params), staging / "train.json")
        validate_labels(staging / "train.json", params.datasets_dir).raise_for_failures()
        labelled = json.loads((staging / "train.json").read_text())
        masks = _masks_by_sample(labelled, decode_rle)
        names = read_segment_list(layout.segment_list("train")) + _boxes_only_names(layout, "train")
        written: dict[str, np.ndarray] = {}
        for name in names:
            mask = masks.get(name)
            if mask is None:  # no box on this pair: a good part
                width, height = image_size(layout.segment_image("A", name))
                mask = np.zeros((height, width), dtype=bool)
            written[name] = mask
            write_png(staging / "masks" / f"{name}.png", mask.astype(np.uint8) * 255)
        held_out = _label_boxes_only_splits(params, layout, model, staging)
    painted = set(read_segment_list(layout.segment_list("train")))
    metrics = {
        **held_out,
        "label/images": float(summary.images),
        "label/annotations": float(summary.annotations),
        "label/empty_masks": float(summary.empty_masks),
        "label/mean_score": float(summary.mean_score) if summary.mean_score is not None else 0.0,
        **(_label_quality(layout.coco_json("train"), labelled) if params.mal.boxes == "annotated" else {}),
        **_image_quality(layout, {name: mask for name, mask in written.items() if name in painted}),
    }
    write_json(label_metrics_path(params), metrics)
    return metrics


def _boxes_only_names(layout: Any, split: str) -> list[str]:
    """Pairs of ``split`` with boxes but no painted mask (``segment/list_boxes_only/``; none for most sources)."""
    from components.data.formats import read_segment_list

    path = layout.segment_boxes_only_list(split)
    return read_segment_list(path) if path.is_file() else []


def mal_pseudo_mask_dir(params: Params, split: str) -> Path:
    """MAL's masks of the drawn boxes of ``split``'s boxes-only pairs (val, test): the pseudo-truth
    ChangeNet-Segmentation is judged against there with ``segment.train.labels: mal``; train: :func:`mal_mask_dir`."""
    return mal_mask_dir(params) if split == "train" else mal_labels_dir(params) / f"{split}_masks"


def _label_boxes_only_splits(params: Params, layout: Any, model: Any, staging: Path) -> dict[str, float]:
    """Label the drawn boxes of the val/test pairs that have no painted mask (``<split>_masks/<name>.png``).

    Boxes-only data has no true outline anywhere; these masks are the only pixel truth segmentation
    can be judged on there, and its metrics say so (``truth/mal_pseudo_pairs``). MAL never trains on
    them (unless ``mal.train.use_val_boxes``); only the boxes of these pairs are read, never a mask.
    """
    from components.imageio import write_png
    from components.labeling.checks import validate_labels
    from components.labeling.coco_boxes import load_box_job
    from components.labeling.rle import decode_rle
    from components.labeling.writer import label_coco

    metrics: dict[str, float] = {}
    for split in ("val", "test"):
        names = set(_boxes_only_names(layout, split))
        if not names or not layout.coco_json(split).is_file():
            continue
        document = json.loads(layout.coco_json(split).read_text())
        images = [image for image in document["images"] if _sample_name(image["file_name"]) in names]
        ids = {image["id"] for image in images}
        subset = {
            **document,
            "images": images,
            "annotations": [a for a in document["annotations"] if a["image_id"] in ids],
        }
        boxes = staging / f".{split}_boxes_only.json"
        boxes.write_text(json.dumps(subset))
        out = staging / f"{split}_boxes_only.json"
        try:
            label_coco(load_box_job(boxes, params.datasets_dir), mal_predictor(model, params), out)
        finally:
            boxes.unlink(missing_ok=True)
        validate_labels(out, params.datasets_dir).raise_for_failures()
        masks = _masks_by_sample(json.loads(out.read_text()), decode_rle)
        for name in sorted(names & set(masks)):
            write_png(staging / f"{split}_masks" / f"{name}.png", masks[name].astype(np.uint8) * 255)
        metrics[f"label/{split}_boxes_only_pairs"] = float(len(names & set(masks)))
    return metrics


def _sample_name(file_name: str) -> str:
    """``segment/A/<name>.png`` -> ``<name>``: COCO images of this project are segmentation A images."""
    return Path(file_name).stem


def _masks_by_sample(document: dict[str, Any], decode: Any) -> dict[str, np.ndarray]:
    """Union of each image's instance masks, keyed by segmentation sample name."""
    files = {image["id"]: image["file_name"] for image in document["images"]}
    masks: dict[str, np.ndarray] = {}
    for annotation in document["annotations"]:
        name = _sample_name(files[annotation["image_id"]])
        mask = decode(annotation["segmentation"])
        masks[name] = masks[name] | mask if name in masks else mask
    return masks


def _image_quality(layout: Any, written: dict[str, np.ndarray]) -> dict[str, float]:
    """What ChangeNet will train on against the painted train masks, per image.

    ``label/train_image_iou``: mean IoU of each defective image's label mask (the union of its
    instance masks) with its true mask; ``label/train_false_masks``: share of good train images
    that got a mask anyway. Whatever the boxes came from (drawn, or the CAM's), this is the
    quality of the chain's last link. Read only here, after labelling.
    """
    from components.imageio import read_mask

    ious, false_masks, good = [], 0, 0
    for name, mask in written.items():
        path = layout.segment_image("label", name)
        if not path.is_file():
            return {}
        truth = read_mask(path)
        if truth.shape != mask.shape:  # data.tiling keeps the label at native size; MAL's masks are resized
            from PIL import Image

            picture = Image.fromarray(truth.astype(np.uint8) * 255)
            truth = np.asarray(picture.resize(mask.shape[::-1], Image.Resampling.NEAREST)) > 127
        if not truth.any():
            good += 1
            false_masks += int(mask.any())
            continue
        union = np.logical_or(mask, truth).sum()
        ious.append(float(np.logical_and(mask, truth).sum() / union))
    metrics = {"label/train_false_masks": false_masks / good} if good else {}
    return metrics | ({"label/train_image_iou": float(np.mean(ious))} if ious else {})


def _label_quality(truth_path: Path, labelled: dict[str, Any]) -> dict[str, float]:
    """mIoU of the written labels against the true train masks: how good ChangeNet's inputs are.

    Read only here, after labelling, and only when the prepared file has masks.
    """
    from components.labeling.rle import annotation_mask

    truth = json.loads(truth_path.read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in truth["images"]}
    true_by_id = {a["id"]: a for a in truth["annotations"] if a.get("segmentation")}
    ious = []
    for annotation in labelled["annotations"]:
        true = true_by_id.get(annotation["id"])
        if true is None:
            continue
        height, width = sizes[annotation["image_id"]]
        pred = annotation_mask(annotation, height, width)
        gt = annotation_mask(true, height, width)
        union = np.logical_or(pred, gt).sum()
        ious.append(float(np.logical_and(pred, gt).sum() / union) if union else 1.0)
    return {"label/train_miou": float(np.mean(ious))} if ious else {}


__all__ = [
    "label_file",
    "label_stage",
    "mal_labels_dir",
    "mal_mask_dir",
    "mal_predictor",
    "mal_pseudo_mask_dir",
    "mal_train_boxes",
]

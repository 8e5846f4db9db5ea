"""Data side of MAL: one box crop per COCO annotation, a teacher and a student view of it.

Reads COCO instance files as written by :mod:`components.data.coco` (``file_name`` relative to
the datasets root, e.g. ``segment/A/<name>.png``; ``bbox`` ``[x, y, w, h]``; RLE segmentation).
MAL learns from **boxes only**: unless ``load_masks`` is set (validation: the mIoU needs the
ground truth), the ``segmentation`` key of an annotation is never read, so box-only files
(a detector's output, or a dataset labelled with boxes) train as they are.

A sample (paper, section 3.1 and its training recipe):

- ``teacher``: the box crop (:func:`~components.models.mal.crops.train_crop_box` in training,
  the centred 1.3x :func:`~components.models.mal.crops.test_crop_box` otherwise), resized to
  ``crop_size``, float ``[3, S, S]`` in [0, 1], no photometric change;
- ``student``: the same crop with colour jitter, grayscale and Gaussian blur, each drawn with
  its probability. The EMA teacher sees clean crops and gives steadier targets; the student
  must produce them from distorted ones (a consistency signal, as in mean-teacher training);
- a horizontal flip moves both views and the box mask together;
- ``box_mask`` ``[1, S, S]``, ``crop_box`` / ``box`` (xyxy in image pixels), ids, ``box_area``,
  ``category`` (name) and, with ``load_masks``, ``gt_mask`` (``[H, W]`` uint8).

**Reproducibility.** Every random draw of a sample comes from its own generator seeded with
``(seed, epoch, index)``, in a fixed number and order, so a sample does not depend on worker
count, on loading order or on other samples. :class:`EpochSeededSampler` hands the dataset
``(epoch, index)`` keys (Lightning calls its ``set_epoch`` every epoch); a bare integer index
uses the epoch of :meth:`BoxCropDataset.set_epoch`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset, Sampler

from components.config import MalEvalParams, MalTrainParams
from components.imageio import ImageReadError, read_image
from components.models.mal.crops import box_mask_in_crop, crop_and_resize, test_crop_box, train_crop_box

__all__ = [
    "BoxCropDataset",
    "EpochSeededSampler",
    "MalDataError",
    "MalDataModule",
    "collate",
    "has_outlines",
    "student_view",
]

_log = logging.getLogger(__name__)

SampleKey = int | tuple[int, int]
"""A dataset key: a bare index (uses the dataset's current epoch) or ``(epoch, index)``."""

# Student-only photometric augmentation of the paper (torchvision ColorJitter(0.4, 0.4, 0.2, 0.1)).
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.4, 0.4, 0.2, 0.1
BLUR_SIGMA_AT_512 = (0.1, 2.0)
"""PIL GaussianBlur radius range of the paper at its 512 px crops; scaled to ``crop_size``."""
BOX_TOLERANCE = 1.0
"""How far (px) a box may reach past the image border before it is an error (then clipped)."""

_SHUFFLE_STREAM = 0
_PHOTOMETRIC_DRAWS = 12  # fixed count, so one decision never shifts another


class MalDataError(ValueError):
    """A COCO file or image MAL cannot use; the message names the file and annotation id."""


@dataclass(frozen=True)
class _Instance:
    ann_id: int
    image_id: int
    category_id: int
    category: str
    file_name: str
    box: tuple[float, float, float, float]  # xyxy, image pixels
    image_hw: tuple[int, int] | None


def _generator_seed(*parts: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(p) for p in parts])


# ------------------------------------------------------------------------------- augmentation


def student_view(
    image: torch.Tensor, draws: np.ndarray, color_jitter: float, grayscale: float, blur: float
) -> torch.Tensor:
    """The student's photometric distortion of a ``[3, S, S]`` crop in [0, 1], from 12 uniform draws.

    Colour jitter (brightness, contrast, saturation, hue in a random order), then grayscale,
    then Gaussian blur, each applied with its probability, as in the paper's student pipeline.
    """
    if draws.shape != (_PHOTOMETRIC_DRAWS,):
        raise ValueError(f"need {_PHOTOMETRIC_DRAWS} draws, got {draws.shape}")
    if draws[0] < color_jitter:
        factors = {
            "brightness": 1.0 + (2.0 * draws[1] - 1.0) * BRIGHTNESS,
            "contrast": 1.0 + (2.0 * draws[2] - 1.0) * CONTRAST,
            "saturation": 1.0 + (2.0 * draws[3] - 1.0) * SATURATION,
            "hue": (2.0 * draws[4] - 1.0) * HUE,
        }
        order = np.argsort(draws[5:9])  # a random permutation of the four from fixed draws
        operations = list(factors)
        for position in order:
            name = operations[int(position)]
            value = float(factors[name])
            if name == "brightness":
                image = TF.adjust_brightness(image, value)
            elif name == "contrast":
                image = TF.adjust_contrast(image, value)
            elif name == "saturation":
                image = TF.adjust_saturation(image, value)
            else:
                image = TF.adjust_hue(image, value)
    if draws[9] < grayscale:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if draws[10] < blur:
        scale = image.shape[-1] / 512.0
        sigma = (BLUR_SIGMA_AT_512[0] + draws[11] * (BLUR_SIGMA_AT_512[1] - BLUR_SIGMA_AT_512[0])) * scale
        kernel = 2 * int(np.ceil(3.0 * sigma)) + 1
        if kernel >= 3:
            image = TF.gaussian_blur(image, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
    return image.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------ dataset


class BoxCropDataset(Dataset[dict[str, Any]]):
    """One item per usable annotation of a COCO file: a box crop, its two views and its box mask.

    Args:
        coco_json: COCO instances file.
        images_root: folder ``file_name`` is relative to (the datasets root).
        crop_size: side ``S`` of the square crops.
        train: random crops and augmentation (else the centred test crop, unaugmented).
        margin_range: training crop margins (see :func:`train_crop_box`).
        test_margin: evaluation crop margin (see :func:`test_crop_box`).
        hflip, color_jitter, grayscale, blur: probabilities (training only; the last three
            change the student view only).
        seed: base of every sample's generator.
        load_masks: decode each annotation's ``segmentation`` into ``gt_mask`` (evaluation).
        min_box_size: boxes thinner than this (px, either side) are skipped and counted.

    Raises:
        MalDataError: missing/unreadable JSON, a missing image file, a zero-area box, a box
            outside its image, or (``load_masks``) no annotation with a ``segmentation`` (those
            without one are left out and listed in :attr:`unscored`).
    """

    def __init__(
        self,
        coco_json: Path | str,
        images_root: Path | str,
        crop_size: int,
        train: bool,
        margin_range: tuple[float, float] = (0.0, 1.2),
        test_margin: float = 0.6,
        hflip: float = 0.5,
        color_jitter: float = 0.5,
        grayscale: float = 0.2,
        blur: float = 0.5,
        seed: int = 0,
        load_masks: bool = False,
        min_box_size: int = 2,
    ) -> None:
        self.coco_json = Path(coco_json)
        self.images_root = Path(images_root)
        self.crop_size = int(crop_size)
        self.train = bool(train)
        self.margin_range = (float(margin_range[0]), float(margin_range[1]))
        self.test_margin = float(test_margin)
        self.hflip, self.color_jitter, self.grayscale, self.blur = hflip, color_jitter, grayscale, blur
        self.seed = int(seed)
        self.load_masks = bool(load_masks)
        self.min_box_size = int(min_box_size)
        self.epoch = 0
        self.unscored: list[int] = []
        """(``load_masks``) ids of annotations without a ``segmentation``: left out, nothing to score them on."""
        coco = self._read_json()
        self.instances, self.skipped = self._index(coco)
        # The segmentations are kept only when asked for (and read from the annotation dicts
        # only then): box-only files must work.
        self._segmentations: dict[int, Any] = (
            {int(a["id"]): a["segmentation"] for a in coco["annotations"] if int(a["id"]) in self._ids}
            if self.load_masks
            else {}
        )
        if self.skipped:
            _log.info("%s: skipped %d box(es) thinner than %d px", self.coco_json, self.skipped, self.min_box_size)
        if self.unscored:
            _log.warning(
                "%s: %d annotation(s) without a segmentation left out of scoring (first: %d)",
                self.coco_json,
                len(self.unscored),
                self.unscored[0],
            )
        if not self.instances:
            unscored = f", {len(self.unscored)} without a segmentation" if self.unscored else ""
            raise MalDataError(f"{self.coco_json}: no usable box annotations ({self.skipped} too thin{unscored})")
        self._check_files()

    # -------------------------------------------------------------------------- reading

    def _read_json(self) -> dict[str, Any]:
        if not self.coco_json.is_file():
            raise MalDataError(f"{self.coco_json}: COCO annotation file not found")
        try:
            coco = json.loads(self.coco_json.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise MalDataError(f"{self.coco_json}: not a readable JSON file ({error})") from None
        if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations")):
            raise MalDataError(f"{self.coco_json}: not a COCO instances file (needs 'images' and 'annotations' lists)")
        return coco

    def _index(self, coco: dict[str, Any]) -> tuple[list[_Instance], int]:
        images = {int(image["id"]): image for image in coco["images"]}
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in coco.get("categories", [])}
        instances: list[_Instance] = []
        skipped = 0
        for ann in coco["annotations"]:
            ann_id = int(ann["id"])
            where = f"{self.coco_json}: annotation {ann_id}"
            image = images.get(int(ann["image_id"]))
            if image is None:
                raise MalDataError(f"{where}: refers to image id {ann['image_id']}, which is not in 'images'")
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 0 or h <= 0:
                raise MalDataError(f"{where} ({image['file_name']}): box {ann['bbox']} has zero area")
            if self.load_masks and not ann.get("segmentation"):
                # A box whose outline nobody drew (a pairs source with boxes only) cannot be scored.
                self.unscored.append(ann_id)
                continue
            hw = (int(image["height"]), int(image["width"])) if "height" in image and "width" in image else None
            box = (x, y, x + w, y + h)
            if hw is not None:
                box = self._inside(box, hw, f"{where} ({image['file_name']})")
            if min(box[2] - box[0], box[3] - box[1]) < self.min_box_size:
                skipped += 1
                continue
            category_id = int(ann.get("category_id", 0))
            instances.append(
                _Instance(
                    ann_id=ann_id,
                    image_id=int(image["id"]),
                    category_id=category_id,
                    category=names.get(category_id, str(category_id)),
                    file_name=str(image["file_name"]),
                    box=box,
                    image_hw=hw,
                )
            )
        self._ids = {instance.ann_id for instance in instances}
        return instances, skipped

    @staticmethod
    def _inside(
        box: tuple[float, float, float, float], hw: tuple[int, int], where: str
    ) -> tuple[float, float, float, float]:
        """The box clipped to the image; an error when it reaches past a border by more than a pixel."""
        height, width = hw
        x0, y0, x1, y1 = box
        if x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE:
            raise MalDataError(f"{where}: box xyxy {list(box)} lies outside the {width}x{height} image")
        clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise MalDataError(f"{where}: box xyxy {list(box)} has zero area inside the {width}x{height} image")
        return clipped

    def _check_files(self) -> None:
        """Every image exists: a missing file should stop the run now, not mid-epoch."""
        missing: dict[str, int] = {}
        for instance in self.instances:
            if instance.file_name not in missing and not (self.images_root / instance.file_name).is_file():
                missing[instance.file_name] = instance.ann_id
        if missing:
            shown = "; ".join(
                f"{self.images_root / name} (annotation {ann})" for name, ann in list(missing.items())[:5]
            )
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise MalDataError(f"{self.coco_json}: {len(missing)} image file(s) not found: {shown}{more}")

    def _load_image(self, instance: _Instance) -> np.ndarray:
        path = self.images_root / instance.file_name
        try:
            image = read_image(path)
        except ImageReadError as error:
            raise MalDataError(f"{self.coco_json}: annotation {instance.ann_id}: {error}") from None
        if instance.image_hw is not None and image.shape[:2] != instance.image_hw:
            raise MalDataError(
                f"{self.coco_json}: annotation {instance.ann_id}: {path} is {image.shape[1]}x{image.shape[0]}, "
                f"the JSON says {instance.image_hw[1]}x{instance.image_hw[0]}"
            )
        if instance.image_hw is None:  # no size in the JSON: check the box against the pixels
            self._inside(instance.box, image.shape[:2], f"{self.coco_json}: annotation {instance.ann_id} ({path})")
        return image

    def gt_mask(self, index: int, image_hw: tuple[int, int]) -> np.ndarray:
        """The annotation's ground-truth mask ``[H, W]`` uint8 (polygons or RLE, via pycocotools)."""
        from pycocotools import mask as mask_utils

        instance = self.instances[index]
        segmentation = self._segmentations[instance.ann_id]
        height, width = image_hw
        try:
            if isinstance(segmentation, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            mask = mask_utils.decode(rle)
        except Exception as error:  # pycocotools raises bare Exceptions for bad input
            raise MalDataError(
                f"{self.coco_json}: annotation {instance.ann_id}: cannot decode its segmentation ({error})"
            ) from None
        if mask.shape != (height, width):
            raise MalDataError(
                f"{self.coco_json}: annotation {instance.ann_id}: segmentation is {mask.shape[1]}x{mask.shape[0]}, "
                f"its image {width}x{height}"
            )
        return mask.astype(np.uint8)

    # ---------------------------------------------------------------------------- items

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for bare integer keys (the training sampler passes it explicitly instead)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(index)
        instance = self.instances[index]
        image = self._load_image(instance)
        size = self.crop_size
        rng = np.random.default_rng(_generator_seed(self.seed, epoch, index))
        crop = (
            train_crop_box(instance.box, self.margin_range, rng)
            if self.train
            else test_crop_box(instance.box, self.test_margin)
        )
        teacher = torch.from_numpy(crop_and_resize(image, crop, size)).permute(2, 0, 1).div_(255.0).clamp_(0.0, 1.0)
        box_mask = torch.from_numpy(box_mask_in_crop(instance.box, crop, size)).unsqueeze(0)
        flip = False
        student = teacher
        if self.train:
            flip = bool(rng.random() < self.hflip)
            if flip:
                teacher, box_mask = teacher.flip(-1), box_mask.flip(-1)
            draws = rng.random(_PHOTOMETRIC_DRAWS)
            student = student_view(teacher, draws, self.color_jitter, self.grayscale, self.blur)
        x0, y0, x1, y1 = instance.box
        item: dict[str, Any] = {
            "teacher": teacher.contiguous(),
            "student": student.contiguous(),
            "box_mask": box_mask.contiguous(),
            "crop_box": torch.tensor(crop, dtype=torch.float32),
            "box": torch.tensor(instance.box, dtype=torch.float32),
            "hflip": flip,
            "ann_id": instance.ann_id,
            "image_id": instance.image_id,
            "category_id": instance.category_id,
            "category": instance.category,
            "box_area": float((x1 - x0) * (y1 - y0)),
        }
        if self.load_masks:
            item["gt_mask"] = torch.from_numpy(self.gt_mask(index, image.shape[:2]))
        return item


_STACKED = ("teacher", "student", "box_mask", "crop_box", "box")
_INTEGERS = ("ann_id", "image_id", "category_id")


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items: crops, masks and boxes stacked; ids as int64 tensors; ``gt_mask``/names as lists.

    Ground-truth masks keep their image's size, so they cannot be stacked.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {key: torch.stack([item[key] for item in items]) for key in _STACKED}
    for key in _INTEGERS:
        batch[key] = torch.tensor([item[key] for item in items], dtype=torch.int64)
    batch["box_area"] = torch.tensor([item["box_area"] for item in items], dtype=torch.float64)
    batch["hflip"] = torch.tensor([item["hflip"] for item in items], dtype=torch.bool)
    batch["category"] = [item["category"] for item in items]
    if "gt_mask" in items[0]:
        batch["gt_mask"] = [item["gt_mask"] for item in items]
    return batch


# ------------------------------------------------------------------------------------ sampling


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` keys in an order fixed by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each training epoch (and forwards it through its
    distributed sampler wrapper under DDP).
    """

    def __init__(self, num_items: int, seed: int, shuffle: bool = True) -> None:
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.num_items)
        if self.shuffle:
            order = np.random.default_rng(_generator_seed(self.seed, _SHUFFLE_STREAM, self.epoch)).permutation(order)
        return iter([(self.epoch, int(i)) for i in order])


class _KeyedConcat(Dataset[dict[str, Any]]):
    """Several :class:`BoxCropDataset` as one, keeping ``(epoch, index)`` keys (ConcatDataset drops them)."""

    def __init__(self, parts: Sequence[BoxCropDataset]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        part = int(np.searchsorted(self.offsets, int(index), side="right") - 1)
        local = int(index) - int(self.offsets[part])
        return self.parts[part][(epoch, local) if epoch is not None else local]


# --------------------------------------------------------------------------------- data module


def has_outlines(coco_json: Path) -> bool:
    """Whether any annotation of ``coco_json`` has a ``segmentation`` (a true outline to score masks on)."""
    try:
        document = json.loads(Path(coco_json).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise MalDataError(f"{coco_json}: not a readable JSON file ({error})") from None
    return any(a.get("segmentation") for a in document.get("annotations", []))


class MalDataModule(L.LightningDataModule):
    """Train loader over box crops of one or more COCO files; val loader with masks for the mIoU.

    Args:
        train_json: the training COCO file(s); their ``segmentation`` is never read.
        val_json: the validation COCO file (needs ``segmentation``); ``None``: no validation.
            With ``train.use_val_boxes`` its *boxes* are also trained on (never its masks).
        images_root: folder the ``file_name`` entries are relative to.
        crop_size: the model's crop size.
        train, eval: the ``mal.train`` and ``mal.eval`` sections (objects or plain dicts).
        seed: base seed of the shuffle and of every sample's augmentation.
    """

    def __init__(
        self,
        train_json: Path | str | Sequence[Path | str],
        val_json: Path | str | None,
        images_root: Path | str,
        crop_size: int,
        train: MalTrainParams | dict[str, Any],
        eval: MalEvalParams | dict[str, Any],
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_files = [Path(train_json)] if isinstance(train_json, str | Path) else [Path(p) for p in train_json]
        self.val_json = Path(val_json) if val_json is not None else None
        self.images_root = Path(images_root)
        self.crop_size = int(crop_size)
        self.train_params = train if isinstance(train, MalTrainParams) else MalTrainParams.model_validate(train)
        self.eval_params = eval if isinstance(eval, MalEvalParams) else MalEvalParams.model_validate(eval)
        self.seed = int(seed)
        self.train_set: _KeyedConcat | None = None
        self.val_set: BoxCropDataset | None = None

    def _train_part(self, path: Path, part: int) -> BoxCropDataset:
        t = self.train_params
        return BoxCropDataset(
            path,
            self.images_root,
            self.crop_size,
            train=True,
            margin_range=t.margin_range,
            test_margin=self.eval_params.test_margin,
            hflip=t.hflip,
            color_jitter=t.color_jitter,
            grayscale=t.grayscale,
            blur=t.blur,
            seed=self.seed + 1_000_003 * part,  # distinct draws for index i of different files
            load_masks=False,
            min_box_size=t.min_box_size,
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            files = list(self.train_files)
            if self.train_params.use_val_boxes and self.val_json is not None and self.val_json not in files:
                files.append(self.val_json)
            self.train_set = _KeyedConcat([self._train_part(path, i) for i, path in enumerate(files)])
        if stage in (None, "fit", "validate") and self.val_set is None and self.val_json is not None:
            if not has_outlines(self.val_json):
                # Boxes only (e.g. a pairs source without masks): nothing to score a mask against, so
                # no val loop; best.ckpt is the last epoch and evaluate reports box-only measures.
                _log.warning("%s: no annotation has an outline; MAL trains without a val mIoU", self.val_json)
                return
            self.val_set = BoxCropDataset(
                self.val_json,
                self.images_root,
                self.crop_size,
                train=False,
                test_margin=self.eval_params.test_margin,
                seed=self.seed,
                load_masks=True,
                min_box_size=1,  # score every annotated instance
            )

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        workers = self.train_params.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        sampler = EpochSeededSampler(len(self.train_set), self.seed, shuffle=True)
        return self._loader(self.train_set, self.train_params.batch_size, sampler)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if self.val_set is None:
            self.setup("validate")
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.eval_params.batch_size)

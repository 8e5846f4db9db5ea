"""Data side of the CAM classifier: single images with their image label, read from the prepared datasets.

The prepare stage writes ``segment/A/<name>.png`` (the test image), ``segment/label/<name>.png``
(its defect mask, empty for a good part) and ``segment/list/<split>.txt``; this module reads A and
the mask and ignores the golden (B). So the classifier trains and is judged on exactly the split
the other families use, which prepare already stratifies per class (defect kind).

**Sources without masks** (class folders) have no segmentation set: prepare writes
``image_labels/<split>.csv`` instead (:data:`~components.data.formats.IMAGE_LABEL_COLUMNS`: name,
image, label), and every image comes with its label and an empty mask flagged as unknown
(``has_mask`` False), so the box evaluation skips it rather than scoring a box against nothing.
Which one is read: the segmentation lists when prepare wrote them, else the image-label lists.

**The image label** is *anomaly* when the mask has any pixel, or when the name says so: MVTec and
the synthetic source name samples ``<label>_<split>_<stem>``
(:func:`components.models.changenet.metrics.sample_kind`), and a tiny defect whose mask vanished
when prepare resized it is still a defect. ``kind`` is that label (``good`` or the defect kind),
``""`` for sources whose names carry none.

**The mask** is only for judging the CAM's box (:mod:`.evaluate`); training never sees it.

**Any image**: grey, palette or RGBA files are converted to RGB, and images of any size are
resized to ``image_size`` (bilinear with antialiasing; the mask with nearest neighbours), so a
stray odd-sized or grayscale file neither breaks a batch nor needs its own preparation.

**Augmentation** (train only, light: a defect must stay where it is and look like itself):
horizontal (and optionally vertical) flips moving image and mask together, and the photometric
jitter of the other families (:func:`components.models.changenet.data.augment_photometric`).
Every draw comes from a generator seeded from ``(seed, epoch, index)``, like the other families'
data, so a sample's augmentation depends on nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from components.config import CamAugmentParams
from components.data.formats import SPLITS, DatasetLayout, read_image_labels, read_segment_list
from components.evaluation.calibration import split_off
from components.imageio import ImageReadError, read_image, read_mask
from components.models.changenet.data import EpochSeededSampler, augment_photometric, make_loader, stream_seed
from components.models.changenet.metrics import GOOD_LABEL, sample_kind

__all__ = ["CamDataError", "CamDataModule", "CamDataset", "load_image", "load_mask"]

_AUGMENT_STREAM = 5
"""Separates this family's augmentation draws from the other families' streams of the same seed."""
_GEOMETRIC_DRAWS = 2


class CamDataError(ValueError):
    """A split that cannot be read; the message names the file."""


def load_image(path: Path, size: int | None) -> torch.Tensor:
    """``(3, size, size)`` floats in [0, 1] from any image file (grey and RGBA converted to RGB)."""
    try:
        array = read_image(path, mode="RGB")
    except ImageReadError as error:
        raise CamDataError(str(error)) from None
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return image.clamp_(0.0, 1.0)


def load_mask(path: Path, size: int | None) -> torch.Tensor:
    """``(size, size)`` uint8 0/1 defect mask (nearest-neighbour resize, like prepare)."""
    try:
        mask = torch.from_numpy(read_mask(path).astype(np.uint8))
    except ImageReadError as error:
        raise CamDataError(str(error)) from None
    if size is not None and tuple(mask.shape) != (size, size):
        mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0].to(torch.uint8)
    return mask


class CamDataset(Dataset[dict[str, Any]]):
    """One split as ``{"image", "label", "mask", "has_mask", "name", "kind"}`` samples (see the module docstring).

    ``image``: float32 ``(3, S, S)`` in [0, 1]; ``label``: 0 good, 1 anomaly; ``mask``: uint8
    ``(S, S)`` of 0/1 (all zero for a good part, and for every image of an image-label list, whose
    ``has_mask`` is False). ``S`` is ``image_size``; ``None`` keeps each file's size (then every
    file of the split must have the same size to be batched).
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        image_size: int | None = None,
        augment: CamAugmentParams | None = None,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise CamDataError(f"split must be one of {SPLITS}, got {split!r}")
        self.layout = DatasetLayout(Path(root))
        self.split = split
        self.image_size = image_size
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        list_path = self.layout.segment_list(split)
        self.images: dict[str, Path] | None = None
        """Image-label lists: each name's image; ``None`` for the segmentation set (A and its mask)."""
        if not list_path.is_file() and self.layout.image_labels_csv(split).is_file():
            list_path = self.layout.image_labels_csv(split)
            try:
                rows = read_image_labels(list_path)
            except (OSError, ValueError) as error:
                raise CamDataError(str(error)) from None
            self.names = [row["name"] for row in rows]
            self.images = {row["name"]: self.layout.root / row["image"] for row in rows}
            self.kinds: list[str | None] = [row["label"] for row in rows]
        elif not list_path.is_file():
            raise CamDataError(f"{list_path}: split list not found (run the prepare stage first)")
        else:
            self.names = read_segment_list(list_path)
            self.kinds = [sample_kind(name) for name in self.names]
        if not self.names:
            raise CamDataError(f"{list_path}: lists no samples")
        missing = [p for name in self.names for p in self._files(name) if not p.is_file()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise CamDataError(f"{len(missing)} file(s) listed in {list_path} are missing: {shown}{more}")
        self.labels: list[int] = [self._label(name, kind) for name, kind in zip(self.names, self.kinds, strict=True)]
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def has_masks(self) -> bool:
        """Whether the split's defects come with masks (the segmentation set) or with image labels only."""
        return self.images is None

    def _files(self, name: str) -> tuple[Path, ...]:
        return (self.image_path(name), self.mask_path(name)) if self.images is None else (self.image_path(name),)

    def image_path(self, name: str) -> Path:
        if self.images is not None:
            return self.images[name]
        return self.layout.segment_image("A", name)

    def mask_path(self, name: str) -> Path:
        return self.layout.segment_image("label", name)

    def _label(self, name: str, kind: str | None) -> int:
        if kind is not None and kind != GOOD_LABEL:
            return 1
        if self.images is not None:
            return 0
        try:
            return int(read_mask(self.mask_path(name)).any())
        except ImageReadError as error:
            raise CamDataError(str(error)) from None

    def __len__(self) -> int:
        return len(self.names)

    def part_names(self) -> list[str]:
        return list(self.names)

    def part_defects(self) -> list[bool]:
        return [bool(label) for label in self.labels]

    def restrict(self, keep: frozenset[str]) -> None:
        """Keep only the images named in ``keep`` (the calibration cut, :mod:`components.evaluation.calibration`)."""
        kept = [i for i, name in enumerate(self.names) if name in keep]
        if not kept:
            raise CamDataError(f"{self.split}: no image left after the calibration cut")
        self.names = [self.names[i] for i in kept]
        self.kinds = [self.kinds[i] for i in kept]
        self.labels = [self.labels[i] for i in kept]
        self._cache = {}

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for bare integer keys (the training sampler passes ``(epoch, index)`` instead)."""
        self.epoch = int(epoch)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-augmented ``(image, mask)`` of sample ``index``, decoded once and kept (a split is read every epoch)."""
        if index not in self._cache:
            name = self.names[index]
            image = load_image(self.image_path(name), self.image_size)
            if self.images is not None:  # image labels only: an empty mask, flagged unknown by has_mask
                mask = torch.zeros(tuple(image.shape[-2:]), dtype=torch.uint8)
            else:
                mask = load_mask(self.mask_path(name), self.image_size)
            if tuple(mask.shape) != tuple(image.shape[-2:]):
                raise CamDataError(
                    f"sample {name}: image {tuple(image.shape[-2:])} and mask {tuple(mask.shape)} differ in size"
                )
            self._cache[index] = (image, mask)
        return self._cache[index]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(index)
        image, mask = self.load(index)
        if self.augment is not None:
            image, mask = self._augment(image, mask, epoch, index)
        return {
            "image": image,
            "label": self.labels[index],
            "mask": mask,
            "has_mask": self.images is None,
            "name": self.names[index],
            "kind": self.kinds[index] or "",
        }

    def _augment(
        self, image: torch.Tensor, mask: torch.Tensor, epoch: int, index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.augment
        assert params is not None
        generator = torch.Generator().manual_seed(stream_seed(self.seed, _AUGMENT_STREAM, epoch, index))
        u = torch.rand(_GEOMETRIC_DRAWS, generator=generator)
        if u[0] < params.hflip:
            image, mask = image.flip(-1), mask.flip(-1)
        if u[1] < params.vflip:
            image, mask = image.flip(-2), mask.flip(-2)
        return augment_photometric(image, params, generator), mask  # type: ignore[arg-type]


class CamDataModule(L.LightningDataModule):
    """Train (shuffled, augmented) and val/test (neither) loaders of the prepared segmentation split."""

    def __init__(
        self,
        root: Path | str,
        image_size: int | None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: CamAugmentParams | None = None,
        seed: int = 0,
        calibration: tuple[float, int] = (0.0, 0),
    ) -> None:
        """``calibration``: ``(data.calibration_fraction, data seed)``; that share of train is held out
        (:func:`~components.evaluation.calibration.split_off`) for choosing thresholds."""
        super().__init__()
        self.calibration = calibration
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.seed = seed
        self.sets: dict[str, CamDataset] = {}

    def dataset(self, split: str) -> CamDataset:
        if split not in self.sets:
            augment = self.augment if split == "train" else None
            self.sets[split] = CamDataset(self.root, split, self.image_size, augment=augment, seed=self.seed)
            if split == "train" and self.calibration[0] > 0:
                split_off(self.sets[split], *self.calibration, calibration=False)
        return self.sets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        if stage in (None, "fit", "validate"):
            self.dataset("val")

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        return make_loader(train, self.batch_size, self.num_workers, EpochSeededSampler(len(train), self.seed))

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.dataset("val"), self.eval_batch_size, self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return make_loader(self.dataset("test"), self.eval_batch_size, self.num_workers)

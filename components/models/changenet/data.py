"""Data side of Visual ChangeNet-Segmentation training: dataset, augmentation, data module.

Reads the TAO layout written by preparation (``segment/{A,B,label}/<name>.png`` and
``segment/list/<split>.txt``; A is the test image, B its golden, label a 0/255 mask).

**Reproducibility.** Every random decision of a sample is drawn from its own
``torch.Generator`` seeded from ``(seed, epoch, index)``, and the training sampler hands
the dataset ``(epoch, index)`` keys rather than bare indices. So a sample's augmentation
depends on nothing else: not on the number of workers, on whether they persist between
epochs, on which DDP rank loads it, nor on what was loaded before. The epoch reaches the
sampler through ``set_epoch``, which Lightning calls at the start of every epoch (and
forwards through its distributed sampler wrapper under DDP).

**Augmentation.** Geometric transforms (flips, 90-degree rotations, random resized crop)
move the test image, the golden and the mask *together*, because the model compares
pixel for pixel and the mask must stay aligned. Photometric transforms (blur, colour
jitter) are drawn *separately* for test and golden: real golden/test pairs differ in
focus and lighting, and the model must learn not to call that a change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset, Sampler

from components.config import AugmentParams
from components.data.formats import SEGMENT_KINDS, SPLITS, DatasetLayout, read_segment_list
from components.imageio import ImageReadError, read_image, read_mask

SampleKey = int | tuple[int, int]
"""A dataset key: a bare index (uses the dataset's current epoch) or ``(epoch, index)``."""

# Fixed shapes of the photometric transforms; the probabilities and strengths are in AugmentParams.
BLUR_KERNEL = 5
BLUR_SIGMA = (0.1, 1.5)
CROP_ASPECT = (3 / 4, 4 / 3)

# Stream tags keep the shuffle order and the per-sample augmentation independent.
_SHUFFLE_STREAM, _AUGMENT_STREAM, _DEFECT_STREAM, _GOOD_STREAM = 0, 1, 2, 3

# Uniform draws per sample, in a fixed order, so one decision never shifts another.
_GEOMETRIC_DRAWS = 9
_PHOTOMETRIC_DRAWS = 5


class SegmentDataError(ValueError):
    """A segmentation split that cannot be read; the message names the file(s)."""


def stream_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (SeedSequence hashing; ``hash()`` is salted per process)."""
    words = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(*parts))


# ----------------------------------------------------------------------------- augmentation


def _resized_crop(
    image: torch.Tensor, top: int, left: int, height: int, width: int, size: tuple[int, int], mode: str
) -> torch.Tensor:
    crop = image[..., top : top + height, left : left + width].unsqueeze(0)
    if mode == "nearest":
        return F.interpolate(crop, size=size, mode="nearest").squeeze(0)
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=False).squeeze(0)


def _crop_box(draws: torch.Tensor, height: int, width: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` covering a ``scale`` fraction of the area with an aspect ratio near 1."""
    area = height * width * (scale[0] + float(draws[0]) * (scale[1] - scale[0]))
    log_low, log_high = np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1])
    aspect = float(np.exp(log_low + float(draws[1]) * (log_high - log_low)))
    crop_w = round(float(np.sqrt(area * aspect)))
    crop_h = round(float(np.sqrt(area / aspect)))
    crop_w, crop_h = min(max(crop_w, 1), width), min(max(crop_h, 1), height)
    top = min(int(float(draws[3]) * (height - crop_h + 1)), height - crop_h)
    left = min(int(float(draws[2]) * (width - crop_w + 1)), width - crop_w)
    return top, left, crop_h, crop_w


def augment_geometric(
    test: torch.Tensor, golden: torch.Tensor, mask: torch.Tensor, params: AugmentParams, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flip / rotate / crop the three arrays by the same draws. Images ``(3,H,W)``, mask ``(H,W)``.

    Rotations by 90 or 270 degrees need a square image (batches must keep one shape);
    a non-square image only ever turns by 180 degrees.
    """
    u = torch.rand(_GEOMETRIC_DRAWS, generator=generator)
    stack = torch.cat([test, golden], dim=0)  # (6, H, W): one op moves both images
    target = mask.unsqueeze(0)
    if u[0] < params.hflip:
        stack, target = stack.flip(-1), target.flip(-1)
    if u[1] < params.vflip:
        stack, target = stack.flip(-2), target.flip(-2)
    if u[2] < params.rotate90:
        square = stack.shape[-1] == stack.shape[-2]
        turns = 1 + min(int(float(u[3]) * 3), 2) if square else 2
        stack, target = torch.rot90(stack, turns, dims=(-2, -1)), torch.rot90(target, turns, dims=(-2, -1))
    if u[4] < params.random_resized_crop:
        height, width = stack.shape[-2:]
        top, left, crop_h, crop_w = _crop_box(u[5:9], height, width, params.crop_scale)
        stack = _resized_crop(stack, top, left, crop_h, crop_w, (height, width), "bilinear").clamp(0.0, 1.0)
        target = _resized_crop(target.float(), top, left, crop_h, crop_w, (height, width), "nearest").to(mask.dtype)
    return stack[:3].contiguous(), stack[3:].contiguous(), target[0].contiguous()


def augment_photometric(image: torch.Tensor, params: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """Blur and brightness/contrast jitter of one ``(3,H,W)`` image in [0, 1], drawn from ``generator``."""
    u = torch.rand(_PHOTOMETRIC_DRAWS, generator=generator)
    if u[0] < params.blur:
        sigma = BLUR_SIGMA[0] + float(u[1]) * (BLUR_SIGMA[1] - BLUR_SIGMA[0])
        image = TF.gaussian_blur(image, kernel_size=[BLUR_KERNEL, BLUR_KERNEL], sigma=[sigma, sigma])
    if u[2] < params.color_jitter:
        brightness = 1.0 + (2.0 * float(u[3]) - 1.0) * params.brightness
        contrast = 1.0 + (2.0 * float(u[4]) - 1.0) * params.contrast
        image = TF.adjust_contrast(TF.adjust_brightness(image, brightness), contrast)
    return image.clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------- dataset


def _to_chw_float(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)


class ChangeSegmentDataset(Dataset[dict[str, Any]]):
    """One split of the TAO segmentation layout as ``{"test", "golden", "mask", "name"}`` samples.

    ``test``/``golden``: float32 ``(3,H,W)`` in [0, 1]; ``mask``: int64 ``(H,W)`` of 0/1.
    With ``augment`` (meant for train only) every sample is augmented from its own
    generator, seeded from ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        augment: AugmentParams | None = None,
        seed: int = 0,
        mask_dir: Path | str | None = None,
    ) -> None:
        """``mask_dir``: read each sample's mask as ``<mask_dir>/<name>.png`` instead of the prepared
        label (e.g. the masks MAL made from boxes, ``segment.train.labels: mal``)."""
        if split not in SPLITS:
            raise SegmentDataError(f"split must be one of {SPLITS}, got {split!r}")
        self.layout = DatasetLayout(Path(root))
        self.split = split
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        list_path = self.layout.segment_list(split)
        if not list_path.is_file():
            raise SegmentDataError(f"{list_path}: split list not found (run the prepare stage first)")
        self.names = read_segment_list(list_path)
        if not self.names:
            raise SegmentDataError(f"{list_path}: lists no samples")
        # Check every file now: a missing one should stop the run before training, not mid-epoch.
        missing = [
            path for name in self.names for kind in SEGMENT_KINDS if not (path := self._path(kind, name)).is_file()
        ]
        if missing:
            shown = ", ".join(str(p) for p in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise SegmentDataError(f"{len(missing)} file(s) listed in {list_path} are missing: {shown}{more}")

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for bare integer keys (the training sampler passes it explicitly instead)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.names)

    def _path(self, kind: str, name: str) -> Path:
        if kind == SEGMENT_KINDS[2] and self.mask_dir is not None:
            return self.mask_dir / f"{name}.png"
        return self.layout.segment_image(kind, name)

    def has_change(self) -> list[bool]:
        """Per sample, whether its mask marks any change (reads the masks only)."""
        flags = []
        for name in self.names:
            path = self._path(SEGMENT_KINDS[2], name)
            try:
                flags.append(bool(read_mask(path).any()))
            except ImageReadError as error:
                raise SegmentDataError(str(error)) from None
        return flags

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw ``(test HxWx3 uint8, golden HxWx3 uint8, mask HxW bool)`` of sample ``index``."""
        name = self.names[index]
        paths = [self._path(kind, name) for kind in SEGMENT_KINDS]
        try:
            test, golden, mask = read_image(paths[0]), read_image(paths[1]), read_mask(paths[2])
        except ImageReadError as error:
            raise SegmentDataError(str(error)) from None
        if not test.shape[:2] == golden.shape[:2] == mask.shape:
            sizes = ", ".join(
                f"{p} {a.shape[1]}x{a.shape[0]}" for p, a in zip(paths, (test, golden, mask), strict=True)
            )
            raise SegmentDataError(f"sample {name}: sizes differ: {sizes}")
        return test, golden, mask

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(index)
        test_np, golden_np, mask_np = self.load(index)
        test, golden = _to_chw_float(test_np), _to_chw_float(golden_np)
        mask = torch.from_numpy(mask_np.astype(np.int64))
        if self.augment is not None:
            generator = _generator(self.seed, _AUGMENT_STREAM, epoch, index)
            test, golden, mask = augment_geometric(test, golden, mask, self.augment, generator)
            test = augment_photometric(test, self.augment, generator)
            golden = augment_photometric(golden, self.augment, generator)
        return {"test": test, "golden": golden, "mask": mask, "name": self.names[index]}


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` keys in an order fixed by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each training epoch; under DDP its
    ``DistributedSamplerWrapper`` forwards the call and shards this order across ranks.
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
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=_generator(self.seed, _SHUFFLE_STREAM, self.epoch))
        else:
            order = torch.arange(self.num_items)
        return iter([(self.epoch, int(i)) for i in order])


def _cycled(indices: list[int], count: int, seed: int, epoch: int, stream: int) -> list[int]:
    """``count`` items of ``indices``: seeded permutations laid end to end, so each repeats evenly."""
    drawn: list[int] = []
    round_ = 0
    while len(drawn) < count:
        order = torch.randperm(len(indices), generator=_generator(seed, stream, epoch, round_))
        drawn.extend(indices[int(i)] for i in order)
        round_ += 1
    return drawn[:count]


class DefectShareSampler(EpochSeededSampler):
    """Like :class:`EpochSeededSampler`, with ``share`` of every epoch drawn from the defective pairs.

    Defective pairs are about one in eight of MVTec transistor's train split, and the thin ones (bent
    and cut leads, case damage) are a few hundred pixels each: raising their share gives the decoder
    more steps on exactly what it misses. The epoch keeps its length (the same steps per epoch, so
    LR schedules and time budgets mean the same); defective and good pairs are each drawn by cycling
    through their own seeded permutations (so the oversampled kind repeats evenly and the other is a
    fresh subset each epoch), and the mixed list is shuffled, all fixed by ``(seed, epoch)``.
    """

    def __init__(self, is_defect: list[bool], share: float, seed: int) -> None:
        if not 0.0 < share < 1.0:
            raise ValueError(f"segment.train.defect_share must lie in (0, 1), got {share}")
        super().__init__(len(is_defect), seed, shuffle=True)
        self.defect = [i for i, d in enumerate(is_defect) if d]
        self.good = [i for i, d in enumerate(is_defect) if not d]
        if not self.defect or not self.good:
            raise SegmentDataError(
                f"segment.train.defect_share needs defective and defect-free train pairs; the train split has "
                f"{len(self.defect)} defective and {len(self.good)} good ones (set defect_share: null)"
            )
        self.num_defect = min(max(1, round(share * self.num_items)), self.num_items - 1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        picks = _cycled(self.defect, self.num_defect, self.seed, self.epoch, _DEFECT_STREAM) + _cycled(
            self.good, self.num_items - self.num_defect, self.seed, self.epoch, _GOOD_STREAM
        )
        order = torch.randperm(len(picks), generator=_generator(self.seed, _SHUFFLE_STREAM, self.epoch))
        return iter([(self.epoch, picks[int(i)]) for i in order])


# ------------------------------------------------------------------------------ data module


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, sampler: Sampler | None = None) -> DataLoader:
    """The loader every ChangeNet data module uses: order from ``sampler`` (or none), workers kept alive."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


class SegmentDataModule(L.LightningDataModule):
    """Train/val(/test) loaders of the prepared segmentation dataset under ``root``.

    Train is shuffled and augmented reproducibly (see the module docstring); val and
    test are neither. The test loader exists only when ``segment/list/test.txt`` does
    (``data.test_fraction`` > 0).
    """

    def __init__(
        self,
        root: Path | str,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: AugmentParams | None = None,
        seed: int = 0,
        eval_batch_size: int | None = None,
        train_mask_dir: Path | str | None = None,
        defect_share: float | None = None,
    ) -> None:
        """``train_mask_dir``: train on these masks instead of the prepared ones (val and test always
        use the prepared true masks, so models trained either way are judged alike).
        ``defect_share``: draw this share of each epoch from the defective pairs
        (:class:`DefectShareSampler`); ``None`` shuffles every pair once."""
        super().__init__()
        self.defect_share = defect_share
        self.root = Path(root)
        self.train_mask_dir = train_mask_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.seed = seed
        self.eval_batch_size = eval_batch_size or batch_size
        self.layout = DatasetLayout(self.root)
        self.train_set: ChangeSegmentDataset | None = None
        self.val_set: ChangeSegmentDataset | None = None
        self.test_set: ChangeSegmentDataset | None = None

    @property
    def has_test(self) -> bool:
        return self.layout.segment_list("test").is_file()

    def setup(self, stage: str | None = None) -> None:
        """Open the splits the stage needs; each checks its files once here."""
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = ChangeSegmentDataset(self.root, "train", self.augment, self.seed, self.train_mask_dir)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = ChangeSegmentDataset(self.root, "val", None, self.seed)
        if stage in (None, "test") and self.test_set is None and self.has_test:
            self.test_set = ChangeSegmentDataset(self.root, "test", None, self.seed)

    def _loader(self, dataset: ChangeSegmentDataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        return make_loader(dataset, batch_size, self.num_workers, sampler)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        sampler: EpochSeededSampler
        if self.defect_share is None:
            sampler = EpochSeededSampler(len(self.train_set), self.seed, shuffle=True)
        else:
            sampler = DefectShareSampler(self.train_set.has_change(), self.defect_share, self.seed)
        return self._loader(self.train_set, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        if not self.has_test:
            raise SegmentDataError(
                f"{self.layout.segment_list('test')}: no test split was prepared (set data.test_fraction > 0)"
            )
        if self.test_set is None:
            self.setup("test")
        assert self.test_set is not None
        return self._loader(self.test_set, self.eval_batch_size)


__all__ = [
    "ChangeSegmentDataset",
    "DefectShareSampler",
    "EpochSeededSampler",
    "SegmentDataError",
    "SegmentDataModule",
    "augment_geometric",
    "augment_photometric",
    "make_loader",
    "stream_seed",
]

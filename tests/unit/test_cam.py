"""The CAM defect classifier: the CAM itself, heatmap -> box, data, a short training, export, the family contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from components.config import CamModelParams, CamTrainParams, Params, parse_params
from components.models.cam.data import CamDataModule, CamDataset
from components.models.cam.heatmap import best_iou, box_iou, heatmap_to_boxes, mask_to_box
from components.models.cam.metrics import balanced_accuracy, confusion_counts, localisation_metrics
from components.models.cam.model import ANOMALY, GOOD, CamClassifier, normalise_heatmap
from components.models.cam.module import CamModule, load_module
from components.models.family import FAMILY_MODULES, ModelFamily, get_family
from tests.conftest import tiny_params_dict

TINY_BACKBONE = "test_efficientnet"
"""timm's 82k-parameter test network: four feature levels, stride 32, builds in milliseconds."""


def _tiny_model(seed: int = 0) -> CamClassifier:
    torch.manual_seed(seed)
    return CamClassifier(backbone=TINY_BACKBONE, pretrained="none").eval()


# ------------------------------------------------------------------------------------- the CAM


class _FixedPyramid(nn.Module):
    """A stand-in backbone whose last level is a fixed feature map (two channels, 2 x 2)."""

    def __init__(self, last: torch.Tensor) -> None:
        super().__init__()
        self.last = last
        self.channels = [1, 1, 1, 2]
        self.reductions = [4, 8, 16, 32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.last.expand(x.shape[0], -1, -1, -1)] * 4


def test_cam_is_the_weighted_sum_of_the_last_feature_maps_by_hand() -> None:
    model = _tiny_model()
    f = torch.tensor([[[1.0, 2.0], [0.0, 4.0]], [[3.0, 0.0], [1.0, 1.0]]])[None]  # (1, K=2, 2, 2)
    model.backbone = _FixedPyramid(f)  # type: ignore[assignment]
    model.head = nn.Linear(2, 2)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))  # anomaly: f0 - f1
        model.head.bias.copy_(torch.tensor([0.25, -0.5]))
    x = torch.rand(1, 3, 64, 64)
    logits, heatmap = model.forward_with_cam(x)
    # M_anomaly = f0 - f1 = [[-2, 2], [-1, 3]]; logit = mean(M) + b = 0.5 - 0.5; good = -mean(M) + 0.25
    assert torch.allclose(model.class_activation_maps(f)[0, ANOMALY], torch.tensor([[-2.0, 2.0], [-1.0, 3.0]]))
    assert torch.allclose(logits, torch.tensor([[-0.25, 0.0]]))
    expected = F.interpolate(torch.tensor([[[[0.0, 2.0], [0.0, 3.0]]]]), size=(64, 64), mode="bilinear") / 3.0
    assert heatmap.shape == (1, 1, 64, 64)
    assert torch.allclose(heatmap, expected, atol=1e-6)
    assert torch.allclose(model(x), logits)


def test_cam_of_a_real_timm_network_matches_its_features_and_weights() -> None:
    model = _tiny_model()
    with torch.no_grad():
        model.head.weight.normal_()
        model.head.bias.normal_()
    x = torch.rand(3, 3, 96, 64)
    with torch.no_grad():
        logits, heatmap = model.forward_with_cam(x)
        features = model.features(x)  # (3, K, 3, 2)
        by_hand = torch.einsum("nkhw,k->nhw", features, model.head.weight[ANOMALY])
        # The CAM identity: the anomaly logit is the mean of its map plus the bias.
        assert torch.allclose(logits[:, ANOMALY], by_hand.mean(dim=(-2, -1)) + model.head.bias[ANOMALY], atol=1e-5)
        up = F.interpolate(by_hand.clamp_min(0)[:, None], size=(96, 64), mode="bilinear", align_corners=False)
        peak = up.amax(dim=(-2, -1), keepdim=True)
    assert features.shape[-2:] == (3, 2) and model.stride == 32
    assert torch.allclose(heatmap, up / peak, atol=1e-5)
    assert heatmap.amax(dim=(-2, -1)).allclose(torch.ones(3, 1)) and heatmap.min() >= 0


def test_two_cam_levels_concatenate_the_stride_16_map_and_keep_the_cam_identity() -> None:
    torch.manual_seed(0)
    model = CamClassifier(backbone=TINY_BACKBONE, pretrained="none", cam_levels=2).eval()
    with torch.no_grad():
        model.head.weight.normal_()
        model.head.bias.normal_()
    x = torch.rand(2, 3, 96, 64)
    with torch.no_grad():
        pyramid = model.backbone((x - model.mean) / model.std)
        coarse = F.interpolate(pyramid[-1], size=pyramid[-2].shape[-2:], mode="bilinear", align_corners=False)
        by_hand_features = torch.cat([pyramid[-2], coarse], dim=1)
        features = model.features(x)
        logits, heatmap = model.forward_with_cam(x)
        by_hand = torch.einsum("nkhw,k->nhw", features, model.head.weight[ANOMALY])
    assert model.stride == 16 and features.shape[-2:] == (6, 4)
    assert model.head.in_features == sum(model.backbone.channels[-2:])
    assert torch.allclose(features, by_hand_features)
    assert torch.allclose(logits[:, ANOMALY], by_hand.mean(dim=(-2, -1)) + model.head.bias[ANOMALY], atol=1e-5)
    assert heatmap.shape == (2, 1, 96, 64)
    with pytest.raises(ValueError, match="cam_levels"):
        CamClassifier(backbone=TINY_BACKBONE, pretrained="none", cam_levels=5)


def test_a_map_with_no_positive_evidence_gives_a_zero_heatmap_not_nan() -> None:
    heat = normalise_heatmap(-torch.rand(2, 3, 3), (32, 32))
    assert torch.equal(heat, torch.zeros(2, 1, 32, 32))
    assert heatmap_to_boxes(heat[0]) == []


def test_the_head_starts_antisymmetric_and_training_keeps_it_so() -> None:
    model = _tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    model.train()
    for _ in range(3):
        loss = F.cross_entropy(model(x), y, weight=torch.tensor([1.0, 3.0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    w, b = model.head.weight, model.head.bias
    assert w[ANOMALY].abs().sum() > 0
    assert torch.allclose(w[GOOD] + w[ANOMALY], torch.zeros_like(w[0]), atol=1e-6)
    assert torch.allclose(b[GOOD] + b[ANOMALY], torch.zeros(()), atol=1e-6)


def test_train_stages_freezes_all_but_the_last_levels_and_their_norms() -> None:
    model = _tiny_model()
    frozen = model.set_trainable_stages(1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert frozen > 0 and "head.weight" in trainable
    last_module = model.backbone.net.feature_info.module_name()[-1]  # type: ignore[union-attr]
    assert all(name.startswith(("head.", f"backbone.net.{last_module}")) for name in trainable), trainable
    model.train()
    assert model.freeze_norms() > 0
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert any(not m.training for m in norms) and any(m.training for m in norms)
    assert model.set_trainable_stages(0) > frozen
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert model.set_trainable_stages(-1) == 0 and all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- heatmap -> box


def _two_blobs() -> np.ndarray:
    heat = np.full((40, 40), 0.1)
    heat[5:15, 5:15] = 1.0  # large, hottest
    heat[30:33, 28:31] = 0.8  # small
    heat[20, 20] = 0.6  # a single pixel
    return heat


def test_boxes_come_from_the_regions_above_a_share_of_the_maximum() -> None:
    heat = _two_blobs()
    assert heatmap_to_boxes(heat, 0.5, "largest") == [(5, 5, 15, 15)]
    assert heatmap_to_boxes(heat, 0.5, "all") == [(5, 5, 15, 15), (28, 30, 31, 33), (20, 20, 21, 21)]
    assert heatmap_to_boxes(heat, 0.5, "all", min_area=4) == [(5, 5, 15, 15), (28, 30, 31, 33)]
    assert heatmap_to_boxes(heat, 0.9, "all") == [(5, 5, 15, 15)]  # the threshold is relative to the max
    assert heatmap_to_boxes(7.0 * heat, 0.5, "all") == heatmap_to_boxes(heat, 0.5, "all")
    assert heatmap_to_boxes(torch.from_numpy(heat)[None], 0.5) == [(5, 5, 15, 15)]  # 1xHxW tensors too
    assert heatmap_to_boxes(heat, 0.05) == [(0, 0, 40, 40)]  # everything
    assert heatmap_to_boxes(np.zeros((8, 8))) == []
    with pytest.raises(ValueError, match="threshold_rel"):
        heatmap_to_boxes(heat, 0.0)


def test_largest_means_most_pixels_not_hottest() -> None:
    heat = np.zeros((30, 30))
    heat[2:4, 2:4] = 1.0  # hottest, 4 pixels
    heat[10:20, 10:20] = 0.7  # largest
    assert heatmap_to_boxes(heat, 0.5, "largest") == [(10, 10, 20, 20)]
    diagonal = np.eye(6)  # 8-connected: one region
    assert heatmap_to_boxes(diagonal, 0.5, "all") == [(0, 0, 6, 6)]


def test_mask_box_and_iou() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[2:5, 3:6] = 255
    mask[10:12, 14:18] = 1  # a second region: the box holds both
    assert mask_to_box(mask) == (3, 2, 18, 12)
    assert mask_to_box(np.zeros((5, 5))) is None
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert best_iou([(20, 20, 30, 30), (0, 0, 10, 10)], (0, 0, 10, 10)) == 1.0
    assert best_iou([], (0, 0, 10, 10)) == 0.0 and math.isnan(best_iou([(0, 0, 1, 1)], None))


def test_verdict_and_localisation_metrics() -> None:
    called = np.array([1, 0, 0, 1, 1], bool)
    truth = np.array([1, 1, 0, 0, 1], bool)
    assert confusion_counts(called, truth) == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    assert balanced_accuracy(called, truth) == pytest.approx((2 / 3 + 1 / 2) / 2)
    loc = localisation_metrics([0.2, 0.4, 0.6, float("nan")])
    assert loc == pytest.approx({"box_iou": 0.4, "box_hit_30": 2 / 3, "box_hit_50": 1 / 3, "localised_images": 3.0})
    assert math.isnan(localisation_metrics([])["box_iou"])


# ------------------------------------------------------------------------------------------ data


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _write_layout(root: Path, size: int = 64, odd: bool = True, seed: int = 0) -> dict[str, list[str]]:
    """A prepared segmentation layout: good parts are noise, defects carry a bright square (their mask).

    With ``odd``, one train image is grayscale and one is 50 x 70: both must be read as RGB at ``size``.
    """
    rng = np.random.default_rng(seed)
    splits = {
        "train": [f"good_train_{i:03d}" for i in range(12)] + [f"scratch_test_{i:03d}" for i in range(4)] + ["part17"],
        "val": [f"good_test_{i:03d}" for i in range(3)] + [f"scratch_test_{i:03d}" for i in range(4, 7)],
    }
    for split, names in splits.items():
        for index, name in enumerate(names):
            image = (rng.random((size, size, 3)) * 80).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            if name.startswith("scratch") or name == "part17":
                y, x = rng.integers(0, size - 16, 2)
                image[y : y + 16, x : x + 16] = 255
                mask[y : y + 16, x : x + 16] = 255
            if odd and split == "train" and index == 0:
                _save(root / "segment" / "A" / f"{name}.png", image[..., 0], mode="L")
            elif odd and split == "train" and index == 1:
                _save(root / "segment" / "A" / f"{name}.png", np.asarray(Image.fromarray(image).resize((70, 50))))
            else:
                _save(root / "segment" / "A" / f"{name}.png", image)
            _save(root / "segment" / "label" / f"{name}.png", mask)
        (root / "segment" / "list").mkdir(parents=True, exist_ok=True)
        (root / "segment" / "list" / f"{split}.txt").write_text("".join(f"{n}.png\n" for n in names))
    return splits


def test_dataset_reads_labels_kinds_and_any_image(tmp_path: Path) -> None:
    splits = _write_layout(tmp_path)
    dataset = CamDataset(tmp_path, "train", image_size=64)
    assert dataset.names == splits["train"]
    assert dataset.labels == [0] * 12 + [1] * 5  # part17: no kind in its name, a defect by its mask
    assert dataset.kinds[0] == "good" and dataset.kinds[12] == "scratch" and dataset.kinds[-1] is None
    grey, odd = dataset[0], dataset[1]
    for sample in (grey, odd):
        assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
        assert sample["mask"].shape == (64, 64) and 0.0 <= sample["image"].min() <= sample["image"].max() <= 1.0
    assert torch.equal(grey["image"][0], grey["image"][1]) and torch.equal(grey["image"][1], grey["image"][2])
    defect = dataset[12]
    assert defect["label"] == 1 and defect["kind"] == "scratch" and defect["mask"].sum() == 16 * 16
    assert dataset[-1]["kind"] == ""


def test_an_odd_sized_image_without_a_size_is_refused_clearly(tmp_path: Path) -> None:
    _write_layout(tmp_path)
    with pytest.raises(ValueError, match=r"good_train_001: image \(50, 70\) and mask \(64, 64\)"):
        CamDataset(tmp_path, "train", image_size=None)[1]


def test_augmentation_is_reproducible_and_flips_mask_with_image(tmp_path: Path) -> None:
    from components.config import CamAugmentParams

    _write_layout(tmp_path, odd=False)
    flip = CamAugmentParams(hflip=1.0, color_jitter=0.0)
    dataset = CamDataset(tmp_path, "train", 64, augment=flip, seed=3)
    plain = CamDataset(tmp_path, "train", 64)
    assert torch.equal(dataset[(0, 12)]["mask"], plain[12]["mask"].flip(-1))
    assert torch.equal(dataset[(0, 12)]["image"], plain[12]["image"].flip(-1))
    jitter = CamDataset(tmp_path, "train", 64, augment=CamAugmentParams(hflip=0.5), seed=3)
    assert torch.equal(jitter[(2, 5)]["image"], jitter[(2, 5)]["image"])


# ------------------------------------------------------------------------------------ training


def _module(train_stages: int = -1, class_weights: tuple[float, float] = (1.0, 3.0), **train: object) -> CamModule:
    torch.manual_seed(0)
    model = CamModelParams(backbone=TINY_BACKBONE, pretrained="none")
    t = CamTrainParams(train_stages=train_stages, class_weights=class_weights, **train)  # type: ignore[arg-type]
    return CamModule(model.model_dump(mode="json"), t.model_dump(mode="json"))


def _imbalanced_toy(count_good: int = 24, count_bad: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Good parts are dim noise; the few anomalies carry a bright square somewhere."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(count_good + count_bad, 3, 64, 64, generator=generator) * 0.3
    for i in range(count_good, count_good + count_bad):
        y, x = torch.randint(0, 48, (2,), generator=generator).tolist()
        images[i, :, y : y + 16, x : x + 16] = 1.0
    return images, torch.tensor([0] * count_good + [1] * count_bad)


def test_an_imbalanced_toy_set_trains_and_the_anomaly_class_is_learnt() -> None:
    module = _module()
    images, labels = _imbalanced_toy()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    module.train()
    losses = []
    for _ in range(25):
        loss = module.loss(module(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    module.eval()
    with torch.no_grad():
        logits, heatmap = module.model.forward_with_cam(images)
    called = logits.argmax(1).numpy().astype(bool)
    assert losses[-1] < 0.3 * losses[0], losses
    assert called[labels.numpy() == 1].mean() >= 0.8  # the minority is not ignored
    assert balanced_accuracy(called, labels.numpy().astype(bool)) >= 0.8
    assert module.class_weights.tolist() == [1.0, 3.0] and "class_weights" not in module.state_dict()
    assert heatmap.shape == (30, 1, 64, 64)


def test_lightning_fit_logs_the_val_metrics_and_the_checkpoint_rebuilds(tmp_path: Path) -> None:
    import lightning as L

    _write_layout(tmp_path / "data")
    module = _module(train_stages=1, epochs=2, batch_size=8, lr=3e-3)
    data = CamDataModule(tmp_path / "data", image_size=64, batch_size=8, seed=0)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    logged = trainer.callback_metrics
    for key in ("val/auroc", "val/accuracy", "val/balanced_accuracy", "val/loss", "train/loss_epoch"):
        assert key in logged and 0.0 <= float(logged[key]) < 10.0, key
    path = tmp_path / "cam.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), module.eval().model(x), atol=1e-6)


# -------------------------------------------------------------------------- family and export


@pytest.fixture
def params(tmp_path: Path) -> Params:
    raw = tiny_params_dict(tmp_path, cam={"model": {"backbone": TINY_BACKBONE, "pretrained": "none"}})
    params = parse_params(raw)
    _write_layout(params.datasets_dir)
    return params


def test_family_implements_the_protocol_and_is_registered() -> None:
    family = get_family("cam")
    assert "cam" in FAMILY_MODULES and isinstance(family, ModelFamily)
    assert (family.name, family.monitor, family.gate_metric) == ("cam", "val/auroc", "auroc")
    assert family.onnx_input_names == ("image",)


def test_export_module_returns_heatmap_and_logits(params: Params) -> None:
    family = get_family("cam")
    module = family.build_module(params).eval()
    (images,) = family.sample_inputs(params, "val", 4)
    assert images.shape == (4, 3, 64, 64)
    names = family.onnx_output_names(params)
    with torch.no_grad():
        outputs = dict(zip(names, family.export_module(module, params)(images), strict=True))
        logits, heatmap = module.model.forward_with_cam(images)
    assert names == ("heatmap", "logits")  # the last one (the decision) is what parity checks
    assert outputs["logits"].shape == (4, 2) and outputs["heatmap"].shape == (4, 1, 64, 64)
    assert torch.equal(outputs["logits"], logits) and torch.equal(outputs["heatmap"], heatmap)
    calibration = family.calibration_set(params, 5)
    assert len(calibration) == 5 and calibration.inputs[0].shape == (5, 3, 64, 64)
    rebuilt = family.build_model(family.model_hparams(module))
    assert isinstance(rebuilt, CamClassifier)


def test_onnx_export_keeps_both_outputs_and_evaluation_reads_it(params: Params, tmp_path: Path) -> None:
    from components.export.onnx_export import export_onnx
    from components.export.runtime import OnnxModel
    from components.models.cam.evaluate import predict

    family = get_family("cam")
    module = family.build_module(params).eval()
    with torch.no_grad():
        module.model.head.weight.normal_()  # a non-trivial heatmap
    inputs = family.sample_inputs(params, "val", 4)
    path = tmp_path / "cam_fp32.onnx"
    names = family.onnx_output_names(params)
    export_onnx(family.export_module(module, params), path, params.export, inputs, ("image",), names)
    runner = OnnxModel(path, input_names=("image",), primary_output=names[-1])
    logits, heatmap = predict(runner, inputs[0])
    with torch.no_grad():
        want_logits, want_heat = module.model.forward_with_cam(inputs[0])
    assert torch.allclose(logits, want_logits, atol=1e-4)
    assert heatmap is not None and torch.allclose(heatmap, want_heat[:, 0], atol=1e-4)


def test_evaluate_split_reports_verdict_localisation_and_pictures(params: Params, tmp_path: Path) -> None:
    family = get_family("cam")
    model = _tiny_model()
    with torch.no_grad():
        model.head.weight.normal_()
    pictures = tmp_path / "plots"
    metrics = family.evaluate(model, params, "val", pictures)
    for key in ("auroc", "accuracy", "balanced_accuracy", "threshold", "box_iou", "box_hit_30", "box_hit_50"):
        assert key in metrics, key
    assert sum(metrics[f"confusion/{k}"] for k in ("tn", "fp", "fn", "tp")) == 6
    assert metrics["localised_images"] == 3 and 0.0 <= metrics["box_iou"] <= 1.0
    assert "scratch/box_iou" in metrics and "good/accuracy" in metrics and "good/box_iou" not in metrics
    assert (pictures / "val_roc_curve.png").is_file() and (pictures / "val_scores.csv").is_file()
    overlays = sorted((pictures / "overlays").glob("val_*.png"))
    assert len(overlays) == 2 and all(p.name.startswith("val_scratch") for p in overlays)
    on_train = family.evaluate(model, params, "train")  # the threshold split: threshold-free numbers only
    assert "accuracy" not in on_train and "auroc" in on_train and "box_iou" in on_train
    meta = family.deploy_metadata(params, family.build_module(params))
    assert meta["box_threshold"] == 0.5 and 0.0 <= meta["threshold"] <= 1.0


def test_evaluate_calls_images_at_a_given_threshold(params: Params) -> None:
    """A quantized copy is judged at its FP32 model's threshold: the family must take it as given."""
    family = get_family("cam")
    model = _tiny_model()
    own = family.operating_threshold(model, params)
    assert family.evaluate(model, params, "val")["threshold"] == pytest.approx(own)
    flag_nothing = family.evaluate(model, params, "val", threshold=1.0)  # a probability never exceeds 1
    assert flag_nothing["threshold"] == 1.0
    assert flag_nothing["confusion/tp"] == 0 and flag_nothing["confusion/fp"] == 0
    flag_all = family.evaluate(model, params, "val", threshold=-1.0)
    assert flag_all["confusion/tn"] == 0 and flag_all["confusion/fn"] == 0
    assert "accuracy" not in family.evaluate(model, params, "train", threshold=0.5)  # chosen there: none


def test_params_yaml_has_a_valid_cam_section() -> None:
    from components.config import load_params
    from tests.conftest import REPO_ROOT

    cam = load_params(REPO_ROOT / "params.yaml").cam
    assert cam.registered_model == "inspectops-cam" and cam.train.class_weights == (1.0, 3.0)
    with pytest.raises(ValueError, match=r"cam\.eval\.threshold_split"):
        parse_params({"cam": {"eval": {"threshold_split": "test"}}})
    with pytest.raises(ValueError, match="train_stages"):
        parse_params({"cam": {"train": {"train_stages": 7}}})


def test_box_quality_counts_only_the_boxes_that_are_written() -> None:
    """Boxes of images called good are never written, so they count as misses, not hits."""
    from components.labeling.cam_boxes import box_quality
    from components.models.cam.evaluate import SplitPredictions

    box = (0, 0, 10, 10)
    seen = SplitPredictions(
        names=["good_a", "good_b", "bad_hit", "bad_low_score", "bad_no_box"],
        kinds=["good", "good", "cut", "cut", "cut"],
        labels=np.array([False, False, True, True, True]),
        scores=np.array([0.9, 0.1, 0.9, 0.2, 0.9]),
        boxes=[[box], [box], [box], [box], []],
        true_boxes=[None, None, box, box, box],
        ious=np.array([np.nan, np.nan, 1.0, 1.0, 0.0]),
    )
    quality = box_quality(seen, threshold=0.5)
    assert quality["label/good_boxed"] == pytest.approx(0.5)  # good_a: a false box downstream
    assert quality["label/defect_recall"] == pytest.approx(1 / 3)  # only bad_hit is boxed
    assert quality["label/box_iou"] == pytest.approx(1 / 3)
    assert quality["label/hit_0.5"] == pytest.approx(1 / 3)


def test_infer_cam_calls_and_boxes_images_of_any_size(tmp_path: Path) -> None:
    """Grey and odd-sized files are read as RGB at the model's size; boxes come back in each file's pixels."""
    from components.config import CamEvalParams
    from components.imageio import ImageReadError
    from components.inference.cam_infer import CamInputError, infer_cam

    folder = tmp_path / "parts"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 50), dtype=np.uint8), mode="L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(folder / "wide.jpg")
    (folder / "notes.txt").write_text("not an image")
    model = _tiny_model()
    setting = CamEvalParams(box_threshold=0.5, min_box_area=1)

    called = infer_cam(model, folder, 64, setting, threshold=0.0, out=tmp_path / "out")
    assert [r.name for r in called] == ["grey", "wide"] and all(r.verdict == "ANOMALY" for r in called)
    for result, (width, height) in zip(called, ((50, 37), (128, 96)), strict=True):
        assert result.boxes, "an image called anomalous gets its CAM box"
        for x1, y1, x2, y2 in result.boxes:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert (tmp_path / "out" / f"{result.name}_cam.png").is_file()
    rows = (tmp_path / "out" / "cam_results.csv").read_text().splitlines()
    assert rows[0] == "name,score,threshold,verdict,boxes" and len(rows) == 3

    good = infer_cam(model, folder / "wide.jpg", 64, setting, threshold=1.0)
    assert [(r.verdict, r.boxes) for r in good] == [("GOOD", [])]
    with pytest.raises(CamInputError, match="no such file"):
        infer_cam(model, tmp_path / "missing", 64, setting, threshold=0.5)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        infer_cam(model, folder, 64, setting, threshold=0.5)

"""Typed schema for ``params.yaml``: the one configuration system of inspectops.

Every knob of the pipeline lives in ``params.yaml`` and is validated here on load,
so a typo or an out-of-range value stops the run before any work starts, with a
message that names the key and what is allowed. DVC tracks the same keys (``params:``
in ``dvc.yaml``), so there is no second configuration layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LIGHTING_CONDITIONS: tuple[str, ...] = ("LowAngleLight", "SolderLight", "UniformLight", "WhiteLight")
"""The four lighting conditions of TAO's Optical Inspection data."""

DEFAULT_PARAMS_PATH = Path("params.yaml")


class ParamsError(ValueError):
    """A ``params.yaml`` that cannot be used; the message names every bad key."""


class _Section(BaseModel):
    # Unknown keys are errors: a misspelt knob must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsParams(_Section):
    data_dir: Path = Path("data")
    artifacts_dir: Path = Path("artifacts")


class SyntheticParams(_Section):
    """Size and content of the procedurally generated default category."""

    image_size: int = Field(256, ge=64, le=1024)
    num_train_good: int = Field(40, ge=2)
    num_test_good: int = Field(12, ge=1)
    num_defect_per_kind: int = Field(8, ge=1)
    defect_kinds: tuple[Literal["bent_lead", "cut_lead", "damaged_case", "misplaced"], ...] = (
        "bent_lead",
        "cut_lead",
        "damaged_case",
        "misplaced",
    )
    render_lighting: bool = True

    @field_validator("defect_kinds")
    @classmethod
    def _unique_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError("must list at least one defect kind, each once")
        return kinds


class TilingParams(_Section):
    """Native-resolution ChangeNet-Segmentation: train on tiles, predict by overlapping windows.

    The segmentation dataset keeps each aligned pair at its own size (no resize); training draws
    ``tile_size`` tiles from it and evaluation/inference slide windows with stride
    ``tile_size - overlap`` and stitch one full-size probability map
    (:mod:`components.models.changenet.tiling`).
    """

    tile_size: int = Field(256, ge=32, le=2048)
    """Side of the square tile the segmentation model sees (its input and ONNX size)."""
    overlap: int = Field(32, ge=0)
    """Pixels two neighbouring windows share; averaged with a weight ramp when stitching."""

    @field_validator("tile_size")
    @classmethod
    def _tile_multiple_of_32(cls, size: int) -> int:
        if size % 32:
            raise ValueError(f"must be a multiple of 32 (the backbone's coarsest stride), got {size}")
        return size

    @model_validator(mode="after")
    def _overlap_below_half(self) -> TilingParams:
        if 2 * self.overlap >= self.tile_size:
            raise ValueError(
                f"overlap {self.overlap} must be below tile_size / 2 ({self.tile_size / 2:g}) so windows advance"
            )
        return self


class DataParams(_Section):
    """Which raw category to use and how to split and resize it (TAO ChangeNet recipe)."""

    source: Literal["synthetic", "mvtec", "tao-segment", "tao-classify", "coco", "pairs", "folders"] = "synthetic"
    """Format of ``data/<source>/<category>``: see :mod:`components.data.sources` for what each feeds."""
    category: str = Field("transistor", pattern=r"^[A-Za-z0-9_\-]+$")
    image_size: int = Field(256, ge=32, le=2048)
    resample: Literal["bicubic", "lanczos"] = "bicubic"
    golden_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    val_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    num_golden: int = Field(1, ge=1)
    lighting_conditions: tuple[str, ...] = LIGHTING_CONDITIONS
    workers: int | None = Field(None, ge=1, le=64)
    """Processes that prepare records in parallel; ``None``: one per core (at most 8)."""
    calibration_fraction: float = Field(0.0, ge=0.0, lt=0.5)
    """Share of each class of train (good, defective) that no family trains on: the parts a
    ``threshold_split: calibration`` chooses its operating threshold on
    (:mod:`components.evaluation.calibration`). 0: every train part is trained on."""
    tiling: TilingParams | None = None
    """``None``: every dataset resized to ``image_size`` (the default). A section: the segmentation
    dataset keeps native size and ChangeNet-Segmentation trains on tiles and predicts by sliding
    windows; ``image_size`` still sizes the classify, COCO and CAM data."""

    @field_validator("lighting_conditions")
    @classmethod
    def _known_lights(cls, lights: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [light for light in lights if light not in LIGHTING_CONDITIONS]
        if unknown or not lights or len(set(lights)) != len(lights):
            raise ValueError(
                f"must be a non-empty list of distinct names from {list(LIGHTING_CONDITIONS)}; got {list(lights)}"
            )
        return lights

    @model_validator(mode="after")
    def _fractions_fit(self) -> DataParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be below 1.0 so that train is not empty")
        return self


class AugmentParams(_Section):
    """Geometric transforms hit test, golden and mask alike; photometric ones each image alone."""

    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.0, ge=0.0, le=1.0)
    rotate90: float = Field(0.0, ge=0.0, le=1.0)
    random_resized_crop: float = Field(0.3, ge=0.0, le=1.0)
    crop_scale: tuple[float, float] = (0.6, 1.0)
    blur: float = Field(0.1, ge=0.0, le=1.0)
    color_jitter: float = Field(0.5, ge=0.0, le=1.0)
    brightness: float = Field(0.2, ge=0.0, le=1.0)
    contrast: float = Field(0.2, ge=0.0, le=1.0)

    @field_validator("crop_scale")
    @classmethod
    def _ordered(cls, scale: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1")
        return scale


class BackboneParams(_Section):
    """Which backbone a ChangeNet family builds and where its pretrained weights come from."""

    backbone: str = "tf_efficientnet_lite0"
    pretrained: Literal["none", "package", "path", "hub"] = "package"
    pretrained_backbone_path: Path | None = None
    strict_load: bool = True

    @model_validator(mode="after")
    def _path_given(self) -> BackboneParams:
        if self.pretrained == "path" and self.pretrained_backbone_path is None:
            raise ValueError("pretrained: path needs pretrained_backbone_path")
        return self


class SegmentModelParams(BackboneParams):
    """Visual ChangeNet-Segmentation architecture; mirrors ``ChangeNetSegment``'s arguments."""

    embed_dim: int = Field(256, ge=8)
    upsample_dim: int | None = Field(None, ge=0)
    """Width of the decoder's two full-resolution stages; ``None`` keeps ``embed_dim`` (TAO); ``0``
    classifies at stride 4 and resizes the logits bilinearly."""
    fine_dim: int = Field(0, ge=0)
    """Width of a stride-2 skip into the light head (``upsample_dim: 0``): the backbone's stride-2
    features of both images are compared and the classifier runs at stride 2; 0 = none."""
    num_classes: int = Field(2, ge=2)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    loss_weights: tuple[float, float, float, float, float] = (0.5, 0.5, 0.5, 0.8, 1.0)

    @model_validator(mode="after")
    def _fine_skip_needs_light_head(self) -> SegmentModelParams:
        if self.fine_dim and self.upsample_dim != 0:
            raise ValueError(
                f"fine_dim {self.fine_dim} (the stride-2 skip) replaces the light head's classifier: "
                f"it needs upsample_dim: 0, got {self.upsample_dim}"
            )
        return self


class TrainLoopParams(_Section):
    """What every ChangeNet family's training loop shares: optimizer, LR policy, Trainer knobs.

    The optimizer and scheduler builders (:mod:`components.training.optim`) and the shared
    train stage read only these fields, so a family adds its own loss and data knobs on top.
    """

    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    backbone_lr_scale: float = Field(0.3, gt=0.0, le=1.0)
    lr_policy: Literal["linear", "step", "cosine"] = "linear"
    warmup_ratio: float = Field(0.15, ge=0.0, lt=1.0)
    lr_step_size: int = Field(10, ge=1)
    lr_gamma: float = Field(0.5, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    epochs: int = Field(3, ge=1)
    max_minutes: float | None = Field(None, gt=0.0)
    """Wall-clock budget for fitting; training stops at the end of the epoch past it."""
    batch_size: int = Field(8, ge=1)
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "64-true"] = "32-true"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    num_workers: int = Field(0, ge=0)
    grad_clip_norm: float | None = Field(None, gt=0.0)
    early_stopping_patience: int | None = Field(None, ge=1)
    checkpoint: Literal["best", "last"] = "best"
    """The weights later stages use (``models/<family>/best.ckpt``). ``best``: the epoch with the
    highest val monitor; val then chose the model, so its val numbers lean optimistic. ``last``:
    the final epoch (the weight average where there is one); nothing is chosen on val, so val
    numbers are what an unseen part would get."""
    resume_from: Path | None = None
    limit_train_batches: float | int | None = None
    channels_last: bool = True
    """Train with NHWC weights: oneDNN's fast convolution path on CPU (1.2-1.6x per step measured on
    ChangeNet) and the tensor-core layout on GPUs; the checkpoint's values are the same either way."""
    deterministic: bool | Literal["auto", "warn"] = "auto"
    """Lightning's ``deterministic``. ``auto``: ``True`` on CPU (the same params and data give the
    same metrics) and ``warn`` on a GPU (deterministic cuDNN algorithms, a warning for ops that
    have none). ``false`` drops them and lets cuDNN pick the fastest algorithm per shape
    (``benchmark``): GPU runs then differ a little from run to run."""


class EmaParams(_Section):
    """An exponential moving average of the weights (timm ``ModelEmaV3``), validated and deployed.

    The average smooths out single bad steps, so the val curve does not collapse for an epoch
    when the learning rate is high. ``warmup`` ramps the decay as ``1 - (1 + step)^(-2/3)`` up to
    ``decay``, so the average follows the fast-moving early weights instead of the random init.
    """

    decay: float = Field(0.998, gt=0.0, lt=1.0)
    warmup: bool = True


class SegmentTrainParams(TrainLoopParams):
    ema: EmaParams | None = None
    """``null``: validate and deploy the raw weights (the checkpoints of earlier versions)."""
    freeze_backbone_levels: int = Field(0, ge=0, le=4)
    """Keep the backbone layers of the finest N pyramid levels fixed (0: train all)."""
    change_class_weight: float = Field(1.5, gt=0.0)
    dice_weight: float = Field(1.0, ge=0.0)
    dice_reduction: Literal["batch", "image"] = "batch"
    """``batch``: one soft dice pooled over the batch, so large defects outweigh thin ones by their
    pixel count; ``image``: the mean of each defective image's own dice, so a thin lead counts as much
    as a misplaced part (defect-free images are judged by the cross-entropy only)."""
    dice_on_good_batches: bool = True
    """``false``: no dice term on a batch without a single change pixel (about 1 batch in 6 at batch 8
    and ``defect_share`` 0.2), whose pooled dice pushes every change probability towards 0."""
    defect_share: float | None = Field(None, gt=0.0, lt=1.0)
    """Share of each training epoch drawn from the defective pairs (``null``: every pair once, in a
    seeded shuffle). The epoch keeps its length; defective and good pairs are each cycled through
    their own seeded permutations, so the oversampled kind repeats evenly and the other is a fresh
    seeded subset every epoch."""
    labels: Literal["masks", "mal"] = "masks"  # train masks: the painted ones, or MAL's from the boxes
    augment: AugmentParams = AugmentParams()


class SegmentEvalParams(_Section):
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """Pixel threshold on the change probability."""
    num_overlays: int = Field(6, ge=0)
    batch_size: int = Field(8, ge=1)
    image_score: Literal["max", "smooth_max", "topk_mean", "area"] = "max"
    """How the change map becomes one score per part (``components/models/changenet/image_score.py``)."""
    score_window: int = Field(9, ge=1)
    """Box side in pixels of ``smooth_max``."""
    topk_fraction: float = Field(0.001, gt=0.0, le=1.0)
    """Share of the pixels ``topk_mean`` averages."""
    image_threshold_split: Literal["train", "test", "calibration"] = "train"
    """Where the pass/defect threshold on the image score is chosen: never on the split reported."""
    max_false_alarm_rate: float = Field(0.02, ge=0.0, lt=1.0)
    """The operating threshold catches the most defects while flagging at most this share of good parts."""


class SegmentParams(_Section):
    model: SegmentModelParams = SegmentModelParams()
    train: SegmentTrainParams = SegmentTrainParams()
    eval: SegmentEvalParams = SegmentEvalParams()


class GridMap(_Section):
    """TAO's ``grid_map``: ``x`` lights per row, ``y`` rows."""

    x: int = Field(2, ge=1)
    y: int = Field(2, ge=1)


class ClassifyModelParams(BackboneParams):
    """Visual ChangeNet-Classification (``components/models/changenet_classify``)."""

    difference_module: Literal["learnable", "euclidean"] = "learnable"
    """``learnable``: ChangeNet difference modules, pooled, 2-class head (cross-entropy);
    ``euclidean``: an embedding per image, distance = defect score (contrastive loss)."""
    concat_type: Literal["linear", "grid", "fused"] = "linear"
    """How lights meet the backbone: ``linear`` stacks them vertically (TAO), ``grid`` tiles them
    ``grid_map.x`` by ``grid_map.y`` (TAO), ``fused`` runs each light alone and fuses features."""
    grid_map: GridMap = GridMap()
    learnable_difference_modules: int = Field(3, ge=1, le=4)
    """Pyramid levels (coarsest first) whose learnt differences are fused (TAO: 1-4)."""
    embed_dim: int = Field(64, ge=8)
    embed_dec: int = Field(32, ge=2)
    """Hidden width of the pooled classification head (TAO: 5-30)."""
    embedding_vectors: int = Field(5, ge=1)
    """Embedding size of the ``euclidean`` module (TAO: 5)."""
    golden_fusion: Literal["mean", "attention"] = "mean"
    """How several goldens combine: their mean, or per-location attention from the test features."""
    pooling: Literal["meanmax", "topk"] = "meanmax"
    """How the ``learnable`` module turns its fused difference map into a verdict. ``meanmax``: the
    map's mean and max per channel into a small MLP (TAO-like). ``topk``: a 1x1 convolution scores
    every location for change, and the defect logit is the mean of the ``topk_fraction`` highest
    locations (multiple-instance pooling: a defect a few cells wide decides the part, and the
    location scores are a change map that ``classify.train.mask_loss_weight`` can supervise)."""
    topk_fraction: float = Field(0.02, gt=0.0, le=1.0)
    """Share of the difference map's locations averaged into the defect logit (``pooling: topk``)."""
    change_map: Literal["coarse", "decoder"] = "coarse"
    """The ``learnable`` module's change map. ``coarse``: the coarsest ``learnable_difference_modules``
    levels fused at their finest stride (8 at 3 levels). ``decoder``: the segmentation model's
    light decoder over all four levels with a ``fine_dim`` stride-2 skip, and its side outputs for
    the mask loss: a few-pixel defect gets cells of its own. Needs ``pooling: topk``."""
    fine_dim: int = Field(16, ge=0)
    """Width of the ``decoder`` map's stride-2 skip (as ``segment.model.fine_dim``; 0: the map stays at stride 4)."""
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @model_validator(mode="after")
    def _decoder_pools_topk(self) -> ClassifyModelParams:
        if self.change_map == "decoder" and (self.difference_module != "learnable" or self.pooling != "topk"):
            raise ValueError(
                "classify.model.change_map: decoder is a change map for difference_module: learnable, pooled by "
                f"pooling: topk; got difference_module: {self.difference_module}, pooling: {self.pooling}"
            )
        return self


class ClassifyAugmentParams(_Section):
    """Training augmentation: flips move every light and golden together, jitter hits each capture alone."""

    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.0, ge=0.0, le=1.0)
    blur: float = Field(0.1, ge=0.0, le=1.0)
    color_jitter: float = Field(0.5, ge=0.0, le=1.0)
    brightness: float = Field(0.2, ge=0.0, le=1.0)
    contrast: float = Field(0.2, ge=0.0, le=1.0)


class ClassifyTrainParams(TrainLoopParams):
    epochs: int = Field(6, ge=1)
    backbone_lr_scale: float = Field(0.1, gt=0.0, le=1.0)
    cls_weight: tuple[float, float] = (1.0, 10.0)
    """Cross-entropy weights [PASS, defect] of the learnable module (TAO default)."""
    train_margin_euclid: float = Field(2.0, gt=0.0)
    """Contrastive margin of the euclidean module: defect pairs are pushed this far apart."""
    sampler: Literal["shuffle", "balanced", "fpratio"] = "shuffle"
    """``balanced``: defects drawn as often as good parts; ``fpratio``: TAO's weighted sampling,
    a defect weighs ``num_pass / num_defect * fpratio_sampling``."""
    fpratio_sampling: float = Field(0.1, gt=0.0)
    freeze_backbone: bool = False
    ema: EmaParams | None = None
    """Validate, checkpoint and deploy a weight average (as ``segment.train.ema``); ``null``: the raw weights."""
    mask_loss_weight: float = Field(0.0, ge=0.0)
    """Weight of an auxiliary change-mask loss (BCE + dice) on the location scores of ``pooling:
    topk``, where the prepared data has masks (``segment/label/<object_name>.png``; parts without
    one are left out of this term). Training only: the exported model is unchanged. 0 turns it off."""
    augment: ClassifyAugmentParams = ClassifyAugmentParams()

    @field_validator("cls_weight")
    @classmethod
    def _positive_weights(cls, weights: tuple[float, float]) -> tuple[float, float]:
        if min(weights) <= 0:
            raise ValueError("both class weights must be > 0")
        return weights


class ClassifyEvalParams(_Section):
    threshold: float | Literal["auto"] = "auto"
    """Defect when the score is above it. ``auto``: chosen on ``threshold_split`` (never on the
    reported split) as the threshold that catches the most defects while flagging at most
    ``max_false_alarm_rate`` of the good parts."""
    threshold_split: Literal["train", "test", "calibration"] = "train"
    max_false_alarm_rate: float = Field(0.02, ge=0.0, lt=1.0)
    batch_size: int = Field(8, ge=1)
    num_misclassified: int = Field(12, ge=0)
    """Misclassified parts pictured in MLflow (all are listed in the table)."""


class ClassifyParams(_Section):
    model: ClassifyModelParams = ClassifyModelParams()
    train: ClassifyTrainParams = ClassifyTrainParams()
    eval: ClassifyEvalParams = ClassifyEvalParams()
    input_size: int | None = Field(None, ge=32, le=2048)
    """Side of each light's image fed to the model; ``None`` keeps the prepared ``data.image_size``."""
    registered_model: str = "inspectops-changenet-classify"

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, size: int | None) -> int | None:
        if size is not None and size % 32:
            raise ValueError("must be a multiple of 32 (the backbone's coarsest stride)")
        return size

    @model_validator(mode="after")
    def _mask_loss_has_a_map(self) -> ClassifyParams:
        if self.train.mask_loss_weight > 0 and (
            self.model.difference_module != "learnable" or self.model.pooling != "topk"
        ):
            raise ValueError(
                "classify.train.mask_loss_weight > 0 supervises the location scores of "
                "classify.model.pooling: topk with difference_module: learnable; "
                f"got pooling: {self.model.pooling}, difference_module: {self.model.difference_module}"
            )
        return self


class CamModelParams(BackboneParams):
    """The CAM defect classifier (``components/models/cam``); mirrors ``CamClassifier``'s arguments.

    Any timm CNN with ``features_only`` (the last of its four levels is pooled and classified);
    ``vgg16`` is the Visual-Inspection reference's network (ImageNet weights with ``pretrained: hub``).
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    cam_levels: int = Field(1, ge=1, le=4)
    """Feature levels the head pools and the CAM is read from, counted from the coarsest: ``1`` is the
    classic CAM (stride 32 for the usual CNNs); ``2`` adds the stride-16 level, the coarser one resized
    to it and concatenated (a hypercolumn), so the map has cells half as wide."""


class CamAugmentParams(_Section):
    """Light training augmentation: a defect must stay where it is and look like itself."""

    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.0, ge=0.0, le=1.0)
    blur: float = Field(0.0, ge=0.0, le=1.0)
    color_jitter: float = Field(0.5, ge=0.0, le=1.0)
    brightness: float = Field(0.1, ge=0.0, le=1.0)
    contrast: float = Field(0.1, ge=0.0, le=1.0)


class CamTrainParams(TrainLoopParams):
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1)
    lr_policy: Literal["linear", "step", "cosine"] = "cosine"
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    train_stages: int = Field(1, ge=-1, le=4)
    """Backbone feature levels trained, counted from the last (coarsest) one, beside the head: ``0``
    trains the head alone (a linear probe), ``-1`` (or 4) everything. The rest keeps its weights and
    BatchNorm statistics (the reference fine-tunes VGG16's last 3 conv layers and the head)."""
    class_weights: tuple[float, float] = (1.0, 3.0)
    """Cross-entropy weights [good, anomaly] (the reference: 1 and 3)."""
    augment: CamAugmentParams = CamAugmentParams()

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, weights: tuple[float, float]) -> tuple[float, float]:
        if min(weights) <= 0:
            raise ValueError("both class weights must be > 0")
        return weights


class CamEvalParams(_Section):
    threshold: float | Literal["auto"] = "auto"
    """Anomaly when ``softmax(logits)[:, 1]`` is above it. ``auto``: chosen on ``threshold_split``
    (never on the reported split), as ChangeNet-Classification does."""
    threshold_split: Literal["train", "test", "calibration"] = "train"
    max_false_alarm_rate: float = Field(0.02, ge=0.0, lt=1.0)
    batch_size: int = Field(16, ge=1)
    box_threshold: float = Field(0.5, gt=0.0, le=1.0)
    """Heatmap pixels at or above this share of the image's heatmap maximum form the defect region."""
    box_mode: Literal["largest", "all"] = "largest"
    """``largest``: the box of the largest connected region; ``all``: a box per region."""
    min_box_area: int = Field(16, ge=1)
    """Regions of fewer pixels (at the model's input size) give no box."""
    num_overlays: int = Field(6, ge=0)
    """Heatmap overlays pictured per split (a fixed spread of its images, defects first)."""


class CamParams(_Section):
    model: CamModelParams = CamModelParams()
    train: CamTrainParams = CamTrainParams()
    eval: CamEvalParams = CamEvalParams()
    input_size: int | None = Field(None, ge=32, le=2048)
    """Side of the square image fed to the model; ``None`` keeps the prepared ``data.image_size``."""
    registered_model: str = "inspectops-cam"

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, size: int | None) -> int | None:
        if size is not None and size % 32:
            raise ValueError("must be a multiple of 32 (the backbone's coarsest stride)")
        return size


class MalModelParams(_Section):
    """The Mask Auto-Labeler network (Lan et al., CVPR 2023; ``components/models/mal``)."""

    encoder: str = "tf_efficientnet_lite0"  # timm CNN (features_only) or a ViT such as vit_base_patch16_224
    pretrained: Literal["none", "package", "path", "hub"] = "package"
    pretrained_path: Path | None = None  # for pretrained: path (e.g. the MAE ViT-B/16 checkpoint)
    crop_size: int = Field(160, ge=64, le=1024)  # paper: 512 (ViT-B); 160 keeps the CPU pipeline short
    head_channels: int = Field(128, ge=8)  # K/V heads (paper: 256)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @field_validator("crop_size")
    @classmethod
    def _multiple_of_32(cls, size: int) -> int:
        if size % 32:
            raise ValueError("must be a multiple of 32 (the encoder's coarsest stride)")
        return size

    @model_validator(mode="after")
    def _path_given(self) -> MalModelParams:
        if self.pretrained == "path" and self.pretrained_path is None:
            raise ValueError("pretrained: path needs pretrained_path")
        return self


class MalTrainParams(_Section):
    """MAL's training recipe: boxes only, MIL + CRF losses, EMA teacher (paper section 3)."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(3e-4, gt=0.0)
    backbone_lr_scale: float = Field(1.0, gt=0.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.9)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)  # linear warm-up share of all steps, then cosine
    min_lr_ratio: float = Field(0.2, ge=0.0, le=1.0)  # cosine ends at lr * this (paper: 0.2)
    mil_weight: float = Field(4.0, ge=0.0)
    crf_weight: float = Field(0.5, ge=0.0)
    mil_ramp_steps: int = Field(10, ge=0)  # paper: 1000 iterations on COCO; scaled to small sets
    crf_ramp_steps: int = Field(40, ge=0)  # paper: 4000
    crf_zeta: float = Field(0.1, gt=0.0)
    crf_iterations: int = Field(20, ge=1)  # paper: 100 at 128^2; 20 at CPU sizes
    teacher_momentum: float = Field(0.996, ge=0.0, lt=1.0)
    margin_range: tuple[float, float] = (0.0, 1.2)  # training crop: 1.0-1.6x the box
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    color_jitter: float = Field(0.5, ge=0.0, le=1.0)  # student only, with grayscale and blur
    grayscale: float = Field(0.2, ge=0.0, le=1.0)
    blur: float = Field(0.5, ge=0.0, le=1.0)
    use_val_boxes: bool = False  # also learn from val boxes (never their masks)
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    num_workers: int = Field(0, ge=0)
    channels_last: bool = True  # NHWC weights: faster CNN training on CPU (TrainLoopParams.channels_last)
    min_box_size: int = Field(2, ge=1)  # boxes thinner than this (pixels) are not learnt from

    @model_validator(mode="after")
    def _ordered_margins(self) -> MalTrainParams:
        low, high = self.margin_range
        if not 0.0 <= low <= high:
            raise ValueError("margin_range must be [low, high] with 0 <= low <= high")
        return self


class MalEvalParams(_Section):
    test_margin: float = Field(0.6, ge=0.0)  # each side 0.5 * 0.6 of the box: a 1.3x crop
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    batch_size: int = Field(8, ge=1)
    num_overlays: int = Field(6, ge=0)


class MalParams(_Section):
    model: MalModelParams = MalModelParams()
    train: MalTrainParams = MalTrainParams()
    eval: MalEvalParams = MalEvalParams()
    # Where MAL's train boxes come from: ``annotated`` (the prepared COCO file: drawn boxes) or
    # ``cam`` (the CAM classifier's boxes of the train images it calls anomalous, ``label_cam``):
    # with ``segment.train.labels: mal`` too, ChangeNet then learns from image labels alone.
    boxes: Literal["annotated", "cam"] = "annotated"
    registered_model: str = "inspectops-mal"

    @model_validator(mode="after")
    def _val_boxes_are_drawn_boxes(self) -> MalParams:
        if self.boxes == "cam" and self.train.use_val_boxes:
            raise ValueError(
                "mal.train.use_val_boxes learns from the drawn val boxes; with mal.boxes: cam there are none "
                "(set use_val_boxes: false)"
            )
        return self


class ExportParams(_Section):
    """ONNX export of the segmentation model, with a parity check against PyTorch."""

    opset: int = Field(17, ge=17, le=23)
    dynamic_batch: bool = True
    side_outputs: bool = False
    parity_samples: int = Field(8, ge=1)
    parity_max_abs_logit: float = Field(1e-3, gt=0.0)
    parity_min_equal_pixels: float = Field(0.999, gt=0.0, le=1.0)


class QuantizeParams(_Section):
    """Post-training quantization; a model losing more than ``iou_tolerance`` change-IoU is not promoted."""

    backends: tuple[Literal["modelopt", "onnxruntime", "torchao"], ...] = ("onnxruntime",)
    calibration_samples: int = Field(32, ge=1)
    iou_tolerance: float = Field(0.005, ge=0.0, le=1.0)
    """Largest allowed drop of val change-IoU, as a fraction (0.005 = 0.5 points)."""
    modelopt_format: Literal["int8", "fp8"] = "int8"
    per_channel: bool = True


class BenchmarkParams(_Section):
    """trtexec-like latency/throughput measurement of exported models."""

    platform: str = "cpu"
    platforms: tuple[str, ...] = ("cpu",)
    batch_sizes: tuple[int, ...] = (1, 8)
    """Measured on every platform; a platform's TAO reference batch size is always added."""
    warmup_seconds: float = Field(0.5, ge=0.0)
    duration_seconds: float = Field(2.0, gt=0.0)
    min_iterations: int = Field(5, ge=1)
    threads: int | None = Field(None, ge=1)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or min(sizes) < 1:
            raise ValueError("must list at least one batch size, each >= 1")
        return sizes


FAMILIES: tuple[str, ...] = ("cam", "mal", "segment", "classify")
"""The model families, in the order the pipeline runs them (``components/models/<family folder>``)."""


class PipelineParams(_Section):
    """Which model families the pipeline trains, and why the others do not apply.

    ``inspectops data import`` writes both into the params overlay it proposes
    (:mod:`components.data.support`): a family the data cannot feed is left out, with the reason
    the closing summary shows (``not applicable: no masks and no boxes``).
    """

    families: tuple[Literal["cam", "mal", "segment", "classify"], ...] = FAMILIES
    not_applicable: dict[str, str] = Field(default_factory=dict)
    """``family -> reason`` for each family left out of ``families``."""

    @field_validator("families")
    @classmethod
    def _distinct(cls, families: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(families)) != len(families):
            raise ValueError(f"must name each family once; got {list(families)}")
        return families

    @field_validator("not_applicable")
    @classmethod
    def _known(cls, reasons: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(reasons) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown family(ies) {unknown}; families are {list(FAMILIES)}")
        return reasons

    def skip_reason(self, family: str) -> str | None:
        """Why ``family`` does not run (``None``: it runs)."""
        if family in self.families:
            return None
        return self.not_applicable.get(family) or f"not in pipeline.families {list(self.families)}"


class TrackingParams(_Section):
    experiment: str = "inspectops"
    tracking_uri: str | None = None
    """``None``: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db``."""
    registered_model: str = "inspectops-changenet-segment"
    http_retries: int = Field(5, ge=0, le=10)
    """Retries of a request the tracking server does not answer (MLflow's client allows at most 10)."""
    http_backoff_seconds: int = Field(2, ge=0, le=120)
    """Backoff factor between them (whole seconds, as MLflow reads it): waits of 0, 2f, 4f, 8f ... s, so
    5 and 2 ride out a server that is gone for up to about a minute (a restart), then the stage fails
    naming the server."""


class Params(_Section):
    seed: int = Field(42, ge=0)
    train_seed: int | None = Field(None, ge=0)
    """Seed of training alone (weight init, batch order, augmentation); ``None``: ``seed``.

    ``seed`` also fixes the data (the synthetic renders, the train/val split), so changing it
    changes what is measured. This one re-runs a recipe on the same split, so a difference of a
    point or two between recipes can be read against the spread of seeds."""
    paths: PathsParams = PathsParams()
    data: DataParams = DataParams()
    synthetic: SyntheticParams = SyntheticParams()
    segment: SegmentParams = SegmentParams()
    mal: MalParams = MalParams()
    classify: ClassifyParams = ClassifyParams()
    cam: CamParams = CamParams()
    export: ExportParams = ExportParams()
    quantize: QuantizeParams = QuantizeParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    tracking: TrackingParams = TrackingParams()
    pipeline: PipelineParams = PipelineParams()

    @model_validator(mode="after")
    def _families_fed(self) -> Params:
        families = self.pipeline.families
        if "segment" in families and self.segment.train.labels == "mal" and "mal" not in families:
            raise ValueError("segment.train.labels: mal needs the mal family in pipeline.families")
        if "mal" in families and self.mal.boxes == "cam" and "cam" not in families:
            raise ValueError("mal.boxes: cam needs the cam family in pipeline.families")
        return self

    @model_validator(mode="after")
    def _classify_fits_data(self) -> Params:
        lights = len(self.data.lighting_conditions)
        model = self.classify.model
        if model.concat_type == "grid" and model.grid_map.x * model.grid_map.y != lights:
            raise ValueError(
                f"classify.model.grid_map {model.grid_map.x}x{model.grid_map.y} must hold exactly the "
                f"{lights} lighting condition(s) of data.lighting_conditions"
            )
        for name, chosen_on in (
            ("classify.eval.threshold_split", self.classify.eval.threshold_split),
            ("segment.eval.image_threshold_split", self.segment.eval.image_threshold_split),
            ("cam.eval.threshold_split", self.cam.eval.threshold_split),
        ):
            if chosen_on == "calibration" and self.data.calibration_fraction <= 0:
                raise ValueError(f"{name}: calibration needs data.calibration_fraction > 0 (parts held out of train)")
        if self.classify.eval.threshold_split == "test" and self.data.test_fraction <= 0:
            raise ValueError("classify.eval.threshold_split: test needs data.test_fraction > 0")
        if self.segment.eval.image_threshold_split == "test" and self.data.test_fraction <= 0:
            raise ValueError("segment.eval.image_threshold_split: test needs data.test_fraction > 0")
        if self.cam.eval.threshold_split == "test" and self.data.test_fraction <= 0:
            raise ValueError("cam.eval.threshold_split: test needs data.test_fraction > 0")
        if self.data.tiling is not None and self.segment.train.labels == "mal":
            raise ValueError(
                "data.tiling trains on native-size masks; segment.train.labels: mal (masks at data.image_size) "
                "is not supported with it (set labels: masks or tiling: null)"
            )
        return self

    @property
    def training_seed(self) -> int:
        """The seed every family's training uses: ``train_seed``, else ``seed``."""
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def raw_category_dir(self) -> Path:
        """``data/<source>/<category>``: where synth/ingest write and prepare reads."""
        return self.paths.data_dir / self.data.source / self.data.category

    @property
    def datasets_dir(self) -> Path:
        return self.paths.artifacts_dir / "datasets"

    @property
    def metrics_dir(self) -> Path:
        """Metrics DVC compares; committed to git, so only reproducible numbers go here."""
        return self.paths.artifacts_dir / "metrics"

    @property
    def reports_dir(self) -> Path:
        """Files for people holding run ids, versions or timings: never a DVC output."""
        return self.paths.artifacts_dir / "reports"


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid value(s)"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  - {key}: {item['msg']}{got_text}")
    return "\n".join(lines)


def merge_overlay(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``overlay`` applied: nested mappings merge, other values replace.

    How a params overlay (``infra/params/*.yaml``: only the keys that differ) meets ``params.yaml``,
    for the deployments' pull step and the benchmarks alike.
    """
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_params(raw: dict[str, Any] | None, source: str = "params") -> Params:
    """Validate a mapping (as read from YAML) and raise :class:`ParamsError` naming each bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as error:
        raise ParamsError(_format_errors(error, source)) from None


EXTENDS_KEY = "extends"
"""Top-level key of a params overlay: the params file (relative to the overlay) it is merged over."""


def read_raw_params(path: Path | str, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a params file, with its ``extends:`` chain merged in (overlay keys win).

    An overlay (``params.<name>.yaml`` written by ``inspectops data import``, or one of
    ``infra/params/*.yaml`` given ``extends:``) holds only the keys that differ, so it stays
    readable and picks up every later change to the base file.
    """
    path = Path(path)
    if not path.is_file():
        chain = " <- ".join(str(p) for p in (*_seen, path))
        raise ParamsError(f"{path}: params file not found" + (f" (extended by {chain})" if _seen else ""))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    base = raw.pop(EXTENDS_KEY, None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ParamsError(f"{path}: {EXTENDS_KEY} must be the path of a params file, got {base!r}")
    base_path = path.parent / base
    if base_path.resolve() in {p.resolve() for p in (*_seen, path)}:
        raise ParamsError(f"{path}: {EXTENDS_KEY}: {base} makes a cycle")
    return merge_overlay(read_raw_params(base_path, (*_seen, path)), raw)


def load_params(path: Path | str = DEFAULT_PARAMS_PATH, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file (and its ``extends:`` base); ``overrides`` maps dotted keys to values."""
    raw = read_raw_params(path)
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return parse_params(raw, str(path))


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a raw params mapping (``-S key=value``, the benchmarks' ``--set``), making missing sections."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParamsError(f"override {dotted}: {part} is not a section")
    node[leaf] = value

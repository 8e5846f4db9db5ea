"""The stage graph: the one definition of the pipeline that DVC and Prefect both follow.

Each :class:`Stage` names the CLI command DVC runs, the function the Prefect flow calls
(the CLI calls the same function), and its deps, params, outs and metrics. ``dvc.yaml``
is rendered from this list (``inspectops pipeline dvc-yaml``) and a test fails when the
committed file drifts from it. Paths are DVC templates over ``params.yaml`` keys
(``${data.category}``), resolved the same way for the flow.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.config import Params

StageFn = Callable[[Params], dict[str, float]]

_TEMPLATE = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    ``entrypoint`` is ``"module:function"`` taking :class:`Params` and returning flat numeric
    metrics; it is imported lazily so that listing stages never imports torch.
    ``only_for_source`` limits a stage to one ``data.source`` in the Prefect flow (DVC always
    declares it, since its graph cannot branch on a param).
    """

    name: str
    command: str
    entrypoint: str
    description: str
    deps: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    only_for_source: str | None = None
    family: str | None = None
    """Model family the entrypoint works on; passed as ``family=`` (the shared stages take one)."""
    part_of: str | None = None
    """Model family a family-specific stage belongs to (``label_cam``); ``family`` implies it."""
    datasets: tuple[str, ...] = ()
    """Prepared datasets the stage reads (``segment``, ``classify``, ``coco``, ``image_labels``): a source
    format that cannot feed all of them (``components.data.sources``) skips the stage in the Prefect flow."""
    retries: int = 0
    reports: tuple[str, ...] = ()
    """Markdown files the flow publishes as Prefect artifacts after the stage ran."""
    key_metrics: tuple[str, ...] = ()
    """Metric names (``fnmatch`` patterns) the pipeline's closing summary shows for this stage."""
    extra: dict[str, Any] = field(default_factory=dict)

    def function(self) -> StageFn:
        module_name, attr = self.entrypoint.split(":")
        function = getattr(importlib.import_module(module_name), attr)
        return functools.partial(function, family=self.family) if self.family else function

    @property
    def model_family(self) -> str | None:
        """The family whose stages this one is (``None``: a data stage every family needs)."""
        return self.family or self.part_of

    def applies_to(self, params: Params) -> bool:
        return self.skip_reason(params) is None

    def skip_reason(self, params: Params) -> str | None:
        """Why the stage does not run for ``params`` (``None``: it runs)."""
        from components.data.sources import source_format

        if self.only_for_source is not None and self.only_for_source != params.data.source:
            return f"only for data.source {self.only_for_source}"
        if self.model_family is not None and (reason := params.pipeline.skip_reason(self.model_family)):
            return reason
        fed = source_format(params.data.source).datasets
        missing = [dataset for dataset in self.datasets if dataset not in fed]
        if missing:
            return f"data.source {params.data.source} feeds no {' or '.join(missing)} dataset"
        return None


RAW = "${paths.data_dir}/${data.source}/${data.category}"
DATASETS = "${paths.artifacts_dir}/datasets"
METRICS = "${paths.artifacts_dir}/metrics"
"""Metrics files: committed to git (``.gitignore`` keeps this one folder of ``artifacts/``), so
``dvc exp show`` and ``dvc metrics diff`` compare every commit and experiment. Only numbers that
the same inputs reproduce belong here; timings and run ids go to MLflow and ``REPORTS``."""
DEPLOY = "${paths.artifacts_dir}/deploy"
MODELS = "${paths.artifacts_dir}/models"
PLOTS = "${paths.artifacts_dir}/plots"
LABELS_MAL = "${paths.artifacts_dir}/labels/mal"
"""MAL's labels of the train boxes: COCO with RLE masks and one mask PNG per train image."""
LABELS_CAM = "${paths.artifacts_dir}/labels/cam"
"""The CAM classifier's boxes of the train images it calls anomalous (COCO, no masks)."""
_MODEL_CODE = (
    "components/models/family.py",
    "components/models/checkpoint.py",
    "components/models/backbones",
    "components/evaluation/calibration.py",  # the parts held out of training, that thresholds are chosen on
)
"""Code every model family builds on: the family interface, the checkpoint loader, the backbones and the
calibration cut."""
REPORTS = "${paths.artifacts_dir}/reports"
"""Files for people that hold run ids, versions or timings (Data Docs, the registry decision,
benchmark tables): deliberately not DVC outputs, whose hashes must not change from run to run."""

STAGES: tuple[Stage, ...] = (
    Stage(
        name="synth",
        command="inspectops data synth",
        entrypoint="components.pipeline.steps:synth",
        description="Generate the built-in synthetic category (MVTec AD layout, four lights).",
        deps=("components/data/synth.py",),
        params=("seed", "synthetic"),
        outs=("${paths.data_dir}/synthetic/${data.category}",),
        only_for_source="synthetic",
        key_metrics=("synth/images",),
    ),
    Stage(
        name="prepare",
        command="inspectops data prepare",
        entrypoint="components.pipeline.steps:prepare",
        description="Golden pool, seeded 70/30 split; segmentation, classification and COCO datasets.",
        deps=(
            RAW,
            "components/data/prepare.py",
            "components/data/sources",
            "components/data/split.py",
            "components/data/coco.py",
        ),
        params=("seed", "data"),
        outs=(DATASETS,),
        metrics=(f"{METRICS}/data.json",),
        key_metrics=("segment/train", "segment/val"),
    ),
    Stage(
        name="validate",
        command="inspectops data validate",
        entrypoint="components.pipeline.steps:validate",
        description="Great Expectations suites on the CSVs and lists; a broken dataset stops here.",
        deps=(DATASETS, "components/validation"),
        params=("data",),
        outs=("${paths.artifacts_dir}/validation",),
        metrics=(f"{METRICS}/validation.json",),
        key_metrics=("validation/success", "validation/failed_expectations"),
    ),
    # ---- CAM defect classifier (components/models/cam): image labels in, good/anomaly and a box out.
    # Before MAL, which can learn from and label its boxes (mal.boxes: cam).
    Stage(
        name="train_cam",
        command="inspectops train cam",
        entrypoint="components.pipeline.steps:train",
        family="cam",
        datasets=("image_labels",),
        description="Train the CAM classifier on image labels (class-weighted CE), best checkpoint on val AUROC.",
        deps=(DATASETS, f"{METRICS}/validation.json", *_MODEL_CODE, "components/models/cam", "components/training"),
        params=("seed", "train_seed", "data.calibration_fraction", "cam.model", "cam.train", "cam.input_size"),
        outs=(f"{MODELS}/cam",),
        metrics=(f"{METRICS}/cam_train.json",),
        key_metrics=("train/best_val_auroc", "train/epochs"),
    ),
    Stage(
        name="evaluate_cam",
        command="inspectops evaluate cam",
        entrypoint="components.pipeline.steps:evaluate",
        family="cam",
        datasets=("image_labels",),
        description="Accuracy, balanced accuracy, AUROC; CAM box IoU against the true defect box; heatmap overlays.",
        deps=(DATASETS, f"{MODELS}/cam", *_MODEL_CODE, "components/models/cam", "components/evaluation"),
        params=("data.calibration_fraction", "cam.eval"),
        outs=(f"{PLOTS}/cam",),
        metrics=(f"{METRICS}/cam.json",),
        key_metrics=("val/auroc", "val/accuracy", "val/box_iou"),
    ),
    Stage(
        name="label_cam",
        part_of="cam",
        command="inspectops label cam --pipeline",
        entrypoint="components.pipeline.steps:label_cam",
        datasets=("segment",),
        description="Box the train images the CAM classifier calls anomalous: COCO for MAL (mal.boxes: cam).",
        deps=(DATASETS, f"{MODELS}/cam", *_MODEL_CODE, "components/models/cam", "components/labeling/cam_boxes.py"),
        params=("data.calibration_fraction", "cam.eval"),
        outs=(LABELS_CAM,),
        metrics=(f"{METRICS}/cam_label.json",),
        key_metrics=("label/boxes", "label/defect_recall", "label/box_iou"),
    ),
    Stage(
        name="export_cam",
        command="inspectops export cam",
        entrypoint="components.pipeline.steps:export",
        family="cam",
        datasets=("image_labels",),
        description="ONNX export (image -> heatmap, logits; dynamic batch) with a torch parity check.",
        deps=(f"{MODELS}/cam", DATASETS, *_MODEL_CODE, "components/models/cam", "components/export"),
        params=("export", "data.calibration_fraction", "cam.eval"),
        outs=(f"{DEPLOY}/cam_fp32.onnx", f"{DEPLOY}/cam_fp32.json"),
        metrics=(f"{METRICS}/cam_export.json",),
        key_metrics=("export/parity_max_abs_logit", "export/size_mb"),
    ),
    Stage(
        name="register_cam",
        command="inspectops register cam",
        entrypoint="components.pipeline.steps:register",
        family="cam",
        datasets=("image_labels",),
        description="Register in MLflow (inspectops-cam); champion only if its val AUROC is at least the champion's.",
        deps=(
            f"{METRICS}/cam.json",
            f"{METRICS}/cam_export.json",
            f"{MODELS}/cam",
            "components/registry.py",
            "components/serving",
        ),
        params=("cam.registered_model",),
        outs=("${paths.artifacts_dir}/registry/cam.json",),
        retries=2,
        key_metrics=("register/version", "register/promoted"),
    ),
    # ---- MAL: masks from boxes (components/models/mal). Before ChangeNet, whose training can use its labels.
    Stage(
        name="train_mal",
        command="inspectops train mal",
        entrypoint="components.pipeline.steps:train",
        family="mal",
        datasets=("coco",),
        description="Train the Mask Auto-Labeler from the train boxes only (MIL + CRF losses, EMA teacher).",
        # The CAM boxes are a dependency whatever mal.boxes says (DVC's graph cannot branch on a param).
        deps=(
            DATASETS,
            f"{METRICS}/validation.json",
            LABELS_CAM,
            *_MODEL_CODE,
            "components/models/mal",
            "components/training",
        ),
        params=("seed", "train_seed", "mal.model", "mal.train", "mal.boxes"),
        outs=(f"{MODELS}/mal",),
        metrics=(f"{METRICS}/mal_train.json",),
        key_metrics=("train/best_val_miou", "train/epochs"),
    ),
    Stage(
        name="evaluate_mal",
        command="inspectops evaluate mal",
        entrypoint="components.pipeline.steps:evaluate",
        family="mal",
        datasets=("coco",),
        description="Mask IoU of every val box against its true mask, beside the box and box+CRF baselines.",
        deps=(DATASETS, f"{MODELS}/mal", *_MODEL_CODE, "components/models/mal", "components/evaluation"),
        params=("mal.eval",),
        outs=(f"{PLOTS}/mal",),
        metrics=(f"{METRICS}/mal.json",),
        key_metrics=("val/miou", "val/baseline_box/miou", "val/baseline_crf/miou"),
    ),
    Stage(
        name="label_mal",
        part_of="mal",
        command="inspectops label mal --pipeline",
        entrypoint="components.pipeline.steps:label_mal",
        datasets=("coco", "segment"),  # boxes from the COCO file, one mask per segmentation train pair
        description="Label the train boxes with MAL: COCO with RLE masks and per-image masks for ChangeNet.",
        deps=(DATASETS, LABELS_CAM, f"{MODELS}/mal", *_MODEL_CODE, "components/models/mal", "components/labeling"),
        params=("mal.eval", "mal.boxes"),
        outs=(LABELS_MAL,),
        metrics=(f"{METRICS}/mal_label.json",),
        key_metrics=("label/annotations", "label/train_miou"),
    ),
    Stage(
        name="export_mal",
        command="inspectops export mal",
        entrypoint="components.pipeline.steps:export",
        family="mal",
        datasets=("coco",),
        description="ONNX export of MAL (crop -> mask logits, dynamic batch) with a torch parity check.",
        deps=(f"{MODELS}/mal", DATASETS, *_MODEL_CODE, "components/models/mal", "components/export"),
        params=("export",),
        outs=(f"{DEPLOY}/mal_fp32.onnx", f"{DEPLOY}/mal_fp32.json"),
        metrics=(f"{METRICS}/mal_export.json",),
        key_metrics=("export/parity_max_abs_logit", "export/size_mb"),
    ),
    Stage(
        name="register_mal",
        command="inspectops register mal",
        entrypoint="components.pipeline.steps:register",
        family="mal",
        datasets=("coco",),
        description="Register MAL in MLflow (inspectops-mal); champion only if its val mIoU is at least the champion's.",
        deps=(f"{METRICS}/mal.json", f"{MODELS}/mal", "components/registry.py"),
        params=("mal.registered_model",),
        outs=("${paths.artifacts_dir}/registry/mal.json",),
        retries=2,
        key_metrics=("register/version", "register/promoted"),
    ),
    # ---- Visual ChangeNet-Segmentation (components/models/changenet).
    Stage(
        name="train_segment",
        command="inspectops train segment",
        entrypoint="components.pipeline.steps:train",
        family="segment",
        datasets=("segment",),
        description="Train Visual ChangeNet-Segmentation (Lightning), best checkpoint on val change-IoU.",
        # The validation report is a dependency so training never starts on data that failed it.
        # MAL's labels are one too: with segment.train.labels: mal they are the train masks (DVC's
        # graph cannot branch on a param, so the dependency holds either way).
        deps=(
            DATASETS,
            f"{METRICS}/validation.json",
            LABELS_MAL,
            *_MODEL_CODE,
            "components/models/changenet",
            "components/training",
        ),
        params=("seed", "train_seed", "data.calibration_fraction", "segment.model", "segment.train"),
        outs=(f"{MODELS}/segment",),
        metrics=(f"{METRICS}/segment_train.json",),
        key_metrics=("train/best_val_iou", "train/epochs"),
    ),
    Stage(
        name="evaluate_segment",
        command="inspectops evaluate segment",
        entrypoint="components.pipeline.steps:evaluate",
        family="segment",
        datasets=("segment",),
        description="Pixel, per-defect and image metrics on val; PR curve and overlays.",
        # LABELS_MAL: with segment.train.labels: mal, boxes-only val pairs are judged on MAL's masks of their boxes
        deps=(
            DATASETS,
            LABELS_MAL,
            f"{MODELS}/segment",
            *_MODEL_CODE,
            "components/models/changenet",
            "components/evaluation",
        ),
        params=("data.calibration_fraction", "segment.eval"),
        outs=(f"{PLOTS}/segment",),
        metrics=(f"{METRICS}/segment.json",),
        key_metrics=("val/iou", "val/f1", "val/image_auroc"),
    ),
    Stage(
        name="export_segment",
        command="inspectops export segment",
        entrypoint="components.pipeline.steps:export",
        family="segment",
        datasets=("segment",),
        description="ONNX export (test, golden -> change logits, dynamic batch) with a torch parity check.",
        deps=(f"{MODELS}/segment", DATASETS, *_MODEL_CODE, "components/models/changenet", "components/export"),
        params=("export", "data.calibration_fraction", "segment.eval"),
        outs=(f"{DEPLOY}/segment_fp32.onnx", f"{DEPLOY}/segment_fp32.json"),
        metrics=(f"{METRICS}/segment_export.json",),
        key_metrics=("export/parity_max_abs_logit", "export/size_mb"),
    ),
    Stage(
        name="quantize_segment",
        command="inspectops quantize segment",
        entrypoint="components.pipeline.steps:quantize",
        family="segment",
        datasets=("segment",),
        description="Post-training quantization (quantize.backends), each judged on val against FP32.",
        deps=(
            f"{MODELS}/segment",
            f"{DEPLOY}/segment_fp32.onnx",
            DATASETS,
            LABELS_MAL,
            *_MODEL_CODE,
            "components/models/changenet",
            "components/quantization",
            "components/export",  # quantize_stage and the ONNX runtime wrapper live there
        ),
        params=("seed", "quantize", "data.calibration_fraction", "segment.eval"),
        # The default backend's models; other backends write beside them (untracked by DVC).
        outs=(f"{DEPLOY}/segment_int8_qdq.onnx", f"{DEPLOY}/segment_int8_cpu.onnx"),
        metrics=(f"{METRICS}/segment_quantize.json",),
        key_metrics=("quantize/fp32/val_iou", "quantize/*/iou_drop"),
    ),
    Stage(
        name="register_segment",
        command="inspectops register segment",
        entrypoint="components.pipeline.steps:register",
        family="segment",
        datasets=("segment",),
        description="Register the model in MLflow; move the champion alias only if the gate passes.",
        deps=(
            f"{METRICS}/segment.json",
            f"{METRICS}/segment_quantize.json",
            f"{MODELS}/segment",
            "components/registry.py",
            "components/serving",
        ),
        params=("quantize.iou_tolerance", "tracking.registered_model"),
        # The version number and the decision depend on the registry's state, not only on the
        # inputs: they live in MLflow and REPORTS/registry/<family>_decision.json. The output is
        # the candidate as submitted: missing on a fresh clone, so DVC registers there once.
        outs=("${paths.artifacts_dir}/registry/segment.json",),
        retries=2,  # the registry is a server in a team stack: retry passing network errors
        key_metrics=("register/version", "register/promoted"),
    ),
    Stage(
        name="benchmark_segment",
        command="inspectops benchmark platform",
        entrypoint="components.pipeline.steps:benchmark",
        family="segment",
        datasets=("segment",),
        description="trtexec-style timing of the FP32 and INT8 ONNX on this machine, beside TAO's platforms.",
        deps=(
            f"{DEPLOY}/segment_fp32.onnx",
            f"{DEPLOY}/segment_int8_qdq.onnx",
            f"{DEPLOY}/segment_int8_cpu.onnx",
            "components/benchmarking",
        ),
        params=("benchmark",),
        # Timings differ on every run: the tables go to MLflow and REPORTS. The output says what
        # was measured (no times): missing on a fresh clone, so DVC measures each machine once.
        outs=("${paths.artifacts_dir}/benchmarks/measured.json",),
        reports=(f"{REPORTS}/benchmarks/comparison.md",),
        key_metrics=("bench/*/b8/pairs_per_second",),
    ),
    # ---- Visual ChangeNet-Classification (components/models/changenet_classify): pass/defect per part.
    Stage(
        name="train_classify",
        command="inspectops train classify",
        entrypoint="components.pipeline.steps:train",
        family="classify",
        datasets=("classify",),
        description="Train Visual ChangeNet-Classification on the Optical Inspection CSVs (all lights), best on val AUROC.",
        deps=(
            DATASETS,
            f"{METRICS}/validation.json",
            *_MODEL_CODE,
            "components/models/changenet/decoder.py",  # the difference modules it shares
            "components/models/changenet/data.py",  # the seeded sampler and photometric jitter it shares
            "components/models/changenet_classify",
            "components/training",
        ),
        params=(
            "seed",
            "train_seed",
            "data.lighting_conditions",
            "data.num_golden",
            "data.calibration_fraction",
            "classify.model",
            "classify.train",
            "classify.input_size",
        ),
        outs=(f"{MODELS}/classify",),
        metrics=(f"{METRICS}/classify_train.json",),
        key_metrics=("train/best_val_auroc", "train/epochs"),
    ),
    Stage(
        name="evaluate_classify",
        command="inspectops evaluate classify",
        entrypoint="components.pipeline.steps:evaluate",
        family="classify",
        datasets=("classify",),
        description="TAO's accuracy, defect accuracy and false alarm at a threshold chosen on train; AUROC, ROC curve, misclassified parts.",
        deps=(
            DATASETS,
            f"{MODELS}/classify",
            *_MODEL_CODE,
            "components/models/changenet/decoder.py",
            "components/models/changenet_classify",
            "components/evaluation",
        ),
        params=("data.calibration_fraction", "classify.eval"),
        outs=(f"{PLOTS}/classify",),
        metrics=(f"{METRICS}/classify.json",),
        key_metrics=("val/auroc", "val/defect_accuracy", "val/false_alarm"),
    ),
    Stage(
        name="export_classify",
        command="inspectops export classify",
        entrypoint="components.pipeline.steps:export",
        family="classify",
        datasets=("classify",),
        description="ONNX export (input_1, input_2 -> output, TAO's names; dynamic batch) with a torch parity check.",
        deps=(
            f"{MODELS}/classify",
            DATASETS,
            *_MODEL_CODE,
            "components/models/changenet/decoder.py",
            "components/models/changenet_classify",
            "components/export",
        ),
        params=("export", "data.calibration_fraction", "classify.eval"),
        outs=(f"{DEPLOY}/classify_fp32.onnx", f"{DEPLOY}/classify_fp32.json"),
        metrics=(f"{METRICS}/classify_export.json",),
        key_metrics=("export/parity_max_abs_logit", "export/size_mb"),
    ),
    Stage(
        name="quantize_classify",
        command="inspectops quantize classify",
        entrypoint="components.pipeline.steps:quantize",
        family="classify",
        datasets=("classify",),
        description="Post-training quantization (quantize.backends), each judged on val AUROC against FP32.",
        deps=(
            f"{MODELS}/classify",
            f"{DEPLOY}/classify_fp32.onnx",
            DATASETS,
            *_MODEL_CODE,
            "components/models/changenet/decoder.py",
            "components/models/changenet_classify",
            "components/quantization",
            "components/export",
        ),
        params=("seed", "quantize", "data.calibration_fraction", "classify.eval"),
        outs=(f"{DEPLOY}/classify_int8_qdq.onnx", f"{DEPLOY}/classify_int8_cpu.onnx"),
        metrics=(f"{METRICS}/classify_quantize.json",),
        key_metrics=("quantize/fp32/val_auroc", "quantize/onnxruntime*/val_auroc"),
    ),
    Stage(
        name="register_classify",
        command="inspectops register classify",
        entrypoint="components.pipeline.steps:register",
        family="classify",
        datasets=("classify",),
        description="Register in MLflow (inspectops-changenet-classify); champion only if val AUROC passes the gate.",
        deps=(
            f"{METRICS}/classify.json",
            f"{METRICS}/classify_quantize.json",
            f"{MODELS}/classify",
            "components/registry.py",
            "components/serving",
        ),
        params=("quantize.iou_tolerance", "classify.registered_model"),
        outs=("${paths.artifacts_dir}/registry/classify.json",),
        retries=2,
        key_metrics=("register/version", "register/promoted"),
    ),
    Stage(
        name="benchmark_classify",
        command="inspectops benchmark platform classify",
        entrypoint="components.pipeline.steps:benchmark",
        family="classify",
        datasets=("classify",),
        description="Timing of the classifier's FP32 and INT8 ONNX on this machine.",
        deps=(
            f"{DEPLOY}/classify_fp32.onnx",
            f"{DEPLOY}/classify_int8_qdq.onnx",
            f"{DEPLOY}/classify_int8_cpu.onnx",
            "components/benchmarking",
        ),
        params=("benchmark",),
        outs=("${paths.artifacts_dir}/benchmarks/measured_classify.json",),
        reports=(f"{REPORTS}/benchmarks/comparison_classify.md",),
        key_metrics=("bench/*/b8/pairs_per_second",),
    ),
)


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]


def get_stage(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(f"unknown stage {name!r}; stages are {stage_names()}")


def resolve(template: str, params: Params) -> str:
    """Substitute ``${a.b}`` from params exactly as DVC does from ``params.yaml``."""
    values = params.model_dump(mode="json")

    def lookup(match: re.Match[str]) -> str:
        node: Any = values
        for part in match.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"template {template!r}: params have no key {match.group(1)!r}")
            node = node[part]
        return str(node)

    return _TEMPLATE.sub(lookup, template)


def resolve_path(template: str, params: Params) -> Path:
    return Path(resolve(template, params))


def upstream(stage: Stage, params: Params) -> list[str]:
    """Stages whose outs this stage depends on (derived, so the graph is never written twice)."""
    deps = [resolve(dep, params) for dep in stage.deps]
    names = []
    for other in STAGES:
        if other is stage or not other.applies_to(params):
            continue
        outs = [resolve(out, params) for out in other.outs]
        if any(dep == out or dep.startswith(out + "/") or out.startswith(dep + "/") for dep in deps for out in outs):
            names.append(other.name)
    return names


def plan(params: Params, until: str | None = None) -> list[Stage]:
    """The stages the flow runs for these params, in graph order, stopping after ``until``."""
    selected: list[Stage] = []
    for stage in STAGES:
        if stage.applies_to(params):
            selected.append(stage)
        if stage.name == until:
            break
    else:
        if until is not None:
            raise KeyError(f"unknown stage {until!r}; stages are {stage_names()}")
    return selected

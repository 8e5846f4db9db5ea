"""MLflow model registry: register every trained model, promote it only through a gate.

The ``champion`` alias marks the model version that serves and that the platform
benchmarks measure. A challenger takes the alias only if its val change-IoU is at least
the champion's and its quantized model lost no more than ``quantize.iou_tolerance``;
the decision and its reason are recorded on the model version and in a JSON file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.config import Params
from components.fsutil import write_json
from components.models.family import ModelFamily, best_checkpoint, get_family

CHAMPION = "champion"


@dataclass(frozen=True)
class Candidate:
    """What the gate needs to know about one model version."""

    version: str
    val_iou: float
    quant_iou_drop: float | None  # worst drop over the quantized variants; None = not quantized


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide_promotion(
    challenger: Candidate, champion: Candidate | None, tolerance: float, metric: str = "change-IoU"
) -> Decision:
    """The promotion gate, as a pure function (tested on its own). ``metric`` names the family's
    gate metric in the reasons (``val_iou`` holds its value, whichever it is)."""
    if math.isnan(challenger.val_iou):
        return Decision(False, f"version {challenger.version} has no val {metric}")
    if challenger.quant_iou_drop is not None and challenger.quant_iou_drop > tolerance:
        return Decision(
            False,
            f"quantized {metric} drop {100 * challenger.quant_iou_drop:.2f} points exceeds the tolerance "
            f"{100 * tolerance:.2f}",
        )
    value = f"val {metric} {100 * challenger.val_iou:.2f}"
    if champion is None:
        return Decision(True, f"no champion yet; version {challenger.version} ({value})")
    if challenger.val_iou >= champion.val_iou:
        return Decision(True, f"{value} >= champion v{champion.version} {100 * champion.val_iou:.2f}")
    return Decision(False, f"{value} < champion v{champion.version} {100 * champion.val_iou:.2f}")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def worst_quant_drop(quantize_metrics: dict[str, Any]) -> float | None:
    """The largest val change-IoU drop over the quantized variants; ``inf`` if a variant outside
    tolerance has no measured drop (e.g. an FP8 model that only TensorRT can run), so it never
    promotes silently."""
    drops = [float(v) for k, v in quantize_metrics.items() if k.endswith("/iou_drop") and v is not None]
    for key, value in quantize_metrics.items():
        variant = key.removesuffix("/within_tolerance")
        if key != variant and value == 0 and quantize_metrics.get(f"{variant}/iou_drop") is None:
            return float("inf")
    return max(drops) if drops else None


THRESHOLD_KEYS = (
    "threshold",
    "image_threshold",
    "threshold_split",
    "threshold_max_false_alarm_rate",
    "threshold_on_unseen_parts",
    "calibration_fraction",
)
"""Sidecar keys a registered version is tagged with: its operating threshold and how it was chosen."""


def shipped_threshold(params: Params, family: ModelFamily) -> dict[str, Any]:
    """The operating threshold in the exported model's sidecar (empty before the export stage ran)."""
    from components.export.onnx_export import read_sidecar, sidecar_path
    from components.export.stage import fp32_onnx_path

    model = fp32_onnx_path(params, family)
    if not sidecar_path(model).is_file():
        return {}
    sidecar = read_sidecar(model)
    return {key: sidecar[key] for key in THRESHOLD_KEYS if sidecar.get(key) is not None}


def register_model(params: Params, family: ModelFamily | str) -> dict[str, float]:
    """Register the family's trained model, run the gate on its gate metric and move ``champion`` if it passes.

    The gate compares ``val/<family.gate_metric>`` of ``metrics/<family>.json`` (ChangeNet: change-IoU,
    MAL: mIoU) with the champion's, and the worst quantized drop, when the family was quantized.
    """
    import mlflow

    from components.evaluation.stage import metrics_path
    from components.export.stage import quantize_metrics_path
    from components.training.runs import training_run, training_run_path

    family = get_family(family) if isinstance(family, str) else family
    run_info = training_run(params, family)
    if "run_id" not in run_info:
        raise FileNotFoundError(
            f"{training_run_path(params, family)}: no training run to register (run the train_{family.name} stage)"
        )
    evaluation = _read_json(metrics_path(params, family))
    quantize = _read_json(quantize_metrics_path(params, family))
    val_iou = evaluation.get(f"val/{family.gate_metric}")
    val_iou = float("nan") if val_iou is None else float(val_iou)

    mlflow.set_tracking_uri(run_info["tracking_uri"])
    client = mlflow.MlflowClient()
    name = family.registered_model(params)
    logged = mlflow.search_logged_models(
        experiment_ids=[run_info["experiment_id"]],
        filter_string=f"source_run_id = '{run_info['run_id']}'",
        output_format="list",
    )
    source = logged[0].model_uri if logged else f"runs:/{run_info['run_id']}/model"
    # One version per trained model: a rerun after a failure part-way through (a tracking server that
    # went down after the version was made) finishes that version instead of making a second one.
    earlier = _version_of_run(client, name, run_info["run_id"])
    next_version = str(earlier.version) if earlier is not None else _next_version(client, name)
    bundle = _log_deployable(params, family, run_info, client, next_version)
    if bundle is not None:  # the line runs the ONNX bundle; the checkpoint stays on the run for retraining
        source = f"runs:/{run_info['run_id']}/{DEPLOYABLE_PATH}"
    if earlier is not None:
        version = earlier
        client.set_model_version_tag(name, version.version, "val_iou", f"{val_iou:.6f}")
    else:
        version = mlflow.register_model(source, name, tags={"val_iou": f"{val_iou:.6f}"})
    _publish_card(params, family, client, str(version.version), run_info, bundle)
    challenger = Candidate(str(version.version), val_iou, worst_quant_drop(quantize))

    champion: Candidate | None = None
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
        champion = Candidate(str(current.version), float(current.tags.get("val_iou", "nan")), None)
    except mlflow.exceptions.MlflowException:
        champion = None

    decision = decide_promotion(challenger, champion, params.quantize.iou_tolerance, family.gate_label)
    client.set_model_version_tag(name, version.version, "promotion", "promoted" if decision.promote else "rejected")
    client.set_model_version_tag(name, version.version, "promotion_reason", decision.reason)
    client.set_model_version_tag(name, version.version, "git_commit", run_info.get("git_commit", ""))
    for key, value in _lineage(params).items():  # from the version back to the inputs that made it
        client.set_model_version_tag(name, version.version, key, value)
    for key, value in shipped_threshold(params, family).items():  # the verdict a line runs, and how it was chosen
        client.set_model_version_tag(name, version.version, key, str(value))
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    client.set_tag(
        run_info["run_id"], "promotion", f"{'promoted' if decision.promote else 'rejected'}: {decision.reason}"
    )

    record = {
        "model": name,
        "version": version.version,
        "decision": asdict(decision),
        "challenger": asdict(challenger),
        "champion_before": asdict(champion) if champion else None,
    }
    write_json(decision_path(params, family), record)
    write_json(candidate_path(params, family), candidate_record(params, family, challenger))
    # Not a DVC metrics file: the version number depends on the registry's history, not on
    # the inputs. The runner logs these to MLflow and the stage's run record.
    return {
        "register/version": float(version.version),
        "register/promoted": float(decision.promote),
    }


DEPLOYABLE_PATH = "deployable"
"""Where the training run holds the pyfunc model a version registers (:mod:`components.serving.bundle`)."""


def _lineage(params: Params) -> dict[str, str]:
    """The version's inputs: params hash, data source and the DVC data version (``data.dvc``)."""
    from components.serving.card import covered_data_version
    from components.tracking import params_hash

    tags = {"params_hash": params_hash(params), "data_source": f"{params.data.source}/{params.data.category}"}
    version = covered_data_version(params, Path.cwd())
    if version.get("md5"):
        tags["data_dvc_md5"] = str(version["md5"])
    return tags


def _version_of_run(client: Any, name: str, run_id: str) -> Any | None:
    """The version of ``name`` already registered from the training run ``run_id``, if any."""
    import mlflow

    try:
        versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except mlflow.exceptions.MlflowException:  # no such registered model yet
        return None
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _next_version(client: Any, name: str) -> str:
    """The version number registration will give (one writer per model: the register stage)."""
    import mlflow

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except mlflow.exceptions.MlflowException:
        return "1"
    return str(max((int(v.version) for v in versions), default=0) + 1)


def _log_deployable(
    params: Params, family: ModelFamily, run_info: dict[str, Any], client: Any, version: str
) -> dict[str, Any] | None:
    """Save the family's deployable pyfunc (ONNX bundle + card) and log it to the training run.

    ``None`` when the family serves no bundle (MAL), the model cannot be served as one (a tiled
    segmentation model) or its export stage has not run: the version then registers the
    training run's PyTorch model as before.
    """
    import tempfile

    from components.export.onnx_export import read_sidecar, sidecar_path
    from components.export.stage import fp32_onnx_path
    from components.serving.bundle import save_deployable, serves
    from components.serving.card import render_card
    from components.serving.runtime import MANIFEST, unserved_reason

    if not serves(family) or not sidecar_path(fp32_onnx_path(params, family)).is_file():
        return None
    if unserved_reason(family.name, read_sidecar(fp32_onnx_path(params, family))):  # e.g. a tiled model
        return None
    with tempfile.TemporaryDirectory(prefix="inspectops-deployable-") as tmp:
        card = lambda manifest: render_card(params, family, version, run_info, manifest)  # noqa: E731
        out = save_deployable(params, family, Path(tmp) / DEPLOYABLE_PATH, card=card)
        manifest = json.loads((out / "artifacts" / "bundle" / MANIFEST).read_text())
        client.log_artifacts(run_info["run_id"], str(out), DEPLOYABLE_PATH)
    return manifest


def _publish_card(
    params: Params,
    family: ModelFamily,
    client: Any,
    version: str,
    run_info: dict[str, Any],
    bundle: dict[str, Any] | None,
) -> str:
    """The version's card: its description (the MLflow UI renders it) and ``model_card/`` on the training run."""
    from components.serving.card import render_card

    name = family.registered_model(params)
    card = render_card(params, family, version, run_info, bundle)
    client.update_model_version(name, version, description=card)
    client.log_text(run_info["run_id"], card, f"model_card/{name}_v{version}.md")
    write_json(params.reports_dir / "registry" / f"{family.name}_card.json", {"model": name, "version": version})
    (params.reports_dir / "registry" / f"{family.name}_card.md").write_text(card)
    return card


class RegistryLookupError(LookupError):
    """A model name, alias or version the registry does not hold; the message names it."""


def describe_version(model: str, tracking_uri: str | None = None) -> str:
    """``NAME@ALIAS``, ``NAME/VERSION`` or ``NAME`` (its champion): the version's card, then its tags."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    name, _, alias = model.partition("@")
    if not alias and "/" in name:
        name, version_id = name.rsplit("/", 1)
        getter, what = (lambda: client.get_model_version(name, version_id)), f"version {version_id}"
    else:
        alias = alias or CHAMPION
        getter, what = (lambda: client.get_model_version_by_alias(name, alias)), f"alias @{alias}"
    try:
        version = getter()
    except mlflow.exceptions.MlflowException as error:
        raise RegistryLookupError(f"{model}: no {what} of registered model {name!r} ({error.message})") from None
    tags = "\n".join(f"- `{k}`: {v}" for k, v in sorted(version.tags.items()))
    card = version.description or f"# {name} v{version.version}\n\n(no model card: registered before cards)"
    return f"{card.rstrip()}\n\n## Registry tags (v{version.version}, run {version.run_id})\n\n{tags}\n"


def candidate_path(params: Params, family: ModelFamily | str) -> Path:
    """``<artifacts>/registry/<family>.json``: the register stage's DVC output.

    Why an output at all: DVC skips a stage whose deps and outs match ``dvc.lock``. With no
    output, a fresh clone (whose registry has never seen the model) would skip registering,
    since the committed lock already lists the same inputs. This file is missing there and
    not in the DVC cache, so DVC runs the stage; where the model was registered (the file is
    in the cache, local or pulled from the team remote) DVC skips it. Its content is the
    model as submitted, deterministic: the version and the gate's verdict depend on the
    registry's history and go to :func:`decision_path` and MLflow instead.
    """
    return params.paths.artifacts_dir / "registry" / f"{_name(family)}.json"


def candidate_record(params: Params, family: ModelFamily, challenger: Candidate) -> dict[str, Any]:
    from components.tracking import tree_hash

    return {
        "registered_model": family.registered_model(params),
        "gate_metric": family.gate_metric,
        "checkpoint_sha256_16": tree_hash(best_checkpoint(params, family)),
        "val_iou": None if math.isnan(challenger.val_iou) else challenger.val_iou,
        "quant_iou_drop": challenger.quant_iou_drop if challenger.quant_iou_drop != float("inf") else "unjudged",
    }


def decision_path(params: Params, family: ModelFamily | str) -> Path:
    """``<artifacts>/reports/registry/<family>_decision.json``: the last gate decision, for people and the benchmark label."""
    return params.reports_dir / "registry" / f"{_name(family)}_decision.json"


def _name(family: ModelFamily | str) -> str:
    return family if isinstance(family, str) else family.name

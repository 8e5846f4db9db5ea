"""Turn a model reference (registry URI, run URI or local path) into a local file for one runtime.

The fan-out flow benchmarks *a registered model version* so that every platform measures
the same bytes and the comparison names that version; tests and the CLI pass a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from components.config import Params

MODEL_SUFFIXES: dict[str, tuple[str, ...]] = {
    "onnxruntime": (".onnx",),
    "tensorrt": (".onnx", ".plan", ".engine"),
    "pytorch": (".ckpt", ".pt", ".pth"),
}
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


class ModelRefError(ValueError):
    """A model reference that cannot be resolved; the message says what was expected or found."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    uri: str
    """The reference as given (``models:/...``, ``runs:/...`` or a path)."""
    version: str | None
    """The registry version (an alias resolved to its number), else what the caller passed."""
    name: str | None = None


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name/3`` -> (name, "3", None); ``models:/name@champion`` -> (name, None, "champion")."""
    match = _MODELS_URI.match(uri)
    if not match:
        raise ModelRefError(f"{uri!r} is not 'models:/<name>/<version>' or 'models:/<name>@<alias>'")
    return match.group("name"), match.group("version"), match.group("alias")


def pick_model_file(root: Path, runtime: str) -> Path:
    """The one file under ``root`` that ``runtime`` can load (``model.*`` wins a tie)."""
    suffixes = MODEL_SUFFIXES.get(runtime)
    if suffixes is None:
        raise ModelRefError(f"unknown runtime {runtime!r}; choose from {list(MODEL_SUFFIXES)}")
    if root.is_file():
        if root.suffix in suffixes:
            return root
        raise ModelRefError(f"{root}: a {runtime} benchmark needs one of {list(suffixes)}, got {root.suffix!r}")
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes)
    if len(candidates) > 1:
        preferred = [p for p in candidates if p.stem == "model"]
        candidates = preferred if len(preferred) == 1 else candidates
    if len(candidates) != 1:
        found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())[:20]
        what = "no" if not candidates else f"{len(candidates)}"
        raise ModelRefError(f"{root}: {what} {list(suffixes)} file(s) for {runtime}; files there: {found}")
    return candidates[0]


def resolve_model(
    params: Params, ref: str, runtime: str, download_dir: Path, model_version: str | None = None
) -> ResolvedModel:
    """Local path -> itself; ``models:/`` / ``runs:/`` -> downloaded from MLflow into ``download_dir``."""
    if not ref:
        raise ModelRefError("no model given: pass a models:/<name>/<version> URI or a path")
    if not (ref.startswith("models:/") or ref.startswith("runs:/")):
        path = Path(ref)
        if not path.exists():
            raise ModelRefError(f"{path}: model not found")
        return ResolvedModel(pick_model_file(path, runtime), ref, model_version)

    import mlflow

    from components.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(params))
    name = None
    version = model_version
    artifact_uri = ref
    if ref.startswith("models:/"):
        name, version, alias = parse_models_uri(ref)
        if alias is not None:
            try:
                version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
            except mlflow.exceptions.MlflowException as error:
                raise ModelRefError(f"{ref}: alias not found in the registry ({error.message})") from None
        artifact_uri = f"models:/{name}/{version}"
    download_dir.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(download_dir / "model"))
    except mlflow.exceptions.MlflowException as error:
        raise ModelRefError(f"{ref}: cannot download from MLflow ({error.message})") from None
    version_text = str(version) if version else None
    try:
        return ResolvedModel(pick_model_file(Path(local), runtime), ref, version_text, name)
    except ModelRefError as not_in_model:
        if name is None:
            raise
        # The registered model is the PyTorch one; the ONNX export lives in the same run.
        run_id = mlflow.MlflowClient().get_model_version(name, str(version)).run_id
        found = _download_run_files(run_id, MODEL_SUFFIXES[runtime], download_dir / "run") if run_id else None
        if found is None:
            raise ModelRefError(
                f"{not_in_model}; nor in the artifacts of its run {run_id or '(none)'}: log the exported model "
                "there (mlflow.log_artifact(path, artifact_path='onnx')) or pass a local path"
            ) from None
        return ResolvedModel(pick_model_file(found, runtime), ref, version_text, name)


def _download_run_files(run_id: str, suffixes: tuple[str, ...], dst: Path) -> Path | None:
    """Download only the run's artifacts with ``suffixes`` (not its checkpoints); None when there are none."""
    import mlflow

    client = mlflow.MlflowClient()
    pending, wanted = [""], []
    while pending:
        for item in client.list_artifacts(run_id, pending.pop() or None):
            if item.is_dir:
                pending.append(item.path)
            elif Path(item.path).suffix in suffixes:
                wanted.append(item.path)
    if not wanted:
        return None
    for artifact in wanted:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(dst))
    return dst

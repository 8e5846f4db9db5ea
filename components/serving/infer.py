"""``inspectops infer <family> --model ...``: judge parts with a registered (or exported) bundle.

``--model`` takes what MLflow users pass around: ``models:/<name>@champion`` (any alias),
``models:/<name>/<version>``, ``runs:/<run>/deployable``, or a local folder (a bundle, or a
pyfunc model folder holding one). The bundle runs on onnxruntime at its shipped threshold
(:mod:`components.serving.runtime`); the outputs are the ones ``inspectops infer`` writes with
a checkpoint: masks, overlays and ``verdicts.csv`` for segmentation, one line per part for
classification, ``cam_results.csv`` for the CAM classifier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.fsutil import atomic_dir
from components.imageio import read_image, write_png
from components.inference.pairs import pair_inputs
from components.serving.runtime import MANIFEST, BundleError, DeployBundle, Prediction

__all__ = ["load_bundle", "resolve_bundle", "run_cam", "run_classify", "run_segment"]

BUNDLE_ARTIFACT = Path("artifacts") / "bundle"
"""Where a pyfunc model folder holds its bundle (the ``bundle`` artifact of :mod:`.pyfunc_model`)."""


def resolve_bundle(model: str, tracking_uri: str | None = None) -> Path:
    """The local bundle folder of ``model`` (downloaded from MLflow for a ``models:/`` or ``runs:/`` URI,
    from ``tracking_uri`` when given, else MLflow's own default)."""
    local = Path(model.removeprefix("file://"))
    if local.exists() or ":/" not in model:  # a folder here, not models:/, runs:/ or a remote URI
        for folder in (local, local / BUNDLE_ARTIFACT):
            if (folder / MANIFEST).is_file():
                return folder
        raise BundleError(f"{local}: neither a bundle nor a model folder holding one (no {MANIFEST})")
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
    except mlflow.exceptions.MlflowException as error:
        raise BundleError(f"{model}: cannot fetch it from the tracking server ({error.message})") from None
    if not (downloaded / BUNDLE_ARTIFACT / MANIFEST).is_file():
        raise BundleError(
            f"{model}: this version has no deployable bundle (registered before bundles, or a family that serves none); "
            "run `inspectops infer` with --checkpoint instead"
        )
    return downloaded / BUNDLE_ARTIFACT


def load_bundle(model: str, family: str, tracking_uri: str | None = None, precision: str = "auto") -> DeployBundle:
    """:func:`resolve_bundle`, loaded, refusing a bundle of another family."""
    bundle = DeployBundle(resolve_bundle(model, tracking_uri), precision=precision)
    if bundle.family != family:
        raise BundleError(f"{model}: a {bundle.family} model, not {family}")
    return bundle


def run_segment(bundle: DeployBundle, golden: Path, test: Path, out: Path) -> list[tuple[str, Prediction]]:
    """Masks, overlays and ``verdicts.csv`` (name, image_score, verdict) for every pair, into ``out``."""
    from components.evaluation.visualize import overlay

    results: list[tuple[str, Prediction]] = []
    with atomic_dir(out) as staging:
        rows = ["name,image_score,verdict"]
        for name, golden_path, test_path in pair_inputs(Path(golden), Path(test)):
            golden_img, test_img = read_image(golden_path), read_image(test_path)
            (prediction,) = bundle.predict([{"test": test_img, "golden": golden_img}])
            assert prediction.mask is not None
            height, width = test_img.shape[:2]
            if golden_img.shape[:2] != (height, width):
                from PIL import Image

                golden_img = np.asarray(Image.fromarray(golden_img).resize((width, height), Image.Resampling.BICUBIC))
            write_png(staging / f"{name}_mask.png", prediction.mask.astype(np.uint8) * 255)
            write_png(
                staging / f"{name}_overlay.png",
                overlay(golden_img, test_img, prediction.mask, np.zeros_like(prediction.mask)),
            )
            rows.append(f"{name},{prediction.score:.6f},{prediction.verdict}")
            results.append((name, prediction))
        (staging / "verdicts.csv").write_text("\n".join(rows) + "\n")
    return results


def run_classify(bundle: DeployBundle, golden: Path, test: Path) -> Prediction:
    """One part: its image per light (``<name>_<Light>.png`` in a folder, or one file for one light)."""
    from components.inference.classify_infer import find_capture

    lights = bundle.manifest.get("lighting_conditions") or []
    tests, goldens = find_capture(Path(test), lights), find_capture(Path(golden), lights)
    if len(lights) <= 1:
        row = {"test": read_image(tests[0]), "golden": read_image(goldens[0])}
    else:
        row = {f"test_{light}": read_image(path) for light, path in zip(lights, tests, strict=True)}
        row |= {f"golden_{light}": read_image(path) for light, path in zip(lights, goldens, strict=True)}
    return bundle.predict([row])[0]


def run_cam(bundle: DeployBundle, images: Path, out: Path | None) -> list[tuple[str, Prediction]]:
    """Score, call and box every image; ``cam_results.csv`` into ``out`` when given."""
    from components.inference.cam_infer import find_images, write_cam_results

    results = [(path.stem, bundle.predict([{"image": read_image(path)}])[0]) for path in find_images(Path(images))]
    if out is not None:
        write_cam_results(out, [(name, p.score, p.threshold, p.verdict, p.boxes) for name, p in results])
    return results

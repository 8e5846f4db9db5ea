"""Run a deployable bundle with onnxruntime alone: images in, masks, scores and verdicts out.

A bundle is a folder (the registered model's ``artifacts/bundle``, or one written by
:func:`components.serving.bundle.write_bundle`):

- ``manifest.json``: the family, the models by precision, the FP32 sidecar (I/O names, input
  size, the score rule, the shipped threshold and how it was chosen), the lights for
  ChangeNet-Classification;
- ``model_fp32.onnx`` and, where the quantization gate passed one, ``model_int8.onnx``;
- ``card.md``: the model card.

The precision is chosen where the bundle runs: INT8 on a CPU (the copy the gate judged), FP32
where onnxruntime has a GPU provider (TensorRT's provider first where it is installed: it builds
its own engine from the FP32 graph). ``INSPECTOPS_PRECISION=fp32|int8`` overrides the choice.

Inputs are resized to the model's input size with bicubic resampling, as ``inspectops infer``
does; a pair already at that size (the prepared val pairs) goes in untouched. The verdict is the
one evaluation reports: segmentation scores its change map by the sidecar's ``image_score``
rule and calls a defect above ``image_threshold``; classification and the CAM classifier call a
defect when the defect probability is above ``threshold``.

Only numpy, Pillow and onnxruntime are needed here (and two torch-free helpers of this
project, shipped with the bundle), so a line PC needs no torch.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from components.models.cam.heatmap import heatmap_to_boxes
from components.models.changenet.image_score import image_scores
from components.serving.onnx_session import create_session

__all__ = [
    "MANIFEST",
    "SERVED_FAMILIES",
    "BundleError",
    "DeployBundle",
    "Prediction",
    "decode_image",
    "encode_png",
    "input_columns",
    "prediction_frame",
    "prediction_rows",
    "unserved_reason",
]

MANIFEST = "manifest.json"
SERVED_FAMILIES = ("segment", "classify", "cam")
"""Families whose bundle judges parts (MAL labels boxes offline: ``inspectops label mal``)."""
PRECISION_ENV = "INSPECTOPS_PRECISION"
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class BundleError(ValueError):
    """A bundle or an input it cannot use; the message names the file, column or row."""


@dataclass
class Prediction:
    """One part's answer: its score, the shipped threshold and the call; a mask or boxes where the family gives them."""

    score: float
    threshold: float | None
    mask: np.ndarray | None = None
    """Segmentation: ``(H, W)`` bools at the test image's own size (change probability >= the pixel threshold)."""
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    """CAM: defect boxes ``(x1, y1, x2, y2)`` in the image's pixels, when the part is called a defect."""

    @property
    def defect(self) -> bool:
        return self.threshold is not None and self.score > self.threshold

    @property
    def verdict(self) -> str:
        """``DEFECT`` or ``PASS`` at the shipped threshold (empty when the model shipped none)."""
        if self.threshold is None:
            return ""
        return "DEFECT" if self.defect else "PASS"


def decode_image(value: Any, where: str = "image") -> np.ndarray:
    """An ``H x W x 3`` uint8 RGB array from a base64 string, raw bytes or an array."""
    if isinstance(value, np.ndarray):
        array = value
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] != 3:
            raise BundleError(f"{where}: an image array must be HxWx3 (or HxW), got shape {array.shape}")
        return array.astype(np.uint8) if array.dtype != np.uint8 else array
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            raise BundleError(f"{where}: not base64-encoded image bytes") from None
    if not isinstance(value, bytes | bytearray):
        raise BundleError(f"{where}: expected base64 text, image bytes or an HxWx3 array, got {type(value).__name__}")
    try:
        with Image.open(io.BytesIO(value)) as image:
            return np.asarray(image.convert("RGB")).copy()
    except OSError as error:
        raise BundleError(f"{where}: cannot decode the image ({error})") from None


def encode_png(array: np.ndarray) -> str:
    """Base64 text of a PNG of ``array`` (bools become 0/255)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(3, height, width)`` float32 in [0, 1]; bicubic when the size differs (as ``inspectops infer``)."""
    if image.shape[:2] != (height, width):
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def _softmax_defect(logits: np.ndarray) -> np.ndarray:
    """Probability of class 1 of ``(N, 2, ...)`` logits, computed stably."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp[:, 1] / exp.sum(axis=1)


def input_columns(manifest: Mapping[str, Any]) -> list[str]:
    """The input columns a bundle takes, one image each: ``test``/``golden`` for a pair, per light
    ``test_<Light>``/``golden_<Light>`` for a multi-light classifier, ``image`` for the CAM classifier."""
    family = manifest["family"]
    if family == "cam":
        return ["image"]
    lights = manifest.get("lighting_conditions") or []
    if family == "classify" and len(lights) > 1:
        return [f"test_{light}" for light in lights] + [f"golden_{light}" for light in lights]
    return ["test", "golden"]


def unserved_reason(family: str, sidecar: Mapping[str, Any]) -> str | None:
    """Why an exported model cannot be served as a bundle (``None`` when it can)."""
    if family not in SERVED_FAMILIES:
        return f"family {family!r} is not served (served: {', '.join(SERVED_FAMILIES)})"
    if family == "segment" and sidecar.get("tiling"):
        return "a tiled segmentation model (data.tiling) is not served yet; use inspectops infer with its checkpoint"
    return None


def _providers() -> tuple[str, ...]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return tuple(p for p in (*_GPU_PROVIDERS, "CPUExecutionProvider") if p in available)


class DeployBundle:
    """A bundle folder loaded for prediction (see the module docstring).

    Args:
        folder: the bundle folder (holding ``manifest.json``).
        precision: ``auto`` (INT8 on CPU when the bundle has it, FP32 on a GPU), ``fp32`` or ``int8``.
        threads: onnxruntime intra-op threads (``None``: one per core).
    """

    def __init__(self, folder: Path | str, precision: str = "auto", threads: int | None = None) -> None:
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise BundleError(f"{path}: not a deployable bundle (no {MANIFEST})")
        self.manifest: dict[str, Any] = json.loads(path.read_text())
        self.family: str = self.manifest["family"]
        self.sidecar: dict[str, Any] = self.manifest["sidecar"]
        reason = unserved_reason(self.family, self.sidecar)
        if reason:
            raise BundleError(f"{path}: {reason}")
        providers = _providers()
        self.precision = self._choose(precision, providers)
        model = self.folder / self.manifest["models"][self.precision]
        on_gpu = self.precision == "fp32" and providers[0] in _GPU_PROVIDERS
        self.session = create_session(model, threads, providers=providers if on_gpu else ("CPUExecutionProvider",))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.columns = input_columns(self.manifest)

    def _choose(self, requested: str, providers: Sequence[str]) -> str:
        models = {k: v for k, v in self.manifest["models"].items() if v}
        wanted = os.environ.get(PRECISION_ENV) or requested
        if wanted == "auto":
            wanted = "int8" if "int8" in models and providers[0] not in _GPU_PROVIDERS else "fp32"
        if wanted not in models:
            raise BundleError(
                f"{self.folder / MANIFEST}: no {wanted!r} model in this bundle (it has {', '.join(sorted(models))})"
            )
        return wanted

    @property
    def threshold(self) -> float | None:
        """The shipped operating threshold: the image verdict's (segmentation) or the part's."""
        key = "image_threshold" if self.family == "segment" else "threshold"
        value = self.sidecar.get(key)
        return None if value is None else float(value)

    def _input_size(self) -> tuple[int, int]:
        height, width = self.sidecar["image_size"]
        return int(height), int(width)

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """One :class:`Prediction` per row; a row maps :attr:`columns` to images (see :func:`decode_image`)."""
        if not rows:
            return []
        images: list[dict[str, np.ndarray]] = []
        for index, row in enumerate(rows):
            missing = [c for c in self.columns if c not in row]
            if missing:
                raise BundleError(f"row {index}: missing column(s) {missing}; this model takes {self.columns}")
            images.append({c: decode_image(row[c], f"row {index}, column {c!r}") for c in self.columns})
        if self.family == "segment":
            return self._segment(images)
        if self.family == "classify":
            return self._classify(images)
        return self._cam(images)

    def _run(self, *inputs: np.ndarray) -> dict[str, np.ndarray]:
        feeds = dict(zip(self.input_names, inputs, strict=True))
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))

    def _segment(self, rows: list[dict[str, np.ndarray]]) -> list[Prediction]:
        height, width = self._input_size()
        test = np.stack([_resized(r["test"], height, width) for r in rows])
        golden = np.stack([_resized(r["golden"], height, width) for r in rows])
        logits = self._run(test, golden)[self.sidecar.get("output_names", ["output_final"])[-1]]
        prob = _softmax_defect(logits.astype(np.float32))
        pixel = float(self.sidecar.get("threshold", 0.5))
        rule = self.sidecar.get("image_score", "smooth_max")
        scores = image_scores(
            prob, pixel, int(self.sidecar.get("score_window", 9)), float(self.sidecar.get("topk_fraction", 0.01))
        )[rule]
        out = []
        for r, p, score in zip(rows, prob, scores, strict=True):
            h, w = r["test"].shape[:2]
            full = p if p.shape == (h, w) else np.asarray(Image.fromarray(p).resize((w, h), Image.Resampling.BILINEAR))
            out.append(Prediction(float(score), self.threshold, mask=full >= pixel))
        return out

    def _classify(self, rows: list[dict[str, np.ndarray]]) -> list[Prediction]:
        lights = self.manifest.get("lighting_conditions") or [None]
        total, width = self._input_size()
        height = total // len(lights)

        def capture(row: dict[str, np.ndarray], kind: str) -> np.ndarray:
            names = [kind] if len(lights) == 1 else [f"{kind}_{light}" for light in lights]
            return np.concatenate([_resized(row[n], height, width) for n in names], axis=1)  # lights top to bottom

        test = np.stack([capture(r, "test") for r in rows])
        golden = np.stack([capture(r, "golden") for r in rows])
        output = self._run(test, golden)[self.output_names[-1]].astype(np.float32)
        scores = _softmax_defect(output) if output.shape[1] == 2 else output[:, 0]
        return [Prediction(float(s), self.threshold) for s in scores]

    def _cam(self, rows: list[dict[str, np.ndarray]]) -> list[Prediction]:
        height, width = self._input_size()
        batch = np.stack([_resized(r["image"], height, width) for r in rows])
        outputs = self._run(batch)
        scores = _softmax_defect(outputs["logits"].astype(np.float32))
        out = []
        for r, heat, score in zip(rows, outputs["heatmap"], scores, strict=True):
            prediction = Prediction(float(score), self.threshold)
            if prediction.defect:
                h, w = r["image"].shape[:2]
                boxes = heatmap_to_boxes(
                    heat,
                    float(self.sidecar.get("box_threshold", 0.5)),
                    self.sidecar.get("box_mode", "largest"),
                    int(self.sidecar.get("min_box_area", 1)),
                )
                sx, sy = w / heat.shape[-1], h / heat.shape[-2]
                prediction.boxes = [
                    (round(a * sx), round(b * sy), round(c * sx), round(d * sy)) for a, b, c, d in boxes
                ]
            out.append(prediction)
        return out


def prediction_rows(bundle: DeployBundle, predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    """The output rows of :mod:`components.serving.pyfunc_model` (see its docstring)."""
    rows = []
    for p in predictions:
        row: dict[str, Any] = {"score": p.score, "threshold": p.threshold, "verdict": p.verdict}
        if bundle.family == "segment" and p.mask is not None:
            row["mask"] = encode_png(p.mask)
            row["changed_fraction"] = float(p.mask.mean())
        if bundle.family == "cam":
            row["boxes"] = ";".join(" ".join(str(v) for v in box) for box in p.boxes)
        rows.append(row)
    return rows


def prediction_frame(bundle: DeployBundle, frame: Any) -> Any:
    """Predict a pandas DataFrame of parts (one image column each) into a DataFrame of answers."""
    import pandas as pd

    if isinstance(frame, dict):
        frame = pd.DataFrame(frame)
    if not isinstance(frame, pd.DataFrame):
        raise BundleError(f"expected a DataFrame with columns {bundle.columns}, got {type(frame).__name__}")
    return pd.DataFrame(prediction_rows(bundle, bundle.predict(frame.to_dict("records"))))

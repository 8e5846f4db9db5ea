"""Is this part good? ChangeNet-Classification on one part given as files or folders.

``--test`` is one image (a one-light model) or a folder with one image per lighting condition,
found by name: the file whose stem is the light or ends with ``_<Light>`` (TAO's
``<object_name>_<Light>.png``). ``--golden`` is the same, or a folder of such folders, one per
golden when the part has several (the model combines any number of goldens). Images are resized
to the model's input size; lights are stacked in the trained order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from components.data.layout import IMAGE_SUFFIXES
from components.models.changenet_classify.data import ClassifyDataError, load_capture
from components.models.changenet_classify.model import stack_lights

__all__ = ["ClassifyResult", "InferInputError", "find_capture", "infer_classify"]


class InferInputError(ValueError):
    """Inputs that do not describe one part under the trained lights; the message names what is missing."""


@dataclass(frozen=True)
class ClassifyResult:
    score: float
    threshold: float
    defect: bool
    goldens: int

    @property
    def verdict(self) -> str:
        return "DEFECT" if self.defect else "PASS"


def find_capture(path: Path, lights: Sequence[str]) -> list[Path]:
    """One image path per light, in ``lights`` order, from a file (one light) or a folder."""
    path = Path(path)
    if path.is_file():
        if len(lights) != 1:
            raise InferInputError(
                f"{path}: one image given, but the model reads {len(lights)} lights {list(lights)}; "
                "pass a folder with one image per light"
            )
        return [path]
    if not path.is_dir():
        raise InferInputError(f"{path}: no such file or folder")
    images = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    found: list[Path] = []
    for light in lights:
        matches = [p for p in images if p.stem == light or p.stem.endswith(f"_{light}")]
        if len(matches) != 1:
            what = "no image" if not matches else f"{len(matches)} images ({[m.name for m in matches]})"
            raise InferInputError(f"{path}: {what} for light {light!r}; expected one named <name>_{light}.<ext>")
        found.append(matches[0])
    return found


def _golden_captures(path: Path, lights: Sequence[str]) -> list[list[Path]]:
    """One capture, or one per sub-folder when ``path`` is a folder of golden folders."""
    path = Path(path)
    subfolders = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    if subfolders:
        return [find_capture(folder, lights) for folder in subfolders]
    return [find_capture(path, lights)]


@torch.inference_mode()
def infer_classify(
    model: torch.nn.Module, golden: Path, test: Path, lights: Sequence[str], input_size: int, threshold: float
) -> ClassifyResult:
    """Score one part against its golden(s) with a trained ``ChangeNetClassify`` (or its ONNX runner)."""
    from components.models.changenet_classify.evaluate import scores_of

    test_paths = find_capture(test, lights)
    golden_paths = _golden_captures(golden, lights)
    try:
        test_tensor = stack_lights(load_capture(test_paths, input_size))[None]
        goldens = torch.stack([stack_lights(load_capture(paths, input_size)) for paths in golden_paths])[None]
    except ClassifyDataError as error:
        raise InferInputError(str(error)) from None
    if isinstance(model, torch.nn.Module):
        model.eval()
    score = float(scores_of(model(test_tensor, goldens))[0])
    return ClassifyResult(score=score, threshold=threshold, defect=score > threshold, goldens=len(golden_paths))

"""Export a model to one self-contained ONNX file, checked against PyTorch.

:func:`export_onnx` serves every model family. For ChangeNet-Segmentation
(:func:`export_segment_onnx`) the graph takes raw ``[0, 1]`` float images (``input0`` = test,
``input1`` = golden, both ``N x 3 x H x W``) and normalises them itself, so a serving stack (onnxruntime, TensorRT,
DeepStream) feeds camera pixels without knowing the training mean/std. It returns
``output_final`` (``N x C x H x W`` logits) and, with ``export.side_outputs``, TAO's four
deep-supervision maps ``output0..3`` too.

**Why the legacy exporter.** Since torch 2.9 ``torch.onnx.export`` defaults to the dynamo
exporter, which writes weights to an ``.onnx.data`` side file and picks its own opset. A
deployable model must be one file at a known opset (TensorRT 10 on JetPack and trtexec
take a single path), so the TorchScript-based exporter (``dynamo=False``) is used and the
result is checked to carry every weight inline.

**Why a parity check.** An export can be valid ONNX and still compute something else (an
op exported with different semantics, a shape frozen at trace time). Real val pairs are run
through PyTorch and onnxruntime and the export fails, leaving no file behind, when the
logits or the predicted masks differ beyond ``export.parity_*``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from components.config import ExportParams
from components.export.runtime import FINAL_OUTPUT, OnnxModel
from components.export.static_padding import freeze_same_padding
from components.fsutil import write_json
from components.models.changenet.model import ONNX_INPUT_NAMES, ONNX_OUTPUT_NAMES

PARITY_BATCH = 4
"""Pairs per parity forward pass: small enough for any machine, and not 1 so the dynamic batch is exercised."""


class ExportError(RuntimeError):
    """An export that failed or did not match PyTorch; the message names the file."""


class SegmentExportWrapper(nn.Module):
    """The exported graph: ``(input0, input1) -> output_final`` (side outputs first when asked)."""

    def __init__(self, model: nn.Module, side_outputs: bool = False) -> None:
        super().__init__()
        self.model = model
        self.side_outputs = side_outputs

    def forward(self, input0: torch.Tensor, input1: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = self.model(input0, input1)
        if not isinstance(outputs, list | tuple):
            return outputs
        return tuple(outputs) if self.side_outputs else outputs[-1]


def output_names(side_outputs: bool) -> tuple[str, ...]:
    return ONNX_OUTPUT_NAMES if side_outputs else (FINAL_OUTPUT,)


def sidecar_path(model_path: Path | str) -> Path:
    """``<model>.json`` beside a model file (``segment_fp32.onnx`` -> ``segment_fp32.json``)."""
    return Path(model_path).with_suffix(".json")


def parity_pairs_from_dataset(dataset: Any, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` pairs of a dataset of ``{"test", "golden"}`` items, stacked ``(N, 3, H, W)``.

    The first ones, not a random draw: the same pairs every export, so parity numbers of two
    exports are comparable.
    """
    count = min(int(count), len(dataset))
    if count < 1:
        raise ExportError("parity check needs at least one pair; the dataset is empty")
    items = [dataset[i] for i in range(count)]
    return torch.stack([it["test"] for it in items]), torch.stack([it["golden"] for it in items])


def assert_self_contained(path: Path) -> None:
    """Fail unless ``path`` is valid ONNX with every tensor stored inside the file."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as error:  # onnx raises ValidationError, DecodeError, OSError...
        raise ExportError(f"{path}: not a valid ONNX model ({type(error).__name__}: {error})") from None
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(
            f"{path}: {len(external)} tensor(s) stored in external data (e.g. {external[0]}); expected one self-contained file"
        )


def _prune_unused_initializers(path: Path) -> None:
    """Drop weights no node reads (constant folding leaves the SAME-padding constants behind).

    onnxruntime would drop them itself, with a warning per tensor at every session start.
    """
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    if len(kept) == len(graph.initializer):
        return
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(proto, str(path))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    for side in path.parent.glob(f"{path.name}.data*"):
        side.unlink(missing_ok=True)


def _discard(tmp: Path, out_path: Path) -> None:
    """Remove the temp file and any earlier model + sidecar at ``out_path`` (see export_segment_onnx)."""
    _remove(tmp)
    _remove(out_path)
    sidecar_path(out_path).unlink(missing_ok=True)


def _decisions(logits: np.ndarray) -> np.ndarray:
    """What a caller does with the logits: the argmax class, or ``logit > 0`` for one channel."""
    return logits.argmax(axis=1) if logits.shape[1] > 1 else logits[:, 0] > 0


@torch.inference_mode()
def measure_parity(model: nn.Module, onnx_model: OnnxModel, *inputs: torch.Tensor) -> tuple[float, float]:
    """``(max |logit difference|, share of pixels with the same decision)`` over the primary output."""
    max_abs = 0.0
    equal = 0
    total = 0
    for start in range(0, len(inputs[0]), PARITY_BATCH):
        batch = tuple(x[start : start + PARITY_BATCH] for x in inputs)
        want = model(*batch)
        want = (want[-1] if isinstance(want, list | tuple) else want).float().numpy()
        got = onnx_model(*batch)
        got = (got[-1] if isinstance(got, tuple) else got).numpy()
        if got.shape != want.shape:
            raise ExportError(f"{onnx_model.path}: output shape {got.shape} differs from PyTorch {want.shape}")
        max_abs = max(max_abs, float(np.abs(got - want).max()))
        same = _decisions(got) == _decisions(want)
        equal += int(same.sum())
        total += int(same.size)
    return max_abs, equal / total


def export_onnx(
    module: nn.Module,
    out_path: Path | str,
    params: ExportParams,
    parity_inputs: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    sidecar_extra: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Export ``module`` to ``out_path`` and check it against PyTorch on real inputs.

    Args:
        module: takes the inputs (raw [0, 1] pixels, normalised inside), returns the logits,
            or a tuple of outputs ending in the primary one (``output_names`` in that order).
        params: the ``export`` section (opset, dynamic batch, parity thresholds).
        parity_inputs: one stack per input, ``(N, C, H, W)`` (or ``(N, G, C, H, W)``), of real
            samples; the graph is traced at their size and only the batch axis is dynamic.
        input_names, output_names: the graph's I/O names.
        sidecar_extra: more fields for ``<model>.json`` (e.g. the source checkpoint).

    Returns:
        ``export/parity_max_abs_logit``, ``export/parity_equal_pixels``, ``export/size_mb``
        (10^6 bytes) and ``export/opset``. The same go into ``<model>.json`` with the I/O names.

    Raises:
        ExportError: the export failed, is not self-contained, or missed a parity threshold.
        On any failure no model file is left at ``out_path`` (a stale one is removed too, so
        later stages cannot pick up a model from an older checkpoint).
    """
    out_path = Path(out_path)
    inputs = tuple(parity_inputs)
    if len(inputs) != len(input_names) or any(x.ndim < 4 or len(x) != len(inputs[0]) for x in inputs):
        raise ExportError(
            f"{out_path}: parity inputs must be {len(input_names)} stacks (N, ..., C, H, W) of one N, "
            f"got {[tuple(x.shape) for x in inputs]}"
        )
    example = tuple(torch.rand(2, *x.shape[1:]) for x in inputs)
    reference = module.eval()
    # The graph is traced from a copy with constant SAME padding; parity compares against the original.
    frozen, frozen_layers = freeze_same_padding(reference, example)
    dynamic_axes = {name: {0: "batch"} for name in (*input_names, *output_names)} if params.dynamic_batch else None

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.stem}.tmp-", suffix=".onnx", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
            torch.onnx.export(
                frozen.eval(),
                example,
                str(tmp),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=params.opset,
                do_constant_folding=True,
                dynamo=False,
            )
        _prune_unused_initializers(tmp)
        assert_self_contained(tmp)
        runner = OnnxModel(
            tmp, all_outputs=len(output_names) > 1, input_names=tuple(input_names), primary_output=output_names[-1]
        )
        max_abs, equal_pixels = measure_parity(reference, runner, *inputs)
        if max_abs > params.parity_max_abs_logit or equal_pixels < params.parity_min_equal_pixels:
            raise ExportError(
                f"{out_path}: onnxruntime does not match PyTorch on {len(inputs[0])} val samples: "
                f"max |logit diff| {max_abs:.3g} (allowed {params.parity_max_abs_logit:g}), "
                f"equal mask pixels {equal_pixels:.5f} (need {params.parity_min_equal_pixels:g})"
            )
        tmp.chmod(0o666 & ~_umask())  # mkstemp made it 0600; publish with a plain file's mode
        os.replace(tmp, out_path)
    except ExportError:
        _discard(tmp, out_path)
        raise
    except Exception as error:
        _discard(tmp, out_path)
        raise ExportError(f"{out_path}: ONNX export failed ({type(error).__name__}: {error})") from error
    except BaseException:  # interrupted: drop the partial file, keep whatever was there before
        _remove(tmp)
        raise
    metrics = {
        "export/parity_max_abs_logit": max_abs,
        "export/parity_equal_pixels": equal_pixels,
        "export/size_mb": out_path.stat().st_size / 1e6,
        "export/opset": float(params.opset),
    }
    write_json(
        sidecar_path(out_path),
        {
            **metrics,
            "model": out_path.name,
            "format": "onnx",
            "precision": "fp32",
            "input_names": list(input_names),
            "output_names": list(output_names),
            "image_size": [int(inputs[0].shape[-2]), int(inputs[0].shape[-1])],
            "input_range": [0.0, 1.0],
            "dynamic_batch": params.dynamic_batch,
            "parity_pairs": len(inputs[0]),
            "static_padding_layers": frozen_layers,
            **(sidecar_extra or {}),
        },
    )
    return metrics


def export_segment_onnx(
    model: nn.Module,
    out_path: Path | str,
    params: ExportParams,
    image_size: int | tuple[int, int],
    parity_pairs: tuple[torch.Tensor, torch.Tensor] | Sequence[torch.Tensor],
    sidecar_extra: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Export a ``ChangeNetSegment`` (``(test, golden)`` in [0, 1]) with :func:`export_onnx`.

    ``image_size`` is the H (= W) or (H, W) the graph is traced at; ``parity_pairs`` the
    ``(test, golden)`` stacks of real pairs, ``(N, 3, H, W)``.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    test, golden = parity_pairs
    if test.shape != golden.shape or test.ndim != 4 or tuple(test.shape[1:]) != (3, height, width):
        raise ExportError(
            f"{out_path}: parity pairs must be two (N, 3, {height}, {width}) stacks, got {tuple(test.shape)} and {tuple(golden.shape)}"
        )
    return export_onnx(
        SegmentExportWrapper(model, params.side_outputs),
        out_path,
        params,
        (test, golden),
        ONNX_INPUT_NAMES,
        output_names(params.side_outputs),
        sidecar_extra,
    )


def read_sidecar(model_path: Path | str) -> dict[str, Any]:
    """The ``<model>.json`` written beside an exported or quantized model."""
    path = sidecar_path(model_path)
    if not path.is_file():
        raise ExportError(f"{path}: sidecar not found (export or quantize {Path(model_path).name} first)")
    return json.loads(path.read_text())


__all__ = [
    "ExportError",
    "SegmentExportWrapper",
    "assert_self_contained",
    "export_onnx",
    "export_segment_onnx",
    "measure_parity",
    "output_names",
    "parity_pairs_from_dataset",
    "read_sidecar",
    "sidecar_path",
]

"""Load a model for one runtime and hand the harness a ``run_batch(n)`` that runs n image pairs.

Inputs are random float32 images in [0, 1] (the model normalises inside), made once per
batch size before timing so that only inference is measured. Each runtime is timed the
way it is deployed:

* ``pytorch``: a Lightning checkpoint (``.ckpt``) or a torch-saved module (``.pt``/``.pth``,
  e.g. a torchao-quantized model), eager, ``inference_mode``, on CPU.
* ``onnxruntime``: the exported ONNX on the CPU execution provider, input names and
  (static) image size read from the model.
* ``tensorrt``: a serialized engine run on the GPU through the TensorRT Python API with
  torch CUDA tensors as buffers; inputs stay on the device (no transfers, like trtexec's
  ``--noDataTransfers``). Without TensorRT or a GPU this raises
  :class:`RuntimeUnavailable`: no number is ever made up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES: tuple[str, ...] = ("pytorch", "onnxruntime", "tensorrt")
INPUT_NAMES: tuple[str, str] = ("input0", "input1")


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run on this machine (library or device missing); the message says what to install."""


class ModelLoadError(ValueError):
    """A model file that the chosen runtime cannot use; the message names the file and the reason."""


@dataclass
class LoadedModel:
    """A model ready to be timed: ``run_batch(n)`` returns when n pairs have been processed."""

    runtime: str
    path: Path
    image_size: int
    run_batch: Callable[[int], None]
    details: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


def random_pair(batch: int, image_size: int, seed: int = 0, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible (test, golden) pair of N×3×S×S images in [0, 1]."""
    rng = np.random.default_rng(seed)
    shape = (batch, 3, image_size, image_size)
    return rng.random(shape, dtype=np.float32).astype(dtype), rng.random(shape, dtype=np.float32).astype(dtype)


def load_runtime(
    runtime: str, model_path: Path | str, image_size: int, threads: int | None = None, seed: int = 0
) -> LoadedModel:
    """Load ``model_path`` for ``runtime``; ``image_size`` is used where the model does not fix it."""
    path = Path(model_path)
    if runtime not in RUNTIMES:
        raise ModelLoadError(f"unknown runtime {runtime!r}; choose from {list(RUNTIMES)}")
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found")
    loader = {"pytorch": _load_pytorch, "onnxruntime": _load_onnxruntime, "tensorrt": _load_tensorrt}[runtime]
    return loader(path, image_size, threads, seed)


class _InputCache:
    """Inputs per batch size, built on first use (outside the timed call)."""

    def __init__(self, make: Callable[[int], Any]) -> None:
        self._make = make
        self._cache: dict[int, Any] = {}

    def __call__(self, batch: int) -> Any:
        if batch not in self._cache:
            self._cache[batch] = self._make(batch)
        return self._cache[batch]


# ---------------------------------------------------------------------------- pytorch


def load_torch_model(path: Path) -> Any:
    """A ``torch.nn.Module`` from a Lightning checkpoint or a whole-module ``torch.save`` file."""
    import torch

    if path.suffix == ".ckpt":
        from components.models.changenet.module import load_module

        return load_module(path).model
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for foreign files
        raise ModelLoadError(f"{path}: not a readable torch file ({type(error).__name__}: {error})") from None
    if isinstance(payload, torch.nn.Module):
        return payload
    if isinstance(payload, dict) and "state_dict" in payload and "hyper_parameters" in payload:
        from components.models.changenet.module import load_module

        return load_module(path).model
    raise ModelLoadError(
        f"{path}: holds a {type(payload).__name__}, not a module; save the whole model (torch.save(model, path)) "
        "or pass the Lightning checkpoint"
    )


def _load_pytorch(path: Path, image_size: int, threads: int | None, seed: int) -> LoadedModel:
    import torch

    if threads:
        torch.set_num_threads(threads)
    model = load_torch_model(path).eval()

    def make(batch: int) -> tuple[Any, Any]:
        test, golden = random_pair(batch, image_size, seed)
        return torch.from_numpy(test), torch.from_numpy(golden)

    inputs = _InputCache(make)

    def run_batch(batch: int) -> None:
        test, golden = inputs(batch)
        with torch.inference_mode():
            model(test, golden)

    return LoadedModel("pytorch", path, image_size, run_batch, {"threads": torch.get_num_threads()})


# ---------------------------------------------------------------------------- onnxruntime


def nchw_square_size(shape: list[Any], fallback: int) -> int:
    """The square image size of an NCHW input shape, or ``fallback`` when H/W are symbolic."""
    if len(shape) != 4:
        raise ModelLoadError(f"expected an NCHW input, got shape {shape}")
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int):
        if height != width:
            raise ModelLoadError(f"expected square inputs, got {height}x{width}")
        return height
    return fallback


def _is_square_nchw(shape: Any) -> bool:
    dims = list(shape)
    return len(dims) == 4 and (not isinstance(dims[2], int) or not isinstance(dims[3], int) or dims[2] == dims[3])


def _feed_shape(shape: list[Any], batch: int, size: int) -> tuple[int, ...]:
    """A concrete input shape: the batch first, declared sizes kept, symbolic sizes set to ``size``."""
    return (batch, *(dim if isinstance(dim, int) else size for dim in shape[1:]))


def _load_onnxruntime(path: Path, image_size: int, threads: int | None, seed: int) -> LoadedModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{path}: onnxruntime cannot load it ({type(error).__name__}: {error})") from None
    inputs = list(session.get_inputs())
    if len(inputs) != 2:
        raise ModelLoadError(f"{path}: expected a (test, golden) model with 2 inputs, got {[i.name for i in inputs]}")
    first = inputs[0]
    # Square NCHW pairs (segmentation) report their side; other layouts (the classifier's stacked
    # lights, several goldens) are fed at their declared shapes.
    size = nchw_square_size(list(first.shape), image_size) if _is_square_nchw(first.shape) else image_size
    fixed_batch = first.shape[0] if isinstance(first.shape[0], int) else None
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32

    def make(batch: int) -> dict[str, np.ndarray]:
        if fixed_batch is not None and batch != fixed_batch:
            raise ModelLoadError(f"{path}: exported with a fixed batch of {fixed_batch}; export with dynamic batch")
        rng = np.random.default_rng(seed)
        return {
            item.name: rng.random(_feed_shape(list(item.shape), batch, size), dtype=np.float32).astype(dtype)
            for item in inputs
        }

    feeds = _InputCache(make)

    def run_batch(batch: int) -> None:
        session.run(None, feeds(batch))

    details = {"providers": session.get_providers(), "threads": threads or 0, "input_dtype": np.dtype(dtype).name}
    return LoadedModel("onnxruntime", path, size, run_batch, details)


# ---------------------------------------------------------------------------- tensorrt


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
        "UINT8": torch.uint8,
    }
    name = getattr(dtype, "name", str(dtype)).split(".")[-1]
    if name not in table:
        raise ModelLoadError(f"engine tensor type {name} has no torch equivalent")
    return table[name]


def _load_tensorrt(path: Path, image_size: int, threads: int | None, seed: int) -> LoadedModel:
    from components.benchmarking.tensorrt_build import import_tensorrt

    trt = import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailable("TensorRT needs an NVIDIA GPU, and torch sees no CUDA device on this machine")
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ModelLoadError(
            f"{path}: TensorRT {trt.__version__} cannot deserialize it (built by another TensorRT version or GPU?)"
        )
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
    input_names = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
    output_names = [name for name in names if name not in input_names]
    missing = [name for name in INPUT_NAMES if name not in input_names]
    if missing:
        raise ModelLoadError(f"{path}: engine inputs {input_names} lack {missing}")
    declared = list(engine.get_tensor_shape(INPUT_NAMES[0]))
    size = declared[2] if len(declared) == 4 and declared[2] > 0 else image_size
    stream = torch.cuda.Stream()
    buffers: dict[str, Any] = {}
    state = {"batch": 0}

    def bind(batch: int) -> None:
        test, golden = random_pair(batch, size, seed)
        for name, array in zip(INPUT_NAMES, (test, golden), strict=True):
            dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
            buffers[name] = torch.from_numpy(array).to(device="cuda", dtype=dtype).contiguous()
            if not context.set_input_shape(name, tuple(buffers[name].shape)):
                raise ModelLoadError(f"{path}: batch {batch} is outside the engine's optimization profile")
            context.set_tensor_address(name, buffers[name].data_ptr())
        for name in output_names:
            shape = tuple(context.get_tensor_shape(name))
            buffers[name] = torch.empty(shape, dtype=_torch_dtype(trt, engine.get_tensor_dtype(name)), device="cuda")
            context.set_tensor_address(name, buffers[name].data_ptr())
        torch.cuda.synchronize()
        state["batch"] = batch

    def run_batch(batch: int) -> None:
        if state["batch"] != batch:
            bind(batch)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution failed at batch {batch}")
        stream.synchronize()  # the harness times completed work, not enqueue

    details = {"tensorrt_version": trt.__version__, "device": torch.cuda.get_device_name()}
    return LoadedModel("tensorrt", path, size, run_batch, details, close=buffers.clear)

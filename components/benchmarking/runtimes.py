"""Load a model for one runtime variant and hand the harness a ``run_batch(n)`` that runs n image pairs.

Inputs are random images in [0, 1] (the model normalises inside), made once per batch size
before timing and kept on the device that runs the model (no host-device transfers in the
timed call, like trtexec's ``--noDataTransfers``), so that only inference is measured. What
runs is a :class:`~components.benchmarking.variants.RuntimeVariant`; each is timed the way
it is deployed:

* ``pytorch``: a Lightning checkpoint (``.ckpt``) or a torch-saved module (``.pt``/``.pth``,
  e.g. a torchao-quantized model), ``inference_mode``, on the CPU or a CUDA GPU, in fp32,
  bf16 autocast or fp16, optionally channels-last and ``torch.compile`` (:func:`torch_plan`
  lists the steps). On CUDA every call ends with ``torch.cuda.synchronize()``, so the harness
  times finished kernels, not launches; compilation happens in :attr:`LoadedModel.prepare`,
  before the harness's own warm-up.
* ``onnxruntime``: the exported ONNX on the CPU execution provider, or on the CUDA execution
  provider with IO binding (inputs and outputs in GPU memory); input names and (static) image
  size read from the model.
* ``tensorrt``: a serialized engine run on the GPU through the TensorRT Python API with
  torch CUDA tensors as buffers.

A runtime or device this machine lacks raises :class:`RuntimeUnavailable` saying what is
missing: no number is ever made up.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.benchmarking.variants import RUNTIMES, RuntimeVariant

INPUT_NAMES: tuple[str, str] = ("input0", "input1")


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run on this machine (library or device missing); the message says what to install."""


class ModelLoadError(ValueError):
    """A model file that the chosen runtime cannot use; the message names the file and the reason."""


@dataclass
class LoadedModel:
    """A model ready to be timed: ``run_batch(n)`` returns when n pairs have been processed.

    ``prepare(n)``, when set, runs once per batch size before the harness's warm-up: it builds
    the inputs and makes the first calls (where ``torch.compile`` compiles, cuDNN picks kernels),
    so neither is timed and the warm-up is not eaten by them.
    """

    runtime: str
    path: Path
    image_size: int
    run_batch: Callable[[int], None]
    details: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None
    variant: RuntimeVariant | None = None
    prepare: Callable[[int], None] | None = None

    @property
    def device(self) -> str:
        """The device's name (e.g. ``NVIDIA H200``, ``AMD EPYC 7B13``) as recorded with every number."""
        return str(self.details.get("device", ""))


def random_pair(batch: int, image_size: int, seed: int = 0, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible (test, golden) pair of N×3×S×S images in [0, 1]."""
    rng = np.random.default_rng(seed)
    shape = (batch, 3, image_size, image_size)
    return rng.random(shape, dtype=np.float32).astype(dtype), rng.random(shape, dtype=np.float32).astype(dtype)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: str) -> str:
    """``cuda`` -> the GPU's name (``NVIDIA H200``); ``cpu`` -> the CPU's model name."""
    if device == "cuda":
        import torch

        return str(torch.cuda.get_device_name())
    return cpu_name()


def require_cuda(what: str) -> None:
    """Raise :class:`RuntimeUnavailable` unless torch sees a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        build = torch.version.cuda
        raise RuntimeUnavailable(
            f"{what} needs an NVIDIA GPU, and torch {torch.__version__} sees no CUDA device on this machine "
            f"({'CUDA build ' + build + ': no GPU or driver' if build else 'a CPU-only torch build'}). "
            "Run it on a GPU machine, or use --device cpu."
        )


def check_available(variant: RuntimeVariant) -> None:
    """Raise :class:`RuntimeUnavailable` now if ``variant`` cannot run here (before any export or load)."""
    if variant.runtime == "tensorrt":
        from components.benchmarking.tensorrt_build import import_tensorrt

        import_tensorrt()
        require_cuda("TensorRT")
    elif variant.runtime == "onnxruntime" and variant.device == "cuda":
        _cuda_provider_available()
    elif variant.device == "cuda":
        require_cuda(f"{variant.runtime} --device cuda")


def load_runtime(
    runtime: str | RuntimeVariant,
    model_path: Path | str,
    image_size: int,
    threads: int | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Load ``model_path`` for a runtime variant (a bare name is that runtime on its usual device).

    ``image_size`` is used where the model does not fix it.
    """
    if isinstance(runtime, str) and runtime not in RUNTIMES:
        raise ModelLoadError(f"unknown runtime {runtime!r}; choose from {list(RUNTIMES)}")
    variant = RuntimeVariant(runtime) if isinstance(runtime, str) else runtime
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found")
    loader = {"pytorch": _load_pytorch, "onnxruntime": _load_onnxruntime, "tensorrt": _load_tensorrt}[variant.runtime]
    loaded = loader(path, image_size, threads, seed, variant)
    loaded.variant = variant
    return loaded


class _InputCache:
    """Inputs per batch size, built on first use (outside the timed call)."""

    def __init__(self, make: Callable[[int], Any]) -> None:
        self._make = make
        self._cache: dict[int, Any] = {}

    def __call__(self, batch: int) -> Any:
        if batch not in self._cache:
            self._cache[batch] = self._make(batch)
        return self._cache[batch]

    def clear(self) -> None:
        self._cache.clear()


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


@dataclass(frozen=True)
class TorchPlan:
    """How PyTorch runs one variant; :meth:`steps` names what :class:`TorchRunner` does, in order.

    Precisions:

    * ``fp32``: float32 weights and inputs with PyTorch's defaults: on CUDA, cuDNN convolutions
      may use TF32 (``torch.backends.cudnn.allow_tf32`` is on by default) while matmuls stay
      full fp32 (``float32_matmul_precision`` "highest"); both settings are recorded.
    * ``bf16``: float32 weights and inputs under ``torch.autocast(dtype=torch.bfloat16)``:
      convolutions and matmuls in bf16, norms and reductions in fp32. Nothing is converted,
      bf16 has fp32's range: the safe mixed precision, and the one that also runs on CPUs.
    * ``fp16``: the model converted once with ``model.half()`` and fed half inputs, *not* fp16
      autocast, because it is the faster of the two: autocast re-casts every weight at every
      call and keeps fp32 copies of activations around the ops it runs in fp32, while a
      converted model reads half the bytes with no casts (under ``torch.compile`` the gap
      narrows but the weight casts remain). It is also how TensorRT FP16 engines run. Safe
      for ChangeNet: inputs are normalised inside, BatchNorm/LayerNorm run in inference mode.

    ``channels_last`` puts weights and inputs in NHWC (what tensor-core convolutions want);
    ``compile_mode`` wraps the model in ``torch.compile(mode=..., dynamic=False)``: one static
    graph per batch size, compiled in :meth:`TorchRunner.prepare`, not in the timed calls.
    On CUDA, ``cudnn.benchmark`` picks the fastest convolution per shape (as trtexec picks
    tactics) and every call ends with ``torch.cuda.synchronize()``.
    """

    device: str
    weights_dtype: str | None
    """``float16``: ``model.half()``; ``None``: weights stay float32."""
    input_dtype: str
    autocast_dtype: str | None
    channels_last: bool
    compile_mode: str | None
    synchronize: bool
    cudnn_benchmark: bool

    def steps(self) -> list[str]:
        """The plan in words, recorded with the numbers."""
        steps = [f"model.to({self.device!r})"]
        if self.weights_dtype:
            steps.append(f"model.to(torch.{self.weights_dtype})")
        layout = "torch.channels_last" if self.channels_last else "torch.contiguous_format"
        if self.channels_last:
            steps.append(f"model.to(memory_format={layout})")
        if self.compile_mode:
            steps.append(f"torch.compile(model, mode={self.compile_mode!r}, dynamic=False)")
        if self.cudnn_benchmark:
            steps.append("torch.backends.cudnn.benchmark = True")
        steps.append(f"inputs: torch.{self.input_dtype}, {layout}, on {self.device} (made once per batch size)")
        call = "torch.inference_mode()"
        if self.autocast_dtype:
            call += f" + torch.autocast({self.device!r}, dtype=torch.{self.autocast_dtype})"
        steps.append(f"call under {call}")
        if self.synchronize:
            steps.append("torch.cuda.synchronize() after each call")
        return steps


def torch_plan(variant: RuntimeVariant) -> TorchPlan:
    """The steps that run a ``pytorch`` variant (pure: nothing is imported or checked here)."""
    if variant.runtime != "pytorch":
        raise ValueError(f"torch_plan is for the pytorch runtime, got {variant.runtime!r}")
    device = str(variant.device)
    half = variant.precision == "fp16"
    return TorchPlan(
        device=device,
        weights_dtype="float16" if half else None,
        input_dtype="float16" if half else "float32",
        autocast_dtype="bfloat16" if variant.precision == "bf16" else None,
        channels_last=variant.channels_last,
        compile_mode=variant.compile_mode,
        synchronize=device == "cuda",
        cudnn_benchmark=device == "cuda",
    )


class TorchRunner:
    """A torch module set up by a :class:`TorchPlan`, with device-resident inputs per batch size."""

    PREPARE_CALLS_COMPILED = 3
    """Calls before timing when compiled: compile, then any recompile/autotune or CUDA-graph recording."""

    def __init__(self, model: Any, plan: TorchPlan, image_size: int, seed: int = 0) -> None:
        import torch

        if plan.device == "cuda":
            require_cuda("pytorch --device cuda")
        self.plan = plan
        self.image_size = image_size
        self.seed = seed
        self._cudnn_benchmark = torch.backends.cudnn.benchmark
        if plan.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        module = model.eval().to(plan.device)
        if plan.weights_dtype:
            module = module.to(getattr(torch, plan.weights_dtype))
        if plan.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.forward = torch.compile(module, mode=plan.compile_mode, dynamic=False) if plan.compile_mode else module
        self.inputs = _InputCache(self._make)

    def _make(self, batch: int) -> tuple[Any, Any]:
        import torch

        dtype = getattr(torch, self.plan.input_dtype)
        layout = torch.channels_last if self.plan.channels_last else torch.contiguous_format
        pair = random_pair(batch, self.image_size, self.seed)
        tensors = tuple(
            torch.from_numpy(array).to(self.plan.device, dtype).contiguous(memory_format=layout) for array in pair
        )
        if self.plan.synchronize:
            torch.cuda.synchronize()
        return tensors

    def _context(self) -> Any:
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.plan.autocast_dtype:
            stack.enter_context(torch.autocast(self.plan.device, dtype=getattr(torch, self.plan.autocast_dtype)))
        return stack

    def run_batch(self, batch: int) -> None:
        import torch

        test, golden = self.inputs(batch)
        with self._context():
            self.forward(test, golden)
        if self.plan.synchronize:
            torch.cuda.synchronize()  # the harness times finished kernels, not their launch

    def prepare(self, batch: int) -> None:
        for _ in range(self.PREPARE_CALLS_COMPILED if self.plan.compile_mode else 1):
            self.run_batch(batch)

    def close(self) -> None:
        import torch

        self.inputs.clear()
        self.forward = self.module = None
        torch.backends.cudnn.benchmark = self._cudnn_benchmark
        if self.plan.compile_mode:
            torch._dynamo.reset()  # drop compiled graphs (and their CUDA graphs) before the next variant
        if self.plan.device == "cuda":
            torch.cuda.empty_cache()

    def details(self) -> dict[str, Any]:
        import torch

        details: dict[str, Any] = {
            "device": device_name(self.plan.device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "steps": self.plan.steps(),
        }
        if self.plan.device == "cuda":
            details.update(
                {
                    "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version(),
                    "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                    "float32_matmul_precision": torch.get_float32_matmul_precision(),
                }
            )
        return details


def _load_pytorch(path: Path, image_size: int, threads: int | None, seed: int, variant: RuntimeVariant) -> LoadedModel:
    import torch

    plan = torch_plan(variant)
    if plan.device == "cuda":
        require_cuda("pytorch --device cuda")  # before reading a large checkpoint
    if threads:
        torch.set_num_threads(threads)
    runner = TorchRunner(load_torch_model(path), plan, image_size, seed)
    return LoadedModel(
        "pytorch",
        path,
        image_size,
        runner.run_batch,
        runner.details(),
        close=runner.close,
        prepare=runner.prepare,
    )


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


CUDA_PROVIDER = "CUDAExecutionProvider"


def _cuda_provider_available() -> None:
    """Raise :class:`RuntimeUnavailable` unless this onnxruntime build has the CUDA execution provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA_PROVIDER not in available:
        raise RuntimeUnavailable(
            f"onnxruntime {ort.__version__} here has no {CUDA_PROVIDER} (it offers {available}): it is the CPU "
            "build. Install onnxruntime-gpu built for this machine's CUDA in its place, or use --device cpu."
        )


class _BoundFeeds:
    """One batch size's inputs copied to the device once, bound with outputs left on the device."""

    def __init__(self, session: Any, feeds: dict[str, np.ndarray], device_type: str, device_id: int = 0) -> None:
        import onnxruntime as ort

        self.values = {
            name: ort.OrtValue.ortvalue_from_numpy(array, device_type, device_id) for name, array in feeds.items()
        }
        self.binding = session.io_binding()
        for name, value in self.values.items():
            self.binding.bind_ortvalue_input(name, value)
        for output in session.get_outputs():
            self.binding.bind_output(output.name, device_type, device_id)


def io_binding_runner(
    session: Any, make_feeds: Callable[[int], dict[str, np.ndarray]], device_type: str
) -> tuple[Callable[[int], None], Callable[[], None]]:
    """``(run_batch, clear)`` over IO binding: inputs in ``device_type`` memory, no copies in the timed call.

    ``synchronize_outputs`` waits for the device, so the harness times finished work.
    """
    bound = _InputCache(lambda batch: _BoundFeeds(session, make_feeds(batch), device_type))

    def run_batch(batch: int) -> None:
        feeds = bound(batch)
        session.run_with_iobinding(feeds.binding)
        feeds.binding.synchronize_outputs()

    return run_batch, bound.clear


def _load_onnxruntime(
    path: Path, image_size: int, threads: int | None, seed: int, variant: RuntimeVariant
) -> LoadedModel:
    import onnxruntime as ort

    on_cuda = variant.device == "cuda"
    if on_cuda:
        require_cuda("onnxruntime --device cuda")
        _cuda_provider_available()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    providers = [CUDA_PROVIDER, "CPUExecutionProvider"] if on_cuda else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{path}: onnxruntime cannot load it ({type(error).__name__}: {error})") from None
    if on_cuda and session.get_providers()[0] != CUDA_PROVIDER:
        # onnxruntime falls back to the CPU, with only a log line, when the CUDA/cuDNN libraries fail to load.
        raise RuntimeUnavailable(
            f"onnxruntime could not start {CUDA_PROVIDER} (the session runs on {session.get_providers()}): "
            "its CUDA or cuDNN libraries did not load; see onnxruntime's log above"
        )
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

    details: dict[str, Any] = {
        "providers": session.get_providers(),
        "threads": threads or 0,
        "input_dtype": np.dtype(dtype).name,
        "onnxruntime": ort.__version__,
    }
    if on_cuda:
        run_batch, clear = io_binding_runner(session, make, "cuda")
        details.update({"device": device_name("cuda"), "io_binding": True})
        return LoadedModel("onnxruntime", path, size, run_batch, details, close=clear, prepare=run_batch)

    feeds = _InputCache(make)

    def run_batch(batch: int) -> None:
        session.run(None, feeds(batch))

    details["device"] = cpu_name()
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


def _load_tensorrt(path: Path, image_size: int, threads: int | None, seed: int, variant: RuntimeVariant) -> LoadedModel:
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

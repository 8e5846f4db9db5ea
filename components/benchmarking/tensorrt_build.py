"""Build a TensorRT engine from the ChangeNet ONNX with the TensorRT Python API (10.x and 11.x).

The decisions (which network/builder flags for which TensorRT major and precision) are
pure functions, tested without TensorRT; :func:`build_engine` only applies them.

* TensorRT 10 (JetPack 6): networks are always explicit-batch (the EXPLICIT_BATCH flag is
  deprecated and ignored, so it is not set). Weakly typed by default: ``fp16``/``bf16``
  set the matching BuilderFlag, ``int8``/``fp8`` set INT8/FP8 for an ONNX with Q/DQ nodes
  (explicit quantization; no calibrator). ``onnx`` builds strongly typed instead.
* TensorRT 11: strongly typed only; the precision builder flags and the INT8 calibrator
  are gone. Precision comes from the ONNX (an FP16 graph from ModelOpt AutoCast, Q/DQ for
  INT8/FP8), so a requested precision that the ONNX does not carry is an error rather than
  a silently FP32 engine labelled FP16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "fp8", "best", "onnx")
"""``best`` = FP16 + INT8 (TensorRT 10 only); ``onnx`` = whatever the ONNX graph carries."""

_TRT10_BUILDER_FLAGS: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "fp16": ("FP16",),
    "bf16": ("BF16",),
    "int8": ("INT8",),
    "fp8": ("FP8",),
    "best": ("FP16", "INT8"),
    "onnx": (),
}
_NEEDS_QDQ = {"int8", "fp8"}


class EngineBuildError(RuntimeError):
    """The engine could not be built; the message says why (parser errors, bad settings, ...)."""


@dataclass(frozen=True)
class BuildPlan:
    """What to ask TensorRT for; names are members of ``trt.NetworkDefinitionCreationFlag`` / ``trt.BuilderFlag``."""

    trt_major: int
    precision: str
    """The precision the engine will have (the ONNX's on TensorRT 11 and for ``onnx``)."""
    strongly_typed: bool
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]


def trt_major_version(version: str) -> int:
    """``"10.3.0.26"`` -> 10; a clear error for anything that does not start with a number."""
    head = str(version).split(".", 1)[0]
    if not head.isdigit():
        raise EngineBuildError(f"cannot read TensorRT's major version from {version!r}")
    return int(head)


def plan_build(trt_major: int, precision: str, onnx_precision: str | None = None) -> BuildPlan:
    """Choose flags for ``precision`` on TensorRT ``trt_major``; ``onnx_precision`` from :func:`detect_onnx_precision`.

    Raises :class:`EngineBuildError` when the combination cannot give the requested engine.
    """
    if precision not in PRECISIONS:
        raise EngineBuildError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if trt_major < 10:
        raise EngineBuildError(f"TensorRT {trt_major}.x is not supported; need 10.x (JetPack 6) or 11.x")
    if trt_major == 10:
        if precision in _NEEDS_QDQ and onnx_precision is not None and onnx_precision != precision:
            raise EngineBuildError(
                f"{precision} needs an ONNX with {precision} Q/DQ nodes (explicit quantization); "
                f"this ONNX looks {onnx_precision}. Quantize it first (inspectops quantize)."
            )
        if precision == "onnx":
            return BuildPlan(10, onnx_precision or "onnx", True, ("STRONGLY_TYPED",), ())
        return BuildPlan(10, precision, False, (), _TRT10_BUILDER_FLAGS[precision])
    # TensorRT 11+: strongly typed, no precision flags. STRONGLY_TYPED is accepted and ignored there.
    if precision == "best":
        raise EngineBuildError("TensorRT 11 has no 'best' precision: the ONNX defines each tensor's type")
    effective = onnx_precision or precision
    if precision != "onnx" and onnx_precision is not None and onnx_precision != precision:
        hint = {
            "fp16": "convert it with ModelOpt AutoCast (python -m modelopt.onnx.autocast --onnx_path model.onnx)",
            "bf16": "convert it with ModelOpt AutoCast (low_precision_type=bf16)",
            "int8": "quantize it to a Q/DQ ONNX first (inspectops quantize)",
            "fp8": "quantize it to an FP8 Q/DQ ONNX first (ModelOpt)",
        }.get(precision, "export it in that precision")
        raise EngineBuildError(
            f"TensorRT {trt_major} is strongly typed: precision comes from the ONNX, which is {onnx_precision}, "
            f"not {precision}; {hint}, or request precision 'onnx'"
        )
    return BuildPlan(trt_major, effective, True, ("STRONGLY_TYPED",), ())


def detect_onnx_precision(onnx_path: Path | str) -> str:
    """``fp8``/``int8`` when the graph has Q/DQ nodes, ``fp16``/``bf16`` when it computes in that type, else ``fp32``.

    Reads the graph only (external weight files are not loaded).
    """
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError, OSError, ...
        raise EngineBuildError(f"{onnx_path}: not a readable ONNX model ({type(error).__name__}: {error})") from None
    return onnx_graph_precision(model)


def onnx_graph_precision(model: object) -> str:
    """:func:`detect_onnx_precision` on a loaded ``onnx.ModelProto``."""
    from onnx import TensorProto

    graph = model.graph  # type: ignore[attr-defined]
    fp8_types = {
        getattr(TensorProto, name)
        for name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
        if hasattr(TensorProto, name)
    }
    initializer_types = {init.name: init.data_type for init in graph.initializer}
    qdq = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if qdq:
        for node in qdq:
            zero_point = node.input[2] if len(node.input) > 2 else ""
            if initializer_types.get(zero_point) in fp8_types:
                return "fp8"
            for attr in node.attribute:
                if attr.name == "output_dtype" and attr.i in fp8_types:
                    return "fp8"
        return "int8"
    seen: set[int] = set(initializer_types.values())
    for info in [*graph.input, *graph.value_info, *graph.output]:
        seen.add(info.type.tensor_type.elem_type)
    for node in graph.node:
        if node.op_type == "Cast":
            seen.update(attr.i for attr in node.attribute if attr.name == "to")
    if TensorProto.FLOAT16 in seen:
        return "fp16"
    if TensorProto.BFLOAT16 in seen:
        return "bf16"
    return "fp32"


def onnx_image_size(onnx_path: Path | str, fallback: int, input_name: str = "input0") -> int:
    """The static H (= W) of ``input_name`` in the ONNX, else ``fallback``; engine profiles must match the trace."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for item in model.graph.input:
        if item.name == input_name:
            dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in item.type.tensor_type.shape.dim]
            if len(dims) == 4 and dims[2] and dims[2] == dims[3]:
                return int(dims[2])
            return fallback
    raise EngineBuildError(f"{onnx_path}: no input named {input_name!r}")


def profile_shapes(
    min_batch: int, opt_batch: int, max_batch: int, image_size: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) NCHW shapes for one dynamic-batch input."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise EngineBuildError(f"need 1 <= min <= opt <= max batch, got {min_batch}, {opt_batch}, {max_batch}")
    return tuple((batch, 3, image_size, image_size) for batch in (min_batch, opt_batch, max_batch))  # type: ignore[return-value]


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`RuntimeUnavailable` saying how to get it."""
    from components.benchmarking.runtimes import RuntimeUnavailable

    try:
        import tensorrt
    except Exception as error:  # ImportError, or OSError/RuntimeError from missing CUDA libraries
        raise RuntimeUnavailable(
            "TensorRT is not available on this machine: the 'tensorrt' Python package cannot be imported "
            f"({type(error).__name__}: {error}). Install TensorRT 10/11 from NVIDIA (JetPack on Jetson, "
            "pip install tensorrt with NVIDIA's index on x86) on a machine with an NVIDIA GPU."
        ) from None
    return tensorrt


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    image_size: int,
    max_batch: int,
    opt_batch: int | None = None,
    min_batch: int = 1,
    precision: str = "fp16",
    workspace_mib: int | None = None,
    timing_cache: Path | None = None,
    input_names: tuple[str, ...] = ("input0", "input1"),
) -> BuildPlan:
    """Parse ``onnx_path``, build a dynamic-batch engine, write it to ``engine_path``; returns the plan used.

    The timing cache (if given) is loaded before and saved after the build, so rebuilding
    for another batch size or after a small model change skips most kernel timing.
    """
    trt = import_tensorrt()
    plan = plan_build(trt_major_version(trt.__version__), precision, detect_onnx_precision(onnx_path))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)

    network_flags = 0
    for name in plan.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:  # STRONGLY_TYPED may vanish once it is implied everywhere
            network_flags |= 1 << int(member)
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves external .onnx.data next to the file
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    network_inputs = [network.get_input(index).name for index in range(network.num_inputs)]
    missing = [name for name in input_names if name not in network_inputs]
    if missing:
        raise EngineBuildError(f"{onnx_path}: inputs {missing} not in the model (it has {network_inputs})")

    config = builder.create_builder_config()
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    shapes = profile_shapes(min_batch, opt_batch or max_batch, max_batch, image_size)
    for name in input_names:
        profile.set_shape(name, *shapes)
    config.add_optimization_profile(profile)

    cache = None
    if timing_cache is not None:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with engine_path.open("wb") as handle:
        handle.write(serialized)
    if timing_cache is not None and cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        with timing_cache.open("wb") as handle:
            handle.write(config.get_timing_cache().serialize())
    return plan

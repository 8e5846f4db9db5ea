"""What exactly was timed: a runtime, a device and, for PyTorch, how the model runs there.

A number without its variant is misleading on a GPU: the same checkpoint runs at 356 or
1,020 pairs/s depending on precision, memory format and ``torch.compile`` (``STACK_NOTES``,
H200). :class:`RuntimeVariant` is the one spec that the CLI flags
(``inspectops benchmark --device cuda --precision fp16 --channels-last --compile``), the GPU
benchmark script and every record share. It is validated when made, so a combination that
would measure something other than what its name says (``--channels-last`` on ONNX Runtime,
fp16 on a CPU, TensorRT on a CPU) stops before any timing.

Two spellings, both derived from the fields:

* :attr:`RuntimeVariant.label`, for people (records, comparison tables, the MLflow tag
  ``variant``): ``pytorch cuda fp16 channels-last compile``, ``onnxruntime CUDA EP fp32``,
  ``tensorrt fp16``. :func:`parse_variant` reads it back (case-insensitive; ``+`` or commas
  may stand for spaces, so ``pytorch+cuda+bf16`` works unquoted in a shell).
* :attr:`RuntimeVariant.slug`, for file names: ``pytorch-cuda-fp16-channels-last-compile``.
  A runtime on its usual device keeps the historical ``<runtime>-<precision>`` name
  (``onnxruntime-fp32``), so existing reports keep their paths.

Pure: no torch import here; :mod:`components.benchmarking.runtimes` turns a variant into
the steps that run it. TensorRT's precisions are :data:`components.benchmarking.tensorrt_build.PRECISIONS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from components.benchmarking.tensorrt_build import PRECISIONS as TENSORRT_PRECISIONS

RUNTIMES: tuple[str, ...] = ("pytorch", "onnxruntime", "tensorrt")
DEVICES: tuple[str, ...] = ("cpu", "cuda")
DEFAULT_DEVICE: dict[str, str] = {"pytorch": "cpu", "onnxruntime": "cpu", "tensorrt": "cuda"}
TORCH_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
"""What PyTorch *runs* in (see :func:`components.benchmarking.runtimes.torch_plan`)."""
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes. ``default`` compiles fastest; ``max-autotune*`` benchmark kernel
choices at compile time (minutes on a large model); ``reduce-overhead`` adds CUDA graphs."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
"""A precision label must be safe in a file name (``int8-cpu``, ``classify-fp32``)."""


class VariantError(ValueError):
    """A runtime variant that cannot be measured as named; the message says which option to change."""


@dataclass(frozen=True)
class RuntimeVariant:
    """One runtime on one device, run one way. Validated on construction.

    Args:
        runtime: ``pytorch``, ``onnxruntime`` or ``tensorrt``.
        device: ``cpu`` or ``cuda``; ``None`` picks the runtime's usual one (TensorRT: cuda).
        precision: PyTorch: what it computes in (``fp32``, ``bf16``, ``fp16``; default fp32).
            ONNX Runtime: a label only, the graph decides (``None``: read from the ONNX later).
            TensorRT: the engine's build precision (``None``: the platform's).
        channels_last: PyTorch only: weights and inputs in NHWC memory format.
        compile_mode: PyTorch only: ``torch.compile`` with this mode; ``None`` runs eager.
    """

    runtime: str
    device: str | None = None
    precision: str | None = None
    channels_last: bool = False
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise VariantError(f"unknown runtime {self.runtime!r}; choose from {list(RUNTIMES)}")
        device = self.device or DEFAULT_DEVICE[self.runtime]
        if device not in DEVICES:
            raise VariantError(f"unknown device {self.device!r}; choose from {list(DEVICES)}")
        object.__setattr__(self, "device", device)
        if self.runtime != "pytorch":
            if self.channels_last:
                raise VariantError(
                    f"--channels-last applies to the pytorch runtime only ({self.runtime} picks its own layouts)"
                )
            if self.compile_mode is not None:
                raise VariantError(
                    f"--compile applies to the pytorch runtime only ({self.runtime} optimises its graph itself)"
                )
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise VariantError(f"unknown compile mode {self.compile_mode!r}; choose from {list(COMPILE_MODES)}")
        if self.runtime == "pytorch":
            self._check_torch_precision()
        elif self.runtime == "tensorrt":
            if device != "cuda":
                raise VariantError("TensorRT runs on an NVIDIA GPU only: use --device cuda (its default)")
            if self.precision is not None and self.precision not in TENSORRT_PRECISIONS:
                raise VariantError(
                    f"unknown TensorRT precision {self.precision!r}; choose from {list(TENSORRT_PRECISIONS)}"
                )
        elif self.precision is not None and not _LABEL.match(self.precision):
            raise VariantError(
                f"precision label {self.precision!r} must be letters, digits, '.', '_' or '-' (it names the report file)"
            )

    def _check_torch_precision(self) -> None:
        precision = self.precision or "fp32"
        if precision not in TORCH_PRECISIONS:
            raise VariantError(
                f"pytorch runs in {list(TORCH_PRECISIONS)}, got precision {precision!r} "
                "(a quantized model is a model file: pass it with --model, at fp32)"
            )
        if precision == "fp16" and self.device == "cpu":
            raise VariantError(
                "fp16 on a CPU runs PyTorch's slow reference kernels, not a deployment path: "
                "use bf16 (autocast) or fp32 on cpu, or fp16 with --device cuda"
            )
        object.__setattr__(self, "precision", precision)

    def with_precision(self, precision: str) -> RuntimeVariant:
        """The same variant with ``precision`` filled in (ONNX Runtime's read from the graph, TensorRT's platform's)."""
        return replace(self, precision=precision)

    @property
    def label(self) -> str:
        """``pytorch cuda fp16 channels-last compile``, ``onnxruntime CUDA EP fp32``, ``tensorrt fp16``."""
        if self.runtime == "onnxruntime":
            parts = ["onnxruntime", f"{str(self.device).upper()} EP"]
        elif self.runtime == "tensorrt":
            parts = ["tensorrt"]
        else:
            parts = ["pytorch", str(self.device)]
        if self.precision:
            parts.append(self.precision)
        if self.channels_last:
            parts.append("channels-last")
        if self.compile_mode is not None:
            parts.append("compile" if self.compile_mode == "default" else f"compile={self.compile_mode}")
        return " ".join(parts)

    @property
    def slug(self) -> str:
        """File-name form; the device is left out where it is the runtime's usual one."""
        parts = [self.runtime]
        if self.device != DEFAULT_DEVICE[self.runtime]:
            parts.append(str(self.device))
        if self.precision:
            parts.append(self.precision)
        if self.channels_last:
            parts.append("channels-last")
        if self.compile_mode is not None:
            parts.append("compile" if self.compile_mode == "default" else f"compile-{self.compile_mode}")
        return "-".join(parts)


def parse_variant(text: str) -> RuntimeVariant:
    """Read a :attr:`RuntimeVariant.label` (or the same tokens joined by ``+``/commas) back into a variant.

    The runtime comes first; then, in any order, a device (``cpu``/``cuda``), a precision,
    ``channels-last`` and ``compile`` or ``compile=<mode>``. ONNX Runtime's ``EP`` is allowed
    after its device (``onnxruntime CUDA EP``).
    """
    tokens = [token for token in re.split(r"[\s+,]+", text.strip()) if token]
    if not tokens:
        raise VariantError("empty runtime variant; e.g. 'pytorch cuda fp16 channels-last compile'")
    runtime, *rest = (token.lower() for token in tokens)
    fields: dict[str, object] = {}

    def put(key: str, value: object, token: str) -> None:
        if key in fields:
            raise VariantError(f"{text!r}: {key.replace('_', ' ')} given twice (at {token!r})")
        fields[key] = value

    for token in rest:
        if token in DEVICES:
            put("device", token, token)
        elif token == "ep" and runtime == "onnxruntime":
            continue
        elif token in ("channels-last", "channels_last"):
            put("channels_last", True, token)
        elif token == "compile":
            put("compile_mode", "default", token)
        elif token.startswith("compile="):
            put("compile_mode", token.split("=", 1)[1], token)
        else:
            put("precision", token, token)
    try:
        return RuntimeVariant(runtime, **fields)  # type: ignore[arg-type]
    except VariantError as error:
        raise VariantError(f"{text!r}: {error}") from None


def cli_variant(
    runtime: str,
    device: str | None = None,
    precision: str | None = None,
    channels_last: bool = False,
    compile_: bool = False,
    compile_mode: str | None = None,
) -> RuntimeVariant:
    """The variant the ``inspectops benchmark`` flags describe (``--compile-mode`` needs ``--compile``)."""
    if compile_mode is not None and not compile_:
        raise VariantError(f"--compile-mode {compile_mode} needs --compile")
    return RuntimeVariant(
        runtime,
        device=device,
        precision=precision,
        channels_last=channels_last,
        compile_mode=(compile_mode or "default") if compile_ else None,
    )


__all__ = [
    "COMPILE_MODES",
    "DEFAULT_DEVICE",
    "DEVICES",
    "RUNTIMES",
    "TORCH_PRECISIONS",
    "RuntimeVariant",
    "VariantError",
    "cli_variant",
    "parse_variant",
]

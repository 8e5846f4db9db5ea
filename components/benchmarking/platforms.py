"""Load and validate ``platforms.yaml``: which machines we benchmark on and what TAO measured there.

One file feeds the fan-out flow (which platforms exist), the deployments (which work pool
runs each) and the comparison table (reference batch size and FPS), so adding a platform
is one YAML entry and a typo in it fails loudly, naming the platform and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PLATFORMS_PATH = Path(__file__).with_name("platforms.yaml")

Runtime = Literal["pytorch", "onnxruntime", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "fp8"]


class PlatformError(ValueError):
    """An unusable platforms file or an unknown platform name; the message says which and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reference(_Strict):
    """A published measurement: image pairs per second at one batch size."""

    batch_size: int = Field(ge=1)
    fps: float = Field(gt=0)


class Platform(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")
    """Key in the YAML; also the deployment name, so lowercase letters, digits and dashes."""
    display_name: str
    kind: Literal["gpu", "jetson", "cpu"]
    runtime: Runtime
    precision: Precision
    work_pool: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    trtexec_path: Path | None = None
    reference: Reference | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Platform:
        if self.kind in ("gpu", "jetson") and self.runtime != "tensorrt":
            raise ValueError(f"a {self.kind} platform benchmarks TensorRT engines, got runtime {self.runtime!r}")
        if self.kind == "cpu" and self.runtime == "tensorrt":
            raise ValueError("a cpu platform cannot run TensorRT")
        return self


class PlatformRegistry(_Strict):
    platforms: dict[str, Platform]

    def get(self, name: str) -> Platform:
        """The platform called ``name``, or a :class:`PlatformError` that lists the known ones."""
        try:
            return self.platforms[name]
        except KeyError:
            raise PlatformError(f"unknown platform {name!r}; known: {', '.join(self.platforms)}") from None

    def select(self, names: list[str] | tuple[str, ...]) -> list[Platform]:
        """Several platforms in the given order; every unknown name is reported at once."""
        unknown = [name for name in names if name not in self.platforms]
        if unknown:
            raise PlatformError(f"unknown platform(s) {unknown}; known: {', '.join(self.platforms)}")
        if len(set(names)) != len(names):
            raise PlatformError(f"platforms listed more than once: {list(names)}")
        return [self.platforms[name] for name in names]


def parse_platforms(raw: object, source: str = "platforms") -> PlatformRegistry:
    """Validate a mapping ``{platforms: {name: {...}}}``; the YAML key becomes ``name``."""
    if not isinstance(raw, dict) or not isinstance(raw.get("platforms"), dict) or not raw["platforms"]:
        raise PlatformError(f"{source}: expected a non-empty mapping under 'platforms:'")
    entries = {}
    for name, body in raw["platforms"].items():
        if not isinstance(body, dict):
            raise PlatformError(f"{source}: platform {name!r} must be a mapping, got {type(body).__name__}")
        if "name" in body and body["name"] != name:
            raise PlatformError(f"{source}: platform {name!r} has a different name {body['name']!r}")
        entries[name] = {**body, "name": name}
    try:
        return PlatformRegistry.model_validate({"platforms": entries})
    except ValidationError as error:
        lines = [f"{source}: {error.error_count()} invalid value(s)"]
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            lines.append(f"  - {key}: {item['msg']}")
        raise PlatformError("\n".join(lines)) from None


def load_platforms(path: Path | str | None = None) -> PlatformRegistry:
    """Read ``platforms.yaml`` (the packaged one by default)."""
    path = Path(path) if path is not None else DEFAULT_PLATFORMS_PATH
    if not path.is_file():
        raise PlatformError(f"{path}: platforms file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise PlatformError(f"{path}: not valid YAML: {error}") from None
    return parse_platforms(raw, str(path))

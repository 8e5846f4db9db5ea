"""Golden/test pairs from two files or two folders: shared by ``inspectops infer segment`` with a
checkpoint and with a registered model (:mod:`components.serving.infer`); no torch."""

from __future__ import annotations

from pathlib import Path

from components.data.layout import IMAGE_SUFFIXES

__all__ = ["PairingError", "pair_inputs"]


class PairingError(ValueError):
    """Golden and test inputs that cannot be paired; the message names what is missing."""


def pair_inputs(golden: Path, test: Path) -> list[tuple[str, Path, Path]]:
    """``(name, golden file, test file)`` for two files or two folders matched by file name."""
    if golden.is_file() and test.is_file():
        return [(test.stem, golden, test)]
    if golden.is_dir() and test.is_dir():
        tests = {p.name: p for p in sorted(test.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        goldens = {p.name: p for p in sorted(golden.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        missing = sorted(set(tests) - set(goldens))
        if missing:
            raise PairingError(f"{golden}: no golden image for test image(s) {missing[:10]}")
        if not tests:
            raise PairingError(f"{test}: holds no images")
        return [(Path(name).stem, goldens[name], path) for name, path in tests.items()]
    raise PairingError(f"--golden {golden} and --test {test} must both be existing files or both folders")

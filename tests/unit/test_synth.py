"""Tests of the built-in synthetic category: layout, masks, lights, determinism, atomicity.

Kept tiny (64 px, a handful of images) so the whole file runs in a few seconds.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.config import LIGHTING_CONDITIONS, SyntheticParams
from components.data import synth
from components.data.layout import scan_category
from components.data.synth import MAIN_LIGHT, synthesize_category

KINDS = ("bent_lead", "cut_lead", "damaged_case", "misplaced")
TINY = SyntheticParams(image_size=64, num_train_good=3, num_test_good=2, num_defect_per_kind=2)


def _hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("synth") / "transistor"
    counts = synthesize_category(root, "transistor", TINY, seed=7)
    return root, counts


def test_layout_is_accepted_and_counts_match(category: tuple[Path, dict[str, int]]) -> None:
    root, counts = category
    index = scan_category(root)
    assert len(index.train_good) == counts["train_good"] == 3
    assert sum(s.is_good for s in index.test) == counts["test_good"] == 2
    assert sum(not s.is_good for s in index.test) == counts["test_defect"] == 2 * len(KINDS)
    assert counts["images"] == 3 + 2 + 8 and counts["masks"] == 8
    assert counts["light_images"] == counts["images"] * len(LIGHTING_CONDITIONS)
    assert index.defect_kinds == sorted(KINDS)
    assert index.lights == tuple(sorted(LIGHTING_CONDITIONS))
    assert [s.stem for s in index.train_good] == ["000", "001", "002"]


def test_images_are_rgb_and_masks_binary_nonempty_and_sized(category: tuple[Path, dict[str, int]]) -> None:
    index = scan_category(category[0])
    for sample in index.samples:
        with Image.open(sample.image) as image:
            assert image.mode == "RGB" and image.size == (64, 64)
        if sample.is_good:
            continue
        assert sample.mask is not None
        with Image.open(sample.mask) as mask:
            assert mask.mode == "L" and mask.size == (64, 64)
            values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        area = (values > 0).mean()
        assert 0.0 < area < 0.7, f"{sample.name}: mask covers {area:.1%} of the image"


def test_good_samples_have_no_mask_yet_differ_from_the_golden(category: tuple[Path, dict[str, int]]) -> None:
    root = category[0]
    assert not (root / "ground_truth" / "good").exists()
    golden = _pixels(root / "train" / "good" / "000.png")
    for name in ("000.png", "001.png"):
        diff = np.abs(golden - _pixels(root / "test" / "good" / name))
        assert diff.mean() > 1.0  # jitter, drift and noise: never a pixel-identical copy


def test_each_light_is_rendered_differently_and_the_main_image_is_uniform(
    category: tuple[Path, dict[str, int]],
) -> None:
    root = category[0]
    index = scan_category(root)
    for sample in index.samples:
        renders = {light: index.light_image(sample, light) for light in LIGHTING_CONDITIONS}
        assert all(path.is_file() for path in renders.values()), sample.name
        assert renders[MAIN_LIGHT].read_bytes() == sample.image.read_bytes()
        for a, b in itertools.combinations(LIGHTING_CONDITIONS, 2):
            assert np.abs(_pixels(renders[a]) - _pixels(renders[b])).mean() > 5.0, (sample.name, a, b)


def test_readme_names_the_generator_and_seed(category: tuple[Path, dict[str, int]]) -> None:
    text = (category[0] / "readme.txt").read_text()
    assert "synthetic" in text.lower() and "inspectops" in text and "seed 7" in text


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    params = TINY.model_copy(update={"num_test_good": 1, "num_defect_per_kind": 1})
    synthesize_category(tmp_path / "a", "transistor", params, seed=3)
    synthesize_category(tmp_path / "b", "transistor", params, seed=3)
    synthesize_category(tmp_path / "c", "transistor", params, seed=4)
    first, again, other = (_hashes(tmp_path / name) for name in "abc")
    assert first == again
    assert first.keys() == other.keys()
    images = [key for key in first if key.endswith(".png") and "_mask" not in key]
    assert all(first[key] != other[key] for key in images)


def test_other_samples_do_not_move_when_kinds_lights_or_counts_change(tmp_path: Path) -> None:
    small = TINY.model_copy(update={"num_train_good": 2, "defect_kinds": ("cut_lead",), "render_lighting": False})
    large = TINY.model_copy(update={"num_train_good": 3, "defect_kinds": ("bent_lead", "cut_lead")})
    synthesize_category(tmp_path / "small", "transistor", small, seed=5)
    synthesize_category(tmp_path / "large", "transistor", large, seed=5)
    assert not (tmp_path / "small" / "lights").exists()
    small_files, large_files = _hashes(tmp_path / "small"), _hashes(tmp_path / "large")
    shared = [key for key in small_files if key != "readme.txt"]
    assert shared and all(small_files[key] == large_files[key] for key in shared)


def test_a_failure_mid_write_leaves_no_category_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = synth.write_png
    calls = {"n": 0}

    def failing_write(path: Path, array: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk full")
        real_write(path, array)

    monkeypatch.setattr(synth, "write_png", failing_write)
    with pytest.raises(OSError, match="disk full"):
        synthesize_category(tmp_path / "transistor", "transistor", TINY, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_regeneration_keeps_the_previous_category(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = TINY.model_copy(update={"render_lighting": False, "defect_kinds": ("misplaced",)})
    out = tmp_path / "transistor"
    synthesize_category(out, "transistor", params, seed=1)
    before = _hashes(out)

    def broken(path: Path, array: np.ndarray) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(synth, "write_png", broken)
    with pytest.raises(RuntimeError):
        synthesize_category(out, "transistor", params, seed=2)
    assert _hashes(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["transistor"]


def test_negative_seed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        synthesize_category(tmp_path / "x", "transistor", TINY, seed=-1)
    assert not (tmp_path / "x").exists()

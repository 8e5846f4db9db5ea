"""Tests of MVTec AD ingestion: sources, archive safety, validation and atomic replacement.

All data is a tiny category of 8x8 PNGs made in ``tmp_path``, so the tests are fast and
independent of any real data set.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data.ingest import IngestError, ingest
from components.data.layout import scan_category

CATEGORY = "widget"
EXPECTED_COUNTS = {"train_good": 3, "test_good": 2, "test_defect": 3, "masks": 3, "defect_kinds": 2}
LAYOUT_FILES = {
    "train/good/000.png",
    "train/good/001.png",
    "train/good/002.png",
    "test/good/000.png",
    "test/good/001.png",
    "test/crack/000.png",
    "test/crack/001.png",
    "test/scratch/000.png",
    "ground_truth/crack/000_mask.png",
    "ground_truth/crack/001_mask.png",
    "ground_truth/scratch/000_mask.png",
    "license.txt",
    "readme.txt",
}


# --------------------------------------------------------------------------- helpers


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _image(seed: int, gray: bool = False, size: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (size, size) if gray else (size, size, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _mask(size: int = 8, value: int = 255) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[2:5, 3:6] = value
    return mask


def make_category(parent: Path, name: str = CATEGORY) -> Path:
    """A valid MVTec-style category with junk files that ingestion must skip."""
    root = parent / name
    for i in range(3):
        _png(root / "train" / "good" / f"{i:03d}.png", _image(i))
    _png(root / "test" / "good" / "000.png", _image(10))
    _png(root / "test" / "good" / "001.png", _image(11, gray=True))  # grayscale stays grayscale
    for kind, count in (("crack", 2), ("scratch", 1)):
        for i in range(count):
            _png(root / "test" / kind / f"{i:03d}.png", _image(20 + i))
            _png(root / "ground_truth" / kind / f"{i:03d}_mask.png", _mask())
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")
    (root / "readme.txt").write_text("tiny test category\n")
    (root / ".DS_Store").write_bytes(b"\x00junk")
    (root / "train" / "good" / ".DS_Store").write_bytes(b"\x00junk")
    (root / "train" / "good" / "._000.png").write_bytes(b"appledouble")
    (root / "notes.md").write_text("not part of the layout\n")
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def all_paths(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def make_tar(category_dir: Path, archive: Path, mode: str, arcname: str | None = None) -> Path:
    with tarfile.open(archive, mode) as tar:
        tar.add(category_dir, arcname=arcname or category_dir.name)
    return archive


def make_zip(category_dir: Path, archive: Path, arcname: str | None = None) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(category_dir.rglob("*")):
            name = f"{arcname or category_dir.name}/{path.relative_to(category_dir).as_posix()}"
            zf.write(path, name)
    return archive


def add_tar_member(archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> None:
    """Append a hand-made member (uncompressed tar only: appending needs mode 'a')."""
    with tarfile.open(archive, "a") as tar:
        info.size = len(data) if info.isfile() else 0
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def assert_published(out_root: Path, source_dir: Path, counts: dict[str, int]) -> None:
    assert counts == EXPECTED_COUNTS
    published = out_root / CATEGORY
    scan_category(published)
    copied = snapshot(published)
    assert set(copied) == LAYOUT_FILES
    source = snapshot(source_dir)
    assert all(copied[name] == source[name] for name in copied)
    assert [p.name for p in out_root.iterdir()] == [CATEGORY]  # no scratch or staging leftovers


@pytest.fixture()
def source_dir(tmp_path: Path) -> Path:
    return make_category(tmp_path / "src")


# --------------------------------------------------------------------------- sources


def test_ingest_from_root_folder_with_other_categories(tmp_path: Path, source_dir: Path) -> None:
    make_category(tmp_path / "src", "other")
    out_root = tmp_path / "data" / "mvtec"
    counts = ingest(source_dir.parent, CATEGORY, out_root)
    assert_published(out_root, source_dir, counts)


def test_ingest_from_category_folder(tmp_path: Path, source_dir: Path) -> None:
    out_root = tmp_path / "out"
    counts = ingest(source_dir, CATEGORY, out_root, progress=True)
    assert_published(out_root, source_dir, counts)


def test_grayscale_files_are_copied_not_reencoded(tmp_path: Path, source_dir: Path) -> None:
    ingest(source_dir, CATEGORY, tmp_path / "out")
    with Image.open(tmp_path / "out" / CATEGORY / "test" / "good" / "001.png") as image:
        assert image.mode == "L"


@pytest.mark.parametrize("suffix, mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar.xz", "w:xz"), (".tar", "w")])
def test_ingest_from_tar_archives(tmp_path: Path, source_dir: Path, suffix: str, mode: str) -> None:
    archive = make_tar(source_dir, tmp_path / f"{CATEGORY}{suffix}", mode)
    out_root = tmp_path / "out"
    assert_published(out_root, source_dir, ingest(archive, CATEGORY, out_root))


def test_ingest_from_zip_archive(tmp_path: Path, source_dir: Path) -> None:
    archive = make_zip(source_dir, tmp_path / f"{CATEGORY}.zip")
    out_root = tmp_path / "out"
    assert_published(out_root, source_dir, ingest(archive, CATEGORY, out_root))


def test_ingest_from_full_archive_picks_the_category(tmp_path: Path, source_dir: Path) -> None:
    make_category(tmp_path / "src", "other")
    archive = make_tar(source_dir.parent, tmp_path / "mvtec_anomaly_detection.tar.xz", "w:xz", "mvtec")
    out_root = tmp_path / "out"
    assert_published(out_root, source_dir, ingest(archive, CATEGORY, out_root))


@pytest.mark.parametrize("builder", ["tar", "zip"])
def test_single_top_level_dir_with_another_name(tmp_path: Path, source_dir: Path, builder: str) -> None:
    if builder == "tar":
        archive = make_tar(source_dir, tmp_path / "export.tar.gz", "w:gz", "widget_1024")
    else:
        archive = make_zip(source_dir, tmp_path / "export.zip", "widget_1024")
    out_root = tmp_path / "out"
    assert_published(out_root, source_dir, ingest(archive, CATEGORY, out_root))


def test_missing_category_names_what_is_there(tmp_path: Path, source_dir: Path) -> None:
    make_category(tmp_path / "src", "other")
    archive = make_tar(source_dir.parent, tmp_path / "two.tar", "w", "mvtec")
    with pytest.raises(IngestError, match=r"holds no category 'bottle'.*mvtec/other"):
        ingest(archive, "bottle", tmp_path / "out")
    with pytest.raises(IngestError, match="bottle"):
        ingest(source_dir.parent, "bottle", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("category", ["../escape", "a/b", "", "."])
def test_bad_category_name_is_refused(tmp_path: Path, source_dir: Path, category: str) -> None:
    with pytest.raises(IngestError, match="category"):
        ingest(source_dir, category, tmp_path / "out")


def test_missing_source_and_unknown_file(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="not found"):
        ingest(tmp_path / "nope", CATEGORY, tmp_path / "out")
    text = tmp_path / "data.txt"
    text.write_text("hello")
    with pytest.raises(IngestError, match="supported archive"):
        ingest(text, CATEGORY, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_archive_is_a_clear_error(tmp_path: Path, source_dir: Path) -> None:
    archive = make_tar(source_dir, tmp_path / "cut.tar.xz", "w:xz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(IngestError, match=r"cut\.tar\.xz"):
        ingest(archive, CATEGORY, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- archive safety


def _assert_untouched(tmp_path: Path, before: set[str], out_root: Path) -> None:
    assert all_paths(tmp_path) == before, "something was written or left behind"
    assert not out_root.exists()


def _tar_with(tmp_path: Path, source_dir: Path, info: tarfile.TarInfo, data: bytes = b"x") -> Path:
    archive = make_tar(source_dir, tmp_path / "hostile.tar", "w")  # the bad member comes last
    add_tar_member(archive, info, data)
    return archive


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


HOSTILE_TAR_MEMBERS: dict[str, tuple[Callable[[], tarfile.TarInfo], str]] = {
    "dotdot": (lambda: tarfile.TarInfo("../evil"), r"'\.\./evil'.*'\.\.'"),
    "nested-dotdot": (lambda: tarfile.TarInfo(f"{CATEGORY}/train/../../../evil.png"), "evil.png"),
    "absolute": (lambda: tarfile.TarInfo("/tmp/inspectops-evil.png"), "absolute"),
    "symlink-outside": (
        lambda: _symlink(f"{CATEGORY}/train/good/003.png", "../../../../etc/passwd"),
        "003.png.*outside",
    ),
    "symlink-absolute": (lambda: _symlink(f"{CATEGORY}/train/good/003.png", "/etc/passwd"), "absolute"),
    "hardlink-outside": (lambda: _hardlink(f"{CATEGORY}/train/good/003.png", "../outside.png"), "outside"),
    "device": (lambda: _device(f"{CATEGORY}/train/good/dev"), "device"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TAR_MEMBERS))
def test_hostile_tar_member_is_refused(tmp_path: Path, source_dir: Path, case: str) -> None:
    make_info, message = HOSTILE_TAR_MEMBERS[case]
    archive = _tar_with(tmp_path, source_dir, make_info())
    out_root = tmp_path / "out"
    before = all_paths(tmp_path)
    with pytest.raises(IngestError, match=message):
        ingest(archive, CATEGORY, out_root)
    _assert_untouched(tmp_path, before, out_root)
    assert not Path("/tmp/inspectops-evil.png").exists()


def test_hostile_member_of_another_category_still_refuses_the_archive(tmp_path: Path, source_dir: Path) -> None:
    archive = _tar_with(tmp_path, source_dir, tarfile.TarInfo("other/../../evil"))
    with pytest.raises(IngestError, match="evil"):
        ingest(archive, CATEGORY, tmp_path / "out")


def test_symlink_inside_archive_is_followed_for_its_bytes(tmp_path: Path, source_dir: Path) -> None:
    archive = _tar_with(tmp_path, source_dir, _symlink(f"{CATEGORY}/train/good/003.png", "000.png"))
    counts = ingest(archive, CATEGORY, tmp_path / "out")
    assert counts["train_good"] == 4
    copied = tmp_path / "out" / CATEGORY / "train" / "good" / "003.png"
    assert not copied.is_symlink()
    assert copied.read_bytes() == (source_dir / "train" / "good" / "000.png").read_bytes()


@pytest.mark.parametrize(
    "name, attr, message",
    [
        ("../evil.png", 0, r"'\.\.'"),
        ("/abs/evil.png", 0, "absolute"),
        ("C:/evil.png", 0, "absolute"),
        (f"{CATEGORY}\\..\\..\\evil.png", 0, r"'\.\.'"),
        (f"{CATEGORY}/train/good/link.png", (stat.S_IFLNK | 0o777) << 16, "symlink"),
    ],
)
def test_hostile_zip_member_is_refused(tmp_path: Path, source_dir: Path, name: str, attr: int, message: str) -> None:
    archive = make_zip(source_dir, tmp_path / "hostile.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo(name)
        info.external_attr = attr
        zf.writestr(info, b"/etc/passwd")
    out_root = tmp_path / "out"
    before = all_paths(tmp_path)
    with pytest.raises(IngestError, match=message):
        ingest(archive, CATEGORY, out_root)
    _assert_untouched(tmp_path, before, out_root)


# --------------------------------------------------------------------------- validation


def test_missing_mask_names_the_image(tmp_path: Path, source_dir: Path) -> None:
    (source_dir / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(IngestError, match=r"test/crack/001\.png.*mask") as error:
        ingest(source_dir, CATEGORY, tmp_path / "out")
    assert str(source_dir) in str(error.value)  # names the source, not the staging copy
    assert ".tmp-" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_missing_mask_in_archive_names_the_member(tmp_path: Path, source_dir: Path) -> None:
    (source_dir / "ground_truth" / "crack" / "001_mask.png").unlink()
    archive = make_tar(source_dir, tmp_path / "w.tar.gz", "w:gz")
    with pytest.raises(IngestError, match=rf"w\.tar\.gz::{CATEGORY}/test/crack/001\.png"):
        ingest(archive, CATEGORY, tmp_path / "out")


def test_mask_of_wrong_size_names_the_mask(tmp_path: Path, source_dir: Path) -> None:
    _png(source_dir / "ground_truth" / "scratch" / "000_mask.png", _mask(size=4))
    with pytest.raises(IngestError, match=r"scratch/000_mask\.png.*4x4"):
        ingest(source_dir, CATEGORY, tmp_path / "out")


@pytest.mark.parametrize("corruption", ["truncated", "garbage"])
def test_corrupt_png_names_the_file(tmp_path: Path, source_dir: Path, corruption: str) -> None:
    path = source_dir / "train" / "good" / "001.png"
    Image.fromarray(_image(5, size=64)).save(path, format="PNG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if corruption == "truncated" else b"not a png at all")
    with pytest.raises(IngestError, match=r"train/good/001\.png"):
        ingest(source_dir, CATEGORY, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_binary_mask_names_file_and_values(tmp_path: Path, source_dir: Path) -> None:
    _png(source_dir / "ground_truth" / "crack" / "000_mask.png", _mask(value=128))
    with pytest.raises(IngestError, match=r"crack/000_mask\.png.*not binary.*128"):
        ingest(source_dir, CATEGORY, tmp_path / "out")


def test_rgb_mask_is_refused(tmp_path: Path, source_dir: Path) -> None:
    _png(source_dir / "ground_truth" / "crack" / "000_mask.png", np.stack([_mask()] * 3, axis=-1))
    with pytest.raises(IngestError, match=r"000_mask\.png.*single-channel.*RGB"):
        ingest(source_dir, CATEGORY, tmp_path / "out")


# --------------------------------------------------------------------------- atomic replacement


def test_reingest_replaces_only_on_success(tmp_path: Path, source_dir: Path) -> None:
    out_root = tmp_path / "out"
    ingest(source_dir, CATEGORY, out_root)
    published = out_root / CATEGORY
    first = snapshot(published)

    _png(source_dir / "ground_truth" / "crack" / "000_mask.png", _mask(value=7))
    _png(source_dir / "train" / "good" / "000.png", _image(99))
    with pytest.raises(IngestError, match="not binary"):
        ingest(source_dir, CATEGORY, out_root)
    assert snapshot(published) == first
    assert [p.name for p in out_root.iterdir()] == [CATEGORY]

    _png(source_dir / "ground_truth" / "crack" / "000_mask.png", _mask())
    (source_dir / "test" / "scratch" / "000.png").unlink()
    (source_dir / "ground_truth" / "scratch" / "000_mask.png").unlink()
    counts = ingest(source_dir, CATEGORY, out_root)
    assert counts["test_defect"] == 2 and counts["masks"] == 2
    second = snapshot(published)
    assert second["train/good/000.png"] == (source_dir / "train" / "good" / "000.png").read_bytes()
    assert "test/scratch/000.png" not in second  # replaced, not merged


def test_failed_archive_reingest_keeps_previous_category(tmp_path: Path, source_dir: Path) -> None:
    out_root = tmp_path / "out"
    ingest(source_dir, CATEGORY, out_root)
    first = snapshot(out_root / CATEGORY)
    archive = _tar_with(tmp_path, source_dir, tarfile.TarInfo("../evil"))
    with pytest.raises(IngestError):
        ingest(archive, CATEGORY, out_root)
    assert snapshot(out_root / CATEGORY) == first
    assert [p.name for p in out_root.iterdir()] == [CATEGORY]
    assert not (tmp_path / "evil").exists()

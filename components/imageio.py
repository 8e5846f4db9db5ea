"""Image reading and writing with errors that name the file.

PNG writing is deterministic (fixed compression, no timestamps), so the same
pixels always give the same bytes and DVC hashes stay stable across runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from components.fsutil import disk_full_error, is_disk_full


class ImageReadError(ValueError):
    """An image file that is missing, unreadable or not an image."""


def read_image(path: Path | str, mode: str | None = "RGB") -> np.ndarray:
    """Decode ``path`` fully (not just its header) and return an ``HxW[xC]`` uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            image.load()
            if mode is not None and image.mode != mode:
                image = image.convert(mode)
            return np.asarray(image).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from None


def read_mask(path: Path | str) -> np.ndarray:
    """Read a 0/255 mask as a boolean ``HxW`` array (any non-zero pixel is foreground)."""
    return read_image(path, mode="L") > 127


def image_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` from the header, raising :class:`ImageReadError` on a bad file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
        raise ImageReadError(f"{path}: cannot read image header ({error})") from None


PNG_COMPRESS_LEVEL = 1
"""zlib level of every PNG the project writes. Encoding is most of prepare's time: level 1
encodes a 256x256 part 5-6x faster than the default 6 for files 10-15% larger (measured on
MVTec transistor and on the large-data benchmark's pairs), and any fixed level keeps the
bytes deterministic."""


def write_png(path: Path | str, array: np.ndarray) -> None:
    """Write ``array`` (uint8 HxW or HxWx3) as a PNG with fixed settings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        Image.fromarray(np.ascontiguousarray(array)).save(
            path, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False
        )
    except OSError as error:
        if is_disk_full(error):  # PIL's error names no file; the user needs to know where it did not fit
            raise disk_full_error(error, path) from error
        raise

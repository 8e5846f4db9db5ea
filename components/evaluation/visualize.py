"""Pictures for evaluation reports: side-by-side overlays and the pixel PR curve.

The overlay uses only numpy and PIL so it also runs inside lean serving images and
data-loader workers. The PR plot uses matplotlib when it is importable and falls back
to a plain PIL line plot otherwise, so evaluation never fails for want of a plotting
library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PREDICTION_COLOR = (255, 0, 0)
TRUTH_COLOR = (0, 255, 0)
PANEL_TITLES = ("golden", "test", "prediction", "truth")


def to_uint8_rgb(image: Any) -> np.ndarray:
    """``HxWx3`` uint8 from uint8 or [0, 1] float images, ``HxW``, ``HxWxC`` or ``CxHxW`` (numpy or torch)."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an RGB or grey image, got shape {np.asarray(image).shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return array


def _to_mask(mask: Any) -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {array.shape}")
    return array != 0


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (image borders count as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def tint(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.4) -> np.ndarray:
    """Blend ``color`` into ``image`` inside ``mask`` and draw the mask's outline in full colour.

    The tint shows the area, the outline keeps small or thin regions visible at report size.
    """
    out = image.astype(np.float32).copy()
    out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
    out[mask_outline(mask)] = color
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay(
    golden: Any,
    test: Any,
    pred_mask: Any,
    true_mask: Any,
    gap: int = 4,
    alpha: float = 0.4,
    titles: bool = True,
) -> np.ndarray:
    """``golden | test | prediction (red) | truth (green)`` side by side as one uint8 HxWx3 image.

    Images may be uint8 or [0, 1] floats, channels first or last; masks any HxW array
    (non-zero is change). With ``titles`` a small caption strip is added on top.
    """
    golden_rgb, test_rgb = to_uint8_rgb(golden), to_uint8_rgb(test)
    pred, truth = _to_mask(pred_mask), _to_mask(true_mask)
    shapes = {golden_rgb.shape[:2], test_rgb.shape[:2], pred.shape, truth.shape}
    if len(shapes) != 1:
        raise ValueError(f"golden, test and masks must share one HxW size, got {sorted(shapes)}")
    panels = [
        golden_rgb,
        test_rgb,
        tint(test_rgb, pred, PREDICTION_COLOR, alpha),
        tint(test_rgb, truth, TRUTH_COLOR, alpha),
    ]
    height, width = test_rgb.shape[:2]
    separator = np.full((height, gap, 3), 255, dtype=np.uint8)
    row = np.concatenate([part for panel in panels for part in (panel, separator)][:-1], axis=1)
    if not titles:
        return row
    header = Image.new("RGB", (row.shape[1], 14), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    font = ImageFont.load_default()
    for index, title in enumerate(PANEL_TITLES):
        draw.text((index * (width + gap) + 2, 1), title, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(header), row], axis=0)


def plot_pr_curve(
    path: Path | str,
    precision: np.ndarray,
    recall: np.ndarray,
    average_precision: float | None = None,
    operating_point: tuple[float, float] | None = None,
    operating_label: str = "operating point",
) -> Path:
    """Write a precision-recall curve to ``path`` (PNG); ``operating_point`` is ``(recall, precision)``."""
    title = "pixel precision-recall"
    if average_precision is not None:
        title += f" (AP {100.0 * average_precision:.2f})"
    return plot_curve(path, recall, precision, title, "recall", "precision", operating_point, operating_label)


def plot_curve(
    path: Path | str,
    x: np.ndarray,
    y: np.ndarray,
    title: str,
    xlabel: str,
    ylabel: str,
    operating_point: tuple[float, float] | None = None,
    operating_label: str = "operating point",
    diagonal: bool = False,
) -> Path:
    """A curve in the unit square (PR, ROC) as a PNG; ``diagonal`` adds the chance line of a ROC plot."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on pipeline machines
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_with_pil(path, y, x, title, operating_point, xlabel=xlabel, ylabel=ylabel)
        return path
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    if diagonal:
        axes.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    axes.plot(x, y, color="tab:blue", linewidth=1.5, drawstyle="steps-post" if diagonal else "default")
    if operating_point is not None:
        axes.plot(*operating_point, "o", color="tab:red", label=operating_label)
        axes.legend(loc="lower right" if diagonal else "lower left")
    axes.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def _plot_with_pil(
    path: Path,
    precision: np.ndarray,
    recall: np.ndarray,
    title: str,
    operating_point: tuple[float, float] | None,
    size: int = 400,
    margin: int = 40,
    xlabel: str = "recall",
    ylabel: str = "precision",
) -> None:
    """Bare line plot: axes box, the curve, the operating point and a title."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    span = size - 2 * margin

    def to_xy(r: float, p: float) -> tuple[float, float]:
        return margin + r * span, size - margin - p * span

    draw.rectangle([margin, margin, size - margin, size - margin], outline=(0, 0, 0))
    finite = np.isfinite(recall) & np.isfinite(precision)
    points = [to_xy(float(r), float(p)) for r, p in zip(recall[finite], precision[finite], strict=True)]
    if len(points) > 1:
        draw.line(points, fill=(31, 119, 180), width=2)
    if operating_point is not None:
        x, y = to_xy(*operating_point)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(214, 39, 40))
    draw.text((margin, 10), title, fill=(0, 0, 0))
    draw.text((size // 2 - 15, size - margin + 10), xlabel, fill=(0, 0, 0))
    draw.text((4, margin - 14), ylabel, fill=(0, 0, 0))
    image.save(path, format="PNG")


__all__ = ["mask_outline", "overlay", "plot_curve", "plot_pr_curve", "tint", "to_uint8_rgb"]

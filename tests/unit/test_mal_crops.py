"""MAL's crop geometry: training/test crops, wrap-around cutting, box masks, pasting back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.models.mal.crops import (
    box_mask_in_crop,
    crop_and_resize,
    paste_mask,
    pixel_bounds,
    test_crop_box,
    train_crop_box,
)
from components.models.mal.metrics import mask_iou

BOX = np.array([20.0, 10.0, 60.0, 30.0])  # 40 x 20


def test_train_crops_are_one_to_one_point_six_times_the_box_and_contain_it() -> None:
    rng = np.random.default_rng(0)
    widths, heights, offsets = [], [], []
    for _ in range(2000):
        crop = train_crop_box(BOX, (0.0, 1.2), rng)
        assert crop[0] <= BOX[0] and crop[1] <= BOX[1] and crop[2] >= BOX[2] and crop[3] >= BOX[3]
        widths.append((crop[2] - crop[0]) / 40.0)
        heights.append((crop[3] - crop[1]) / 20.0)
        offsets.append((BOX[0] - crop[0]) / (crop[2] - crop[0] - 40.0 + 1e-9))
    for ratios in (np.array(widths), np.array(heights)):
        assert ratios.min() >= 1.0 - 1e-9 and ratios.max() <= 1.6 + 1e-9
        assert ratios.min() < 1.05 and ratios.max() > 1.5  # the whole range is used
        assert ratios.mean() == pytest.approx(1.3, abs=0.02)  # E[m] * 1/2 per axis = 0.3
    # the box is jittered inside the crop: its left margin takes any share of the extra width
    assert np.percentile(offsets, 10) < 0.2 and np.percentile(offsets, 90) > 0.8


def test_train_crop_is_deterministic_given_the_generator() -> None:
    first = train_crop_box(BOX, (0.0, 1.2), np.random.default_rng(5))
    second = train_crop_box(BOX, (0.0, 1.2), np.random.default_rng(5))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(train_crop_box(BOX, (0.0, 0.0), np.random.default_rng(1)), BOX)


def test_test_crop_is_centred_and_1_3_times_the_box() -> None:
    crop = test_crop_box(BOX, 0.6)
    np.testing.assert_allclose(crop, [14.0, 7.0, 66.0, 33.0])  # 52 x 26 = 1.3 x (40 x 20)
    np.testing.assert_allclose((crop[:2] + crop[2:]) / 2, (BOX[:2] + BOX[2:]) / 2)


def test_zero_area_box_is_rejected() -> None:
    with pytest.raises(ValueError, match="zero area"):
        test_crop_box([5.0, 5.0, 5.0, 9.0])


def test_pixel_bounds_snap_outward() -> None:
    assert pixel_bounds([1.2, 2.0, 3.5, 4.0000001]) == (1, 2, 4, 4)
    assert pixel_bounds([-2.5, -0.5, 0.2, 0.3]) == (-3, -1, 1, 1)


def test_crop_and_resize_shapes_and_range() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    crop = crop_and_resize(image, [10, 5, 50, 25], 32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.float32
    assert crop.min() >= 0.0 and crop.max() <= 255.0
    mask = crop_and_resize(np.ones((40, 70), dtype=np.float32), [10, 5, 50, 25], 16)
    assert mask.shape == (16, 16)
    # an in-image crop at its own size is an exact cut
    np.testing.assert_array_equal(crop_and_resize(image, [10, 5, 42, 37], 32), image[5:37, 10:42].astype(np.float32))


def test_crop_wraps_around_the_left_edge() -> None:
    """A crop reaching 3 px past the left edge shows the image's 3 rightmost columns there."""
    image = np.zeros((8, 10, 3), dtype=np.uint8)
    image[:, -3:] = 200  # bright right border
    image[:, :2] = 50
    crop = crop_and_resize(image, [-3, 0, 5, 8], 8)  # exactly 8 x 8 pixels: no resampling
    np.testing.assert_array_equal(crop[:, :3], 200.0)
    np.testing.assert_array_equal(crop[:, 3:5], 50.0)
    np.testing.assert_array_equal(crop[:, 5:], 0.0)
    below = crop_and_resize(image[..., 0], [0, 6, 10, 10], 4 * 1)  # past the bottom: rows 0, 1 again
    assert below.shape == (4, 4)


def test_box_mask_in_crop_is_the_box_rectangle() -> None:
    crop = [10.0, 0.0, 50.0, 40.0]  # 40 x 40 crop, 1 crop pixel = 1.25 image px at size 32
    mask = box_mask_in_crop([20.0, 10.0, 40.0, 30.0], crop, 32)
    assert mask.shape == (32, 32) and mask.dtype == np.float32
    assert mask[16, 16] == 1.0 and mask[0, 0] == 0.0 and mask[31, 31] == 0.0
    assert mask.sum() == pytest.approx(16.0 * 16.0)  # 20 px box / 1.25 = 16 crop pixels per side
    ys, xs = np.nonzero(mask > 0.5)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (8, 23, 8, 23)


def test_box_mask_agrees_with_cropping_an_image_space_box_mask() -> None:
    box, crop = [12.0, 7.0, 37.0, 28.0], [5.0, 2.0, 45.0, 33.0]
    full = np.zeros((40, 50), dtype=np.float32)
    full[7:28, 12:37] = 1.0
    cut = crop_and_resize(full, crop, 20)
    assert np.abs(box_mask_in_crop(box, crop, 20) - cut).max() < 0.35  # edges only differ by resampling
    assert mask_iou(box_mask_in_crop(box, crop, 20) > 0.5, cut > 0.5) > 0.9


def _ellipse(height: int, width: int, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0


@pytest.mark.parametrize(
    ("centre", "radii", "size"),
    [
        ((30.0, 40.0), (12.0, 18.0), 64),  # inside the image, crop shrunk to 64
        ((6.0, 4.0), (6.0, 4.0), 64),  # touching the top-left corner: the crop wraps there
        ((58.0, 75.0), (5.0, 4.5), 32),  # bottom-right corner, crop enlarged
    ],
)
def test_crop_then_paste_round_trip(centre: tuple[float, float], radii: tuple[float, float], size: int) -> None:
    height, width = 64, 80
    mask = _ellipse(height, width, centre, radii)
    ys, xs = np.nonzero(mask)
    box = [xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0]
    crop = test_crop_box(box, 0.6)
    x0, y0, x1, y1 = pixel_bounds(crop)
    wraps = x0 < 0 or y0 < 0 or x1 > width or y1 > height
    assert wraps == (centre[0] < 10 or centre[0] > 55)
    # a wrapped crop carries pixels of the opposite border; the box mask zeroes them (as MAL does)
    crop_probs = crop_and_resize(mask.astype(np.float32), crop, size) * box_mask_in_crop(box, crop, size)
    back = paste_mask(crop_probs, crop, (height, width))
    assert back.shape == (height, width) and back.dtype == np.float32
    assert mask_iou(back > 0.5, mask) > 0.93
    assert np.abs(back - mask).mean() < 0.02
    # torch input works the same
    np.testing.assert_allclose(paste_mask(torch.from_numpy(crop_probs), crop, (height, width)), back)


def test_paste_drops_the_part_of_the_crop_outside_the_image() -> None:
    probs = np.ones((10, 10), dtype=np.float32)
    pasted = paste_mask(probs, [-5.0, -5.0, 5.0, 5.0], (20, 20))
    assert pasted[:5, :5].min() == 1.0
    assert pasted.sum() == pytest.approx(25.0)  # never wrapped to the far borders
    assert paste_mask(probs, [30.0, 30.0, 40.0, 40.0], (20, 20)).sum() == 0.0

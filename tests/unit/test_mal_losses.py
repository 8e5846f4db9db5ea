"""MAL's losses: dice, MIL projection, colour affinity, mean-field CRF, ramps."""

from __future__ import annotations

import pytest
import torch

from components.models.mal.losses import (
    color_affinity,
    crf_loss,
    dice_loss,
    linear_ramp,
    mean_field,
    mil_projection_loss,
)


def _box_mask(size: int = 16, box: tuple[int, int, int, int] = (4, 3, 12, 13)) -> torch.Tensor:
    x0, y0, x1, y1 = box
    mask = torch.zeros(1, 1, size, size)
    mask[..., y0:y1, x0:x1] = 1.0
    return mask


def test_dice_is_zero_for_a_perfect_match_and_one_for_disjoint_masks() -> None:
    target = _box_mask()
    assert dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-4)
    assert dice_loss(1.0 - target, target).item() == pytest.approx(1.0, abs=1e-6)
    batch = torch.cat([target, 1.0 - target])
    assert dice_loss(batch, torch.cat([target, target])).shape == (2,)


def test_mil_loss_is_near_zero_for_a_mask_filling_the_box() -> None:
    box = _box_mask().repeat(2, 1, 1, 1)
    assert mil_projection_loss(box, box).item() < 1e-3


def test_mil_loss_only_needs_every_row_and_column_hit() -> None:
    """A diagonal line through the box covers every row and column: the MIL bags are satisfied."""
    box = _box_mask(16, (4, 4, 12, 12))
    diagonal = torch.zeros_like(box)
    for i in range(4, 12):
        diagonal[..., i, i] = 1.0
    assert mil_projection_loss(diagonal, box).item() < 1e-3


def test_mil_loss_is_large_for_empty_or_overflowing_predictions() -> None:
    box = _box_mask()
    assert mil_projection_loss(torch.zeros_like(box), box).item() > 0.5
    assert mil_projection_loss(torch.ones_like(box), box).item() > 0.2  # margins are negative bags


def test_mil_loss_gradient_pushes_an_empty_prediction_up_inside_the_box() -> None:
    box = _box_mask()
    probs = torch.full_like(box, 0.2, requires_grad=True)
    mil_projection_loss(probs, box).backward()
    assert probs.grad is not None
    assert probs.grad[box.bool()].min() < 0  # descent increases the in-box probabilities


def test_color_affinity_is_one_for_equal_colours_zero_across_edges_and_outside() -> None:
    image = torch.zeros(1, 3, 6, 6)
    image[:, :, :, 3:] = 1.0  # an edge between columns 2 and 3
    affinity = color_affinity(image, zeta=0.1)
    assert affinity.shape == (1, 9, 6, 6)
    centre = 4
    assert torch.allclose(affinity[:, centre], torch.ones(1, 6, 6))
    # tap 5 is the right neighbour: same colour inside a half, ~0 across the edge
    assert affinity[0, 5, 2, 1].item() == pytest.approx(1.0)
    assert affinity[0, 5, 2, 2].item() < 1e-6
    # neighbours outside the image weigh nothing
    assert affinity[0, 0, 0, 0].item() == 0.0
    assert affinity[0, 8, 5, 5].item() == 0.0


def _two_colour_image(size: int = 16) -> torch.Tensor:
    image = torch.zeros(1, 3, size, size)
    image[:, 0, :, : size // 2] = 1.0  # red left half
    image[:, 2, :, size // 2 :] = 1.0  # blue right half
    return image


def test_mean_field_separates_two_colours_inside_the_box() -> None:
    """A barely informative start (0.5 +- 0.02, a few pixels wrong) becomes a clean red/blue split.

    The box covers the whole image, so only colour decides (no out-of-box background votes).
    """
    size = 16
    image = _two_colour_image(size)
    box = torch.ones(1, 1, size, size)
    init = torch.full((1, 1, size, size), 0.5)
    init[..., : size // 2] += 0.02
    init[..., size // 2 :] -= 0.02
    for row, col in ((4, 3), (9, 5), (12, 2)):  # isolated wrong votes on either side
        init[..., row, col] = 0.45
        init[..., row, size - 1 - col] = 0.55
    refined = mean_field(init, box, color_affinity(image, zeta=0.1), iterations=10)
    assert refined[..., : size // 2].min() > 0.5
    assert refined[..., size // 2 :].max() < 0.5
    assert refined.min() >= 0.1 - 1e-6 and refined.max() <= 0.9 + 1e-6  # the clamp


def test_mean_field_keeps_everything_outside_the_box_background() -> None:
    """A red object filling the left half of its box on blue ground; the start over-reaches the box."""
    size = 16
    image = torch.zeros(1, 3, size, size)
    image[:, 2] = 1.0
    image[:, :, 2:14, 2:8] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    box = _box_mask(size, (2, 2, 14, 14))
    init = torch.full((1, 1, size, size), 0.2)
    init[..., : size // 2] = 0.8
    refined = mean_field(init, box, color_affinity(image, zeta=0.1), iterations=10)[0, 0]
    inside = box.bool()[0, 0]
    red = image[0, 0].bool()
    assert refined[red].min() > 0.5
    assert refined[inside & ~red].max() < 0.5
    assert refined[~inside].max() <= 0.1 + 1e-6


def test_mean_field_has_no_gradient() -> None:
    init = torch.full((1, 1, 8, 8), 0.6, requires_grad=True)
    refined = mean_field(init, torch.ones(1, 1, 8, 8), color_affinity(torch.zeros(1, 3, 8, 8)), iterations=2)
    assert not refined.requires_grad


def test_crf_loss_teaches_the_student_the_colour_edge() -> None:
    """Student says 'the whole box'; the CRF target (from a teacher leaning red) is the red half."""
    size = 16
    image = _two_colour_image(size)
    box = _box_mask(size, (0, 0, 16, 16))
    student = torch.full((1, 1, size, size), 0.55, requires_grad=True)
    teacher = torch.full((1, 1, size, size), 0.45)
    teacher[..., : size // 2] = 0.6
    loss = crf_loss(student, teacher, image, box, zeta=0.1, iterations=10)
    loss.backward()
    assert 0.0 < loss.item() < 1.0
    assert student.grad is not None
    # descent raises the red half and lowers the blue half
    assert student.grad[..., : size // 2].mean() < 0 < student.grad[..., size // 2 :].mean()


def test_linear_ramp() -> None:
    assert linear_ramp(0, 10) == 0.0
    assert linear_ramp(5, 10) == pytest.approx(0.5)
    assert linear_ramp(50, 10) == 1.0
    assert linear_ramp(0, 0) == 1.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mil_projection_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))

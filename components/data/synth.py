"""Procedural stand-in for MVTec AD's ``transistor`` category: the pipeline's built-in default data.

Why it exists: the pipeline must run end to end (unit tests, CI, a first demo) with
no download. A transistor on a stripboard is drawn from signed distance fields, so
every defect mask is derived from the very geometry that was rendered (exact, no
hand labelling), and each part is rendered under TAO's four lighting conditions so
that the multi-light classification path has inputs too.

What varies between captures mirrors a real inspection station: a few pixels of
placement jitter, a degree or two of rotation, small part-to-part lead variation,
global gain/offset and white-balance drift, a slow illumination gradient, board
texture and sensor noise. A change model fed golden/test pairs therefore has to
learn the defect, not raw pixel differences.

Determinism: every sample draws from its own generator keyed by
``(seed, split, class, index)``, and each lighting condition's noise from one keyed
by the light as well, so changing counts, adding a defect kind or switching the
lights on or off leaves every other file byte-identical. The pixel maths uses only
``+ - * /``, ``sqrt``, ``min``/``max`` and cumulative sums on arrays (no
vectorised ``exp``/``sin``, whose SIMD variants may round differently per CPU), so
the bytes should also agree across machines with the same numpy and Pillow.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from components import __version__
from components.config import LIGHTING_CONDITIONS, SyntheticParams
from components.data.layout import GOOD
from components.fsutil import atomic_dir
from components.imageio import write_png

__all__ = ["MAIN_LIGHT", "synthesize_category"]

MAIN_LIGHT = "UniformLight"
"""The lighting condition whose rendering is also the category's main ``train/``/``test/`` image."""

Grid = tuple[np.ndarray, np.ndarray]
F32 = np.float32

# Colours (RGB, 0..255) as seen under the uniform light.
_COPPER = np.array([198, 126, 104], F32)
_SUBSTRATE = np.array([72, 52, 46], F32)
_HOLE = np.array([20, 17, 17], F32)
_PLASTIC = np.array([30, 29, 33], F32)
_SHEEN = np.array([80, 84, 104], F32)
_EXPOSED = np.array([122, 114, 106], F32)
_SCRATCH = np.array([150, 148, 146], F32)
_SILVER = np.array([160, 162, 168], F32)

# Geometry, as fractions of the image size.
_PITCH = 0.16  # stripboard hole pitch; also the outer leads' offset, so their tips meet holes
_TIP_Y = 0.31  # lead tips below the part origin (the case's bottom edge)


# --------------------------------------------------------------------------- scene description


@dataclass(frozen=True, eq=False)
class _Pose:
    """Where the part's local origin lies in the image (px) and its rotation (radians)."""

    cx: float
    cy: float
    angle: float


@dataclass(frozen=True, eq=False)
class _Damage:
    """A damaged area of the case, in part-local px: a blob (chip/notch) or a scratch path."""

    kind: str  # "chip": lighter exposed material, "notch": piece missing, "scratch": bright groove
    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0
    harmonics: tuple[tuple[int, float, float], ...] = ()  # (k, a*cos(phase), a*sin(phase))
    path: np.ndarray | None = None
    half_width: float = 0.0


@dataclass(frozen=True, eq=False)
class _Part:
    """One transistor in part-local px (origin near the case's bottom centre, y down)."""

    case_center: tuple[float, float]
    case_half: tuple[float, float]
    corner: float
    leads: tuple[np.ndarray, ...]  # polylines, (n, 2) each
    lead_half_width: float
    logo_center: tuple[float, float]
    logo_radius: float
    logo_half_width: float
    damage: _Damage | None = None


@dataclass(frozen=True, eq=False)
class _Board:
    """The stripboard of the whole category: fixed hole pitch and phase, a fixed texture."""

    pitch: float
    hole_radius: float
    gap_half_width: float
    phase: tuple[float, float]
    texture: np.ndarray  # HxW, roughly zero-mean, fixed in the image frame


@dataclass(frozen=True, eq=False)
class _Look:
    """Per-capture photometric drift: what a camera and lamp change between two shots."""

    gain: float
    offset: float
    white_balance: np.ndarray  # (3,)
    gradient: tuple[float, float]
    noise_sigma: float
    texture: np.ndarray  # HxW extra board texture of this capture


@dataclass(frozen=True)
class _Light:
    """How one lighting condition turns materials into pixels."""

    matte: float  # gain of diffuse surfaces (substrate, plastic)
    flat_metal: float  # gain of flat copper: high under on-axis light, low at grazing angles
    lead: float  # gain of the cylindrical leads
    specular: float  # strength of glints (lead crests, case sheen)
    rim: float  # brightness of height edges (grazing light)
    roughness: float  # how strongly board texture shows
    shadow: float
    shadow_shift: tuple[float, float]  # fraction of the image size
    tint: tuple[float, float, float]
    saturation: float


_LIGHTS: dict[str, _Light] = {
    "LowAngleLight": _Light(0.30, 0.28, 0.75, 0.55, 1.00, 3.0, 0.55, (0.022, 0.026), (1.06, 1.0, 0.9), 0.9),
    "SolderLight": _Light(0.35, 1.45, 1.45, 1.00, 0.12, 1.0, 0.15, (0.0, 0.004), (0.9, 0.97, 1.12), 1.0),
    "UniformLight": _Light(1.00, 1.00, 1.00, 0.35, 0.00, 1.0, 0.25, (0.006, 0.008), (1.0, 1.0, 1.0), 1.0),
    "WhiteLight": _Light(1.35, 1.25, 1.20, 0.60, 0.05, 0.8, 0.20, (0.004, 0.006), (1.0, 1.02, 1.06), 0.6),
}
assert set(_LIGHTS) == set(LIGHTING_CONDITIONS), "one rendering model per lighting condition"


# --------------------------------------------------------------------------- seeding


def _key(*parts: str) -> int:
    """A stable 64-bit key for a name (Python's ``hash`` is salted per process, so unusable)."""
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "little")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator per (seed, keys): one sample's draws never shift another's."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=keys))


# --------------------------------------------------------------------------- geometry primitives


def _grid(size: int) -> Grid:
    """Pixel-centre coordinates ``(x, y)``; computed once per category."""
    centres = np.arange(size, dtype=F32) + F32(0.5)
    x, y = np.meshgrid(centres, centres)
    return x, y


def _to_local(grid: Grid, pose: _Pose) -> Grid:
    """Image px to part-local px (inverse rotation about the pose centre)."""
    c, s = F32(math.cos(pose.angle)), F32(math.sin(pose.angle))
    dx, dy = grid[0] - F32(pose.cx), grid[1] - F32(pose.cy)
    return c * dx + s * dy, c * dy - s * dx


def _polyline_distance(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance to a polyline's segments: leads and scratches are thick polylines."""
    best: np.ndarray | None = None
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        dx, dy = F32(bx - ax), F32(by - ay)
        length2 = max(float(dx * dx + dy * dy), 1e-6)
        px, py = x - F32(ax), y - F32(ay)
        t = np.clip((px * dx + py * dy) / F32(length2), 0, 1)
        ex, ey = px - t * dx, py - t * dy
        dist = np.sqrt(ex * ex + ey * ey)
        best = dist if best is None else np.minimum(best, dist)
    assert best is not None, "a polyline needs at least two points"
    return best


def _round_rect_sdf(x: np.ndarray, y: np.ndarray, part: _Part) -> np.ndarray:
    """Signed distance (px, negative inside) to the case's rounded rectangle."""
    (cx, cy), (hw, hh), r = part.case_center, part.case_half, part.corner
    qx = np.abs(x - F32(cx)) - F32(hw - r)
    qy = np.abs(y - F32(cy)) - F32(hh - r)
    ox, oy = np.maximum(qx, 0), np.maximum(qy, 0)
    return np.sqrt(ox * ox + oy * oy) + np.minimum(np.maximum(qx, qy), 0) - F32(r)


def _blob_sdf(x: np.ndarray, y: np.ndarray, damage: _Damage) -> np.ndarray:
    """Approximate signed distance to an irregular blob ``r <= R(1 + sum a_k cos(k t + p_k))``.

    ``cos(k t)``/``sin(k t)`` come from powers of the unit vector, avoiding ``atan2``/``cos``.
    """
    dx, dy = x - F32(damage.center[0]), y - F32(damage.center[1])
    r = np.sqrt(dx * dx + dy * dy)
    inv = 1 / np.maximum(r, F32(1e-3))
    ux, uy = dx * inv, dy * inv
    wobble = np.ones_like(r)
    cos_k, sin_k = ux, uy
    for k in range(1, max((h[0] for h in damage.harmonics), default=0) + 1):
        if k > 1:
            cos_k, sin_k = cos_k * ux - sin_k * uy, sin_k * ux + cos_k * uy
        for hk, ac, as_ in damage.harmonics:
            if hk == k:  # a cos(k t + p) = a cos p cos kt - a sin p sin kt
                wobble += F32(ac) * cos_k - F32(as_) * sin_k
    return r - F32(damage.radius) * wobble


def _damage_sdf(x: np.ndarray, y: np.ndarray, damage: _Damage) -> np.ndarray:
    if damage.kind == "scratch":
        assert damage.path is not None
        return _polyline_distance(x, y, damage.path) - F32(damage.half_width)
    return _blob_sdf(x, y, damage)


def _coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage; ``>= 0.5`` exactly where ``sdf <= 0``, so masks match pixels."""
    return np.clip(F32(0.5) - sdf, 0, 1)


def _split_polyline(points: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut a polyline at ``fraction`` of its length: (head, tail), sharing the cut point."""
    seg = np.diff(points, axis=0)
    lengths = np.sqrt((seg**2).sum(axis=1))
    target = fraction * float(lengths.sum())
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    i = int(np.searchsorted(cumulative, target, side="right") - 1)
    i = min(max(i, 0), len(seg) - 1)
    t = (target - cumulative[i]) / max(lengths[i], 1e-9)
    cut = points[i] + t * seg[i]
    head = np.vstack([points[: i + 1], cut])
    tail = np.vstack([cut, points[i + 1 :]])
    return head, tail


def _rotate_about(points: np.ndarray, pivot: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    d = points - pivot
    return pivot + np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], axis=1)


# --------------------------------------------------------------------------- sampling the scene


def _make_board(seed: int, size: int) -> _Board:
    """The category's board: fixed for all captures, like the fixture of a real station.

    Its hole grid is aligned so that the nominal lead tips sit in holes, as on a real board.
    """
    rng = _rng(seed, _key("board"))
    texture = 0.05 * _smooth_noise(rng, size, 6) + 0.025 * _smooth_noise(rng, size, 24)
    texture += 0.02 * rng.standard_normal((size, size), dtype=F32)
    return _Board(
        pitch=_PITCH * size,
        hole_radius=0.033 * size,
        gap_half_width=max(0.012 * size, 0.6),
        phase=(0.5 * size, (0.5 + _TIP_Y) * size),
        texture=texture.astype(F32),
    )


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise: a coarse random grid, smoothstep-interpolated (only + and *)."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(F32)
    t = (np.arange(size, dtype=F32) + F32(0.5)) * F32(cells / size)
    i0 = np.minimum(np.floor(t).astype(np.int64), cells - 1)
    w = t - i0.astype(F32)
    w = w * w * (3 - 2 * w)
    rows = coarse[i0] * (1 - w)[:, None] + coarse[i0 + 1] * w[:, None]
    return rows[:, i0] * (1 - w)[None, :] + rows[:, i0 + 1] * w[None, :]


def _make_part(rng: np.random.Generator, size: int) -> _Part:
    """A nominal TO-92 transistor with the small lead variation of real, hand-bent parts."""
    s = float(size)

    def jitter(scale: float) -> float:
        return float(rng.uniform(-scale, scale)) * s

    half = (0.19 * s + jitter(0.003), 0.19 * s + jitter(0.003))
    top, tip_y, spread = -0.03 * s, _TIP_Y * s, 0.105 * s
    leads: list[np.ndarray] = []
    for side in (-1, 0, 1):
        if side == 0:
            points = [(jitter(0.003), top), (jitter(0.005), tip_y + jitter(0.01))]
        else:
            foot_x = side * _PITCH * s + jitter(0.006)
            points = [
                (side * spread, top),
                (side * spread + jitter(0.003), 0.05 * s + jitter(0.01)),
                (foot_x, 0.13 * s + jitter(0.01)),
                (foot_x + jitter(0.006), tip_y + jitter(0.01)),
            ]
        leads.append(np.array(points, dtype=np.float64))
    return _Part(
        case_center=(0.0, -half[1]),
        case_half=half,
        corner=0.035 * s,
        leads=tuple(leads),
        lead_half_width=max(0.015 * s, 0.75),
        logo_center=(0.0, -0.22 * s),
        logo_radius=0.045 * s,
        logo_half_width=max(0.004 * s, 0.5),
    )


def _make_pose(rng: np.random.Generator, size: int) -> _Pose:
    """Placement jitter of a few px and a couple of degrees, scaled with the image."""
    px = size / 256
    return _Pose(
        cx=size / 2 + float(rng.uniform(-3, 3)) * px,
        cy=size / 2 + float(rng.uniform(-3, 3)) * px,
        angle=math.radians(float(rng.uniform(-2.5, 2.5))),
    )


def _make_look(rng: np.random.Generator, size: int) -> _Look:
    return _Look(
        gain=float(rng.uniform(0.9, 1.1)),
        offset=float(rng.uniform(-6, 6)),
        white_balance=rng.uniform(0.97, 1.03, 3).astype(F32),
        gradient=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.06, 0.06))),
        noise_sigma=float(rng.uniform(1.5, 3.0)),
        texture=(0.02 * _smooth_noise(rng, size, 8)).astype(F32),
    )


# --------------------------------------------------------------------------- defects

_Defect = Callable[[np.random.Generator, _Part, _Pose, Grid], tuple["_Part | None", _Pose, np.ndarray]]


def _footprint(part: _Part, pose: _Pose, grid: Grid) -> np.ndarray:
    """Pixels covered by the intact part (case or a lead) at ``pose``."""
    x, y = _to_local(grid, pose)
    lead = np.minimum.reduce([_polyline_distance(x, y, lead) for lead in part.leads])
    return (_round_rect_sdf(x, y, part) <= 0) | (lead <= part.lead_half_width)


def _bent_lead(rng: np.random.Generator, part: _Part, pose: _Pose, grid: Grid) -> tuple[_Part, _Pose, np.ndarray]:
    """One lead bent sideways below a point; the mask is where it is and where it should be."""
    index = int(rng.integers(len(part.leads)))
    head, tail = _split_polyline(part.leads[index], float(rng.uniform(0.4, 0.65)))
    angle = math.radians(float(rng.uniform(25, 55))) * float(rng.choice([-1.0, 1.0]))
    bent = _rotate_about(tail, tail[0], angle)
    leads = list(part.leads)
    leads[index] = np.vstack([head, bent[1:]])
    x, y = _to_local(grid, pose)
    hw = part.lead_half_width
    mask = (_polyline_distance(x, y, tail) <= hw) | (_polyline_distance(x, y, bent) <= hw)
    return replace(part, leads=tuple(leads)), pose, mask


def _cut_lead(rng: np.random.Generator, part: _Part, pose: _Pose, grid: Grid) -> tuple[_Part, _Pose, np.ndarray]:
    """The lower part of one lead is missing; the mask is exactly the missing metal."""
    index = int(rng.integers(len(part.leads)))
    original = part.leads[index]
    kept, _ = _split_polyline(original, float(rng.uniform(0.35, 0.7)))
    leads = list(part.leads)
    leads[index] = kept
    x, y = _to_local(grid, pose)
    hw = part.lead_half_width
    mask = (_polyline_distance(x, y, original) <= hw) & (_polyline_distance(x, y, kept) > hw)
    return replace(part, leads=tuple(leads)), pose, mask


def _point_on_case_edge(rng: np.random.Generator, part: _Part) -> tuple[float, float]:
    (cx, cy), (hw, hh) = part.case_center, part.case_half
    side = str(rng.choice(["top", "left", "right", "bottom"], p=[0.45, 0.2, 0.2, 0.15]))
    along = float(rng.uniform(-0.85, 0.85))
    if side in ("top", "bottom"):
        return cx + along * hw, cy + (-hh if side == "top" else hh)
    return cx + (-hw if side == "left" else hw), cy + along * hh


def _damaged_case(rng: np.random.Generator, part: _Part, pose: _Pose, grid: Grid) -> tuple[_Part, _Pose, np.ndarray]:
    """A chip (lighter material), notch (piece missing) or scratch on the case; mask = damage within the case."""
    s = float(grid[0].shape[0])
    kind = str(rng.choice(["chip", "notch", "scratch"], p=[0.4, 0.3, 0.3]))
    if kind == "scratch":
        (cx, cy), (hw, hh) = part.case_center, part.case_half
        point = np.array([cx + rng.uniform(-0.6, 0.6) * hw, cy + rng.uniform(-0.6, 0.6) * hh])
        heading = float(rng.uniform(0, 2 * math.pi))
        points = [point]
        for _ in range(int(rng.integers(3, 6))):
            heading += float(rng.uniform(-0.6, 0.6))
            step = float(rng.uniform(0.035, 0.065)) * s
            point = point + step * np.array([math.cos(heading), math.sin(heading)])
            points.append(point)
        damage = _Damage("scratch", path=np.array(points), half_width=max(0.0065 * s, 0.8))
    else:
        edge = np.array(_point_on_case_edge(rng, part))
        inward = np.array(part.case_center) - edge
        inward /= max(float(np.linalg.norm(inward)), 1e-9)
        radius = float(rng.uniform(0.05, 0.09)) * s
        center = edge + inward * radius * float(rng.uniform(0.0, 0.45))
        harmonics = []
        for k in (2, 3, 5):
            amplitude, phase = float(rng.uniform(0, 0.18)), float(rng.uniform(0, 2 * math.pi))
            harmonics.append((k, amplitude * math.cos(phase), amplitude * math.sin(phase)))
        damage = _Damage(kind, center=(float(center[0]), float(center[1])), radius=radius, harmonics=tuple(harmonics))
    damaged = replace(part, damage=damage)
    x, y = _to_local(grid, pose)
    mask = (_round_rect_sdf(x, y, part) <= 0) & (_damage_sdf(x, y, damage) <= 0)
    return damaged, pose, mask


def _misplaced(
    rng: np.random.Generator, part: _Part, pose: _Pose, grid: Grid
) -> tuple[_Part | None, _Pose, np.ndarray]:
    """Part missing, shifted or turned; the mask is the union of expected and actual footprints (as in MVTec)."""
    size = grid[0].shape[0]
    expected = _footprint(part, pose, grid)
    mode = str(rng.choice(["missing", "shifted", "turned"], p=[0.15, 0.55, 0.3]))
    if mode == "missing":
        return None, pose, expected
    sign = float(rng.choice([-1.0, 1.0]))
    if mode == "shifted":
        turn, distance = math.radians(float(rng.uniform(6, 30))) * sign, float(rng.uniform(0.08, 0.18)) * size
    else:
        turn, distance = math.radians(float(rng.uniform(100, 180))) * sign, float(rng.uniform(0.0, 0.05)) * size
    direction = float(rng.uniform(0, 2 * math.pi))
    low, high = 0.36 * size, 0.64 * size
    moved = _Pose(
        cx=min(max(pose.cx + distance * math.cos(direction), low), high),
        cy=min(max(pose.cy + distance * math.sin(direction), low), high),
        angle=pose.angle + turn,
    )
    return part, moved, expected | _footprint(part, moved, grid)


_DEFECTS: dict[str, _Defect] = {
    "bent_lead": _bent_lead,
    "cut_lead": _cut_lead,
    "damaged_case": _damaged_case,
    "misplaced": _misplaced,
}


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, eq=False)
class _Surface:
    """Light-independent weight maps of one capture (HxW each), shared by its four renderings.

    A rendering is ``sum(weight * colour)`` with per-light colours, so each extra light
    costs a handful of array operations instead of a full re-composite.
    """

    copper: np.ndarray  # visible copper strip
    substrate: np.ndarray  # visible board between strips
    hole: np.ndarray  # visible drilled hole
    board_texture: np.ndarray
    shadow: np.ndarray  # blurred part footprint, shifted per light
    lead: np.ndarray  # visible lead, darker at its flanks
    glint: np.ndarray  # crest highlight of the leads
    plastic: np.ndarray  # case body, darker towards its sides
    sheen: np.ndarray  # glossy band and top edge of the case
    logo: np.ndarray
    exposed: np.ndarray | None  # chipped material (chip damage only)
    scratch: np.ndarray | None  # scratch groove (scratch damage only)
    rim: np.ndarray  # height edges, lit by grazing light


def _board_fields(board: _Board, offset: tuple[float, float], grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the gaps between copper strips and of the drilled holes."""
    p = F32(board.pitch)
    bx = np.mod(grid[0] - F32(board.phase[0] + offset[0]) + p / 2, p) - p / 2  # 0 on a hole column
    by = np.mod(grid[1] - F32(board.phase[1] + offset[1]) + p / 2, p) - p / 2
    gap = _coverage(np.abs(p / 2 - np.abs(bx)) - F32(board.gap_half_width))  # gaps midway between columns
    hole = _coverage(np.sqrt(bx * bx + by * by) - F32(board.hole_radius))
    return gap, hole


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur via cumulative sums (edge-padded); twice approximates a Gaussian."""
    out = image
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius + 1, radius)
        summed = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis, dtype=F32)
        n = summed.shape[axis]
        hi = summed[2 * radius + 1 :] if axis == 0 else summed[:, 2 * radius + 1 :]
        lo = summed[: n - 2 * radius - 1] if axis == 0 else summed[:, : n - 2 * radius - 1]
        out = (hi - lo) / F32(2 * radius + 1)
    return out


def _shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by whole pixels, repeating the border (for cast shadows)."""
    if dx == 0 and dy == 0:
        return image
    size_y, size_x = image.shape
    padded = np.pad(image, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    return padded[abs(dy) - dy : abs(dy) - dy + size_y, abs(dx) - dx : abs(dx) - dx + size_x]


def _rim(height: np.ndarray) -> np.ndarray:
    """Edge strength of a height map (0..1), brighter on edges facing the light (upper left)."""
    h = _box_blur(height, 1)
    gx = np.zeros_like(h)
    gy = np.zeros_like(h)
    gx[:, 1:-1] = (h[:, 2:] - h[:, :-2]) / 2
    gy[1:-1, :] = (h[2:, :] - h[:-2, :]) / 2
    magnitude = np.sqrt(gx * gx + gy * gy)
    facing = (gx * F32(-0.6) + gy * F32(-0.8)) / np.maximum(magnitude, F32(1e-6))
    return np.clip(magnitude * F32(2.5), 0, 1) * (F32(0.6) + F32(0.4) * facing)


@dataclass(frozen=True, eq=False)
class _PartFields:
    """Coverages and shading terms of the part itself (all zero when the part is missing)."""

    lead: np.ndarray
    crest: np.ndarray  # 1 on a lead's centre line, 0 at its edge (cylinder normal)
    case: np.ndarray
    falloff: np.ndarray
    sheen: np.ndarray
    logo: np.ndarray
    exposed: np.ndarray | None
    grain: np.ndarray | None
    scratch: np.ndarray | None


def _part_fields(part: _Part | None, pose: _Pose, grid: Grid, rng: np.random.Generator) -> _PartFields:
    zeros = np.zeros_like(grid[0])
    if part is None:
        return _PartFields(zeros, zeros, zeros, zeros, zeros, zeros, None, None, None)
    x, y = _to_local(grid, pose)
    lead_dist = np.minimum.reduce([_polyline_distance(x, y, points) for points in part.leads])
    across = np.minimum(lead_dist / F32(part.lead_half_width), 1)
    case_sdf = _round_rect_sdf(x, y, part)
    u = (x - F32(part.case_center[0])) / F32(part.case_half[0])
    v = (y - F32(part.case_center[1])) / F32(part.case_half[1])
    band = np.maximum(1 - ((u + F32(0.35)) / F32(0.22)) ** 2, 0)
    top = np.maximum(1 - ((v + F32(0.96)) / F32(0.05)) ** 2, 0)
    lx, ly = x - F32(part.logo_center[0]), y - F32(part.logo_center[1])
    ring = np.abs(np.sqrt(lx * lx + ly * ly) - F32(part.logo_radius)) - F32(part.logo_half_width)
    exposed = grain = scratch = None
    damage = part.damage
    if damage is not None:
        damage_sdf = _damage_sdf(x, y, damage)
        if damage.kind == "notch":
            case_sdf = np.maximum(case_sdf, -damage_sdf)
        elif damage.kind == "chip":
            exposed = _coverage(damage_sdf)
            grain = F32(0.15) * rng.standard_normal(zeros.shape, dtype=F32)
        else:
            scratch = _coverage(damage_sdf)
    u2 = u * u
    return _PartFields(
        lead=_coverage(lead_dist - F32(part.lead_half_width)),
        crest=np.sqrt(1 - across * across),
        case=_coverage(case_sdf),
        falloff=1 - F32(0.45) * u2 * u2,
        sheen=band * band * F32(0.8) + top * F32(0.6),
        logo=_coverage(ring),
        exposed=exposed,
        grain=grain,
        scratch=scratch,
    )


def _surface(
    part: _Part | None, pose: _Pose, board: _Board, look: _Look, grid: Grid, rng: np.random.Generator
) -> _Surface:
    """Rasterise one capture's geometry into the weight maps every light combines."""
    size = grid[0].shape[0]
    px = size / 256
    offset = (float(rng.uniform(-1.5, 1.5)) * px, float(rng.uniform(-1.5, 1.5)) * px)
    gap, hole = _board_fields(board, offset, grid)
    f = _part_fields(part, pose, grid, rng)
    visible_board = (1 - f.lead) * (1 - f.case)
    visible_lead = f.lead * (1 - f.case)
    body = f.case  # case minus damage overlays
    exposed = scratch = None
    relief = (F32(0.06) * (1 - gap) - F32(0.25) * hole) * visible_board
    height = relief + F32(0.5) * visible_lead + f.case + F32(0.08) * f.logo * f.case
    if f.exposed is not None and f.grain is not None:
        exposed = f.case * f.exposed
        body = body * (1 - f.exposed)
        height = height - F32(0.35) * exposed
        exposed = exposed * (1 + f.grain)
    if f.scratch is not None:
        scratch = f.case * f.scratch
        body = body * (1 - f.scratch)
        height = height - F32(0.25) * scratch
    crest2 = f.crest * f.crest
    crest8 = crest2 * crest2
    crest8 = crest8 * crest8
    blur = max(1, round(0.012 * size))
    return _Surface(
        copper=visible_board * (1 - gap) * (1 - hole),
        substrate=visible_board * gap * (1 - hole),
        hole=visible_board * hole,
        board_texture=board.texture + look.texture,
        shadow=_box_blur(_box_blur(np.maximum(f.lead, f.case), blur), blur),
        lead=visible_lead * (F32(0.35) + F32(0.65) * f.crest),
        glint=visible_lead * crest8,
        plastic=body * f.falloff,
        sheen=body * f.sheen,
        logo=body * f.logo,
        exposed=exposed,
        scratch=scratch,
        rim=_rim(height),
    )


def _light_colour(colour: np.ndarray | tuple[float, float, float], light: _Light, look: _Look) -> np.ndarray:
    """Apply the light's saturation and tint and the camera's gain and white balance to a colour."""
    c = np.asarray(colour, F32)
    gray = (c[0] + c[1] + c[2]) / F32(3)
    c = gray + F32(light.saturation) * (c - gray)
    return c * np.array(light.tint, F32) * look.white_balance * F32(look.gain)


def _render(surface: _Surface, look: _Look, light: _Light, rng: np.random.Generator) -> np.ndarray:
    """One capture under one light: sum of material weights times lit colours, then camera effects."""
    size = surface.copper.shape[0]
    dx, dy = round(light.shadow_shift[0] * size), round(light.shadow_shift[1] * size)
    lit = (1 - F32(light.shadow) * _shift(surface.shadow, dx, dy)) * (1 + F32(light.roughness) * surface.board_texture)
    white = F32(255)
    terms: list[tuple[np.ndarray, np.ndarray | tuple[float, float, float]]] = [
        (surface.copper * lit, _COPPER * F32(light.flat_metal)),
        (surface.substrate * lit, _SUBSTRATE * F32(light.matte)),
        (surface.hole * lit, _HOLE * F32(light.matte)),
        (surface.lead, _SILVER * F32(light.lead)),
        (surface.plastic, _PLASTIC * F32(light.matte)),
        (surface.sheen, _SHEEN * F32(light.specular)),
    ]
    gray = surface.glint * F32(0.6 * light.specular) + surface.logo * F32(14 / 255 * light.matte)
    if light.rim:
        gray = gray + surface.rim * F32(0.9 * light.rim)
    terms.append((gray, (white, white, white)))
    if surface.exposed is not None:
        terms.append((surface.exposed, _EXPOSED * F32(light.matte)))
    if surface.scratch is not None:
        terms.append((surface.scratch, _SCRATCH * F32(0.5 * light.matte + 0.5 * light.specular)))
    image = np.zeros((size, size, 3), F32)
    for weight, colour in terms:
        image += weight[..., None] * _light_colour(colour, light, look)
    return _camera(image, look, rng)


def _camera(image: np.ndarray, look: _Look, rng: np.random.Generator) -> np.ndarray:
    """A slow illumination gradient, offset drift, sensor noise and quantisation."""
    size = image.shape[0]
    ramp = (np.arange(size, dtype=F32) + F32(0.5)) / F32(size) - F32(0.5)
    shading = 1 + F32(look.gradient[0]) * ramp[None, :] + F32(look.gradient[1]) * ramp[:, None]
    image *= shading[..., None]
    image += rng.standard_normal(image.shape, dtype=F32) * F32(look.noise_sigma) + F32(look.offset)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- writing the category


@dataclass(frozen=True)
class _Item:
    split: str
    label: str
    index: int
    width: int  # digits of the file name

    @property
    def stem(self) -> str:
        return f"{self.index:0{self.width}d}"


def _plan(params: SyntheticParams) -> list[_Item]:
    """Every file to write, in a fixed order: train good, test good, then each defect kind."""
    groups = [("train", GOOD, params.num_train_good), ("test", GOOD, params.num_test_good)]
    groups += [("test", kind, params.num_defect_per_kind) for kind in params.defect_kinds]
    items: list[_Item] = []
    for split, label, count in groups:
        width = max(3, len(str(count - 1)))
        items.extend(_Item(split, label, i, width) for i in range(count))
    return items


def _write_item(
    root: Path, item: _Item, seed: int, size: int, board: _Board, grid: Grid, lights: tuple[str, ...]
) -> None:
    """Render one capture under every requested light and write image(s) and mask."""
    sample_key = _key(item.split, item.label, str(item.index))
    rng = _rng(seed, sample_key)
    part: _Part | None = _make_part(rng, size)
    pose = _make_pose(rng, size)
    look = _make_look(rng, size)
    mask: np.ndarray | None = None
    if item.label != GOOD:
        assert part is not None
        part, pose, mask = _DEFECTS[item.label](rng, part, pose, grid)
    surface = _surface(part, pose, board, look, grid, rng)

    main = root / item.split / item.label / f"{item.stem}.png"
    for light in lights:
        image = _render(surface, look, _LIGHTS[light], _rng(seed, sample_key, _key("light", light)))
        if lights == (MAIN_LIGHT,):
            write_png(main, image)
            continue
        path = root / "lights" / light / item.split / item.label / f"{item.stem}.png"
        write_png(path, image)
        if light == MAIN_LIGHT:  # same bytes, without encoding twice
            main.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, main)
    if mask is not None:
        write_png(root / "ground_truth" / item.label / f"{item.stem}_mask.png", mask.astype(np.uint8) * 255)


def _readme(category: str, params: SyntheticParams, seed: int, lights: tuple[str, ...]) -> str:
    settings = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return (
        f"Synthetic category '{category}' in the MVTec AD layout.\n"
        f"Procedurally generated by inspectops {__version__} (components.data.synth) with seed {seed}.\n"
        "No real images: a transistor-like part on a stripboard, drawn from geometry, so masks are exact.\n"
        f"Lighting conditions rendered: {', '.join(lights)}; train/ and test/ hold the {MAIN_LIGHT} rendering.\n"
        f"Parameters: {settings}\n"
    )


@contextmanager
def _progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """A rich progress bar when asked for; rich is imported only then (not a hard dependency)."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def synthesize_category(
    out_dir: Path, category: str, params: SyntheticParams, seed: int, progress: bool = False
) -> dict[str, int]:
    """Generate a transistor-like category in the MVTec AD layout at ``out_dir`` (replacing it atomically).

    Writes ``train/good``, ``test/good``, ``test/<kind>`` with ``ground_truth/<kind>/<id>_mask.png``,
    ``readme.txt`` and, when ``params.render_lighting``, ``lights/<Light>/<split>/<class>/<id>.png``
    for each of :data:`~components.config.LIGHTING_CONDITIONS` (the main image is byte-identical
    to the :data:`MAIN_LIGHT` one). Same seed and params give byte-identical files.

    Returns counts: ``train_good``, ``test_good``, ``test_defect``, ``images`` (main images,
    train + test), ``masks`` and ``light_images`` (0 without lighting).
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    size = params.image_size
    lights = LIGHTING_CONDITIONS if params.render_lighting else (MAIN_LIGHT,)
    items = _plan(params)
    grid = _grid(size)
    board = _make_board(seed, size)
    with atomic_dir(out_dir) as staging, _progress_bar(progress, len(items), f"synthesizing {category}") as advance:
        for item in items:
            _write_item(staging, item, seed, size, board, grid, lights)
            advance()
        (staging / "readme.txt").write_text(_readme(category, params, seed, lights))
    test_defect = params.num_defect_per_kind * len(params.defect_kinds)
    images = params.num_train_good + params.num_test_good + test_defect
    return {
        "train_good": params.num_train_good,
        "test_good": params.num_test_good,
        "test_defect": test_defect,
        "images": images,
        "masks": test_defect,
        "light_images": images * len(LIGHTING_CONDITIONS) if params.render_lighting else 0,
    }

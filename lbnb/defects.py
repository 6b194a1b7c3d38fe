"""Defect families painted onto float RGB images, each returning the exact pixel mask.

Every family takes an image ``(H, W, 3)`` float32 in [0, 1] and returns ``(image, mask)`` with
``mask`` (H, W) bool marking the pixels the defect visibly changed. Parameters are given by a
:class:`DefectSpec`; sizes are fractions of the image side so a category looks the same at any
resolution. Two shapes cover the seven families:

- **lines** — ``scratch`` (smooth thin stroke) and ``crack`` (jagged dark stroke with branches);
- **blobs** — ``hole`` (missing material: what lies below shows through — darkness, a bright
  backlight with ``extra={"fill": "bright"}``, or the background of an object — with a dark rim),
  ``stain`` (soft multiplicative tint with uneven density), ``cutpaste`` (a foreign photograph),
  ``blur`` (local loss of focus) and ``discolor`` (colour / brightness shift).

``support`` (H, W) bool restricts where a defect may appear (the object of an object category);
``anchor`` (H, W) bool, when given, is where blob centres are drawn (e.g. an object's rim, so a
hole bites into the edge); ``below`` (H, W, 3) is what a hole reveals (background or darkness).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

FAMILIES = ("scratch", "crack", "hole", "stain", "cutpaste", "blur", "discolor")
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class DefectSpec:
    """One recurring defect type of a category (its appearance stays consistent across samples).

    ``size`` is the (min, max) length of a line or radius of a blob, as a fraction of the image
    side; ``width`` the (min, max) stroke width in pixels at 128 px (scaled with the image);
    ``color`` an RGB target for lines, ``tint`` RGB gains for stains/discolouration;
    ``strength`` the blend weight; ``fill_gain`` scales the foreign photo of ``cutpaste``.
    """

    family: str
    size: tuple[float, float] = (0.08, 0.14)
    width: tuple[float, float] = (1.5, 2.5)
    color: tuple[float, float, float] = (0.9, 0.9, 0.9)
    tint: tuple[float, float, float] = (0.6, 0.55, 0.5)
    strength: float = 0.85
    blur_sigma: float = 3.0
    aspect: tuple[float, float] = (0.6, 1.0)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown defect family {self.family!r}; choose from {FAMILIES}")


def apply_defect(image: np.ndarray, spec: DefectSpec, rng: np.random.Generator, *,
                 support: np.ndarray | None = None, anchor: np.ndarray | None = None,
                 below: np.ndarray | None = None, foreign: np.ndarray | None = None,
                 max_tries: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of ``spec`` onto a copy of ``image``; returns (image, mask).

    Retries a few placements until the mask is non-empty (at least 0.1 % of the image).
    """
    h, w = image.shape[:2]
    support = np.ones((h, w), bool) if support is None else support
    anchor = support if anchor is None else anchor
    for _ in range(max_tries):
        if spec.family in ("scratch", "crack"):
            out, mask = _line_defect(image, spec, rng, support)
        else:
            out, mask = _blob_defect(image, spec, rng, support, anchor, below, foreign)
        if mask.sum() >= max(4, 0.001 * h * w):
            return out, mask
    raise RuntimeError(f"could not place a {spec.family} defect inside the support after {max_tries} tries")


# -- lines ---------------------------------------------------------------------------------------
def _random_point(rng: np.random.Generator, where: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """A (y, x) point drawn uniformly among True pixels of ``where``, away from the border."""
    h, w = where.shape
    m = int(margin * min(h, w))
    inner = where.copy()
    if m:
        inner[:m], inner[-m:], inner[:, :m], inner[:, -m:] = False, False, False, False
    ys, xs = np.nonzero(inner if inner.any() else where)
    k = rng.integers(len(ys))
    return np.array([ys[k] + rng.random(), xs[k] + rng.random()])


def _polyline(rng, start, length, n_steps, wiggle) -> np.ndarray:
    """(n_steps+1, 2) points of a random walk of total ``length`` whose heading drifts by ``wiggle``."""
    heading = rng.uniform(0, 2 * np.pi)
    turns = np.cumsum(rng.normal(0, wiggle, n_steps))
    steps = np.stack([np.sin(heading + turns), np.cos(heading + turns)], 1) * (length / n_steps)
    return np.vstack([start, start + np.cumsum(steps, 0)])


def _rasterize_lines(lines: list[np.ndarray], widths: list[float], shape) -> np.ndarray:
    """Anti-aliased coverage (H, W) in [0, 1] of polylines drawn on a supersampled canvas."""
    h, w = shape
    canvas = Image.new("L", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, width in zip(lines, widths):
        xy = [(float(x * _SUPERSAMPLE), float(y * _SUPERSAMPLE)) for y, x in pts]
        draw.line(xy, fill=255, width=max(1, int(round(width * _SUPERSAMPLE))), joint="curve")
    return np.asarray(canvas.resize((w, h), Image.BOX), np.float32) / 255.0


def _line_defect(image, spec, rng, support):
    h, w = image.shape[:2]
    side = min(h, w)
    scale = side / 128.0
    jagged = spec.family == "crack"
    start = _random_point(rng, support, margin=0.1)
    length = rng.uniform(*spec.size) * side
    n_steps = 24 if jagged else 8
    main = _polyline(rng, start, length, n_steps, 0.45 if jagged else 0.12)
    lines, widths = [main], [rng.uniform(*spec.width) * scale]
    for _ in range(int(spec.extra.get("branches", 0))):
        root = main[rng.integers(n_steps // 4, n_steps)]
        lines.append(_polyline(rng, root, length * rng.uniform(0.25, 0.45), n_steps // 2, 0.5))
        widths.append(widths[0] * 0.7)
    alpha = _rasterize_lines(lines, widths, (h, w)) * support
    color = np.asarray(spec.color, np.float32)
    out = image * (1 - spec.strength * alpha[..., None]) + color * (spec.strength * alpha[..., None])
    return out, alpha > 0.3


# -- blobs ---------------------------------------------------------------------------------------
def blob_alpha(shape, center, radius, rng, *, aspect=(0.6, 1.0), roughness=0.25, softness=1.0):
    """Soft coverage (H, W) in [0, 1] of an irregular blob: an ellipse whose radius wobbles with
    low harmonics of the polar angle; ``softness`` is the edge ramp in pixels."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rot = rng.uniform(0, np.pi)
    ratio = rng.uniform(*aspect)
    dy, dx = yy - center[0], xx - center[1]
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / ratio
    dist, theta = np.hypot(u, v), np.arctan2(v, u)
    wobble = np.ones_like(theta)
    for k in range(2, 6):
        wobble += rng.normal(0, roughness / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    edge = radius * np.clip(wobble, 0.4, 1.8)
    return np.clip((edge - dist) / max(softness, 1e-3) + 0.5, 0, 1).astype(np.float32)


def _blob_defect(image, spec, rng, support, anchor, below, foreign):
    h, w = image.shape[:2]
    side = min(h, w)
    center = _random_point(rng, anchor, margin=0.08 if anchor is support else 0.0)
    radius = rng.uniform(*spec.size) * side
    soft = {"stain": 3.0, "blur": 3.0, "discolor": 2.0}.get(spec.family, 0.8) * side / 128
    alpha = blob_alpha((h, w), center, radius, rng, aspect=spec.aspect, softness=soft) * support
    family = spec.family
    if family == "hole":
        if below is not None:
            fill = below
        elif spec.extra.get("fill") == "bright":  # a tear in a thin layer shows the bright slide below
            fill = 1.0 - _darkness(image, rng)
        else:
            fill = _darkness(image, rng)
        rim = np.clip(ndimage.gaussian_filter(alpha, 1.0) - alpha, 0, 1)[..., None]
        out = image * (1 - alpha[..., None]) + fill * alpha[..., None]
        out = out * (1 - 0.6 * rim)
        return out, alpha > 0.5
    if family == "stain":
        density = 0.6 + 0.4 * _smooth_noise(rng, (h, w), sigma=radius / 3)
        a = (alpha * density * spec.strength)[..., None]
        out = image * (1 - a) + image * np.asarray(spec.tint, np.float32) * a
        return out, alpha > 0.5
    if family == "cutpaste":
        if foreign is None:
            raise ValueError("cutpaste needs a foreign photograph")
        patch = foreign * spec.extra.get("fill_gain", 1.0)
        patch = patch - patch.mean() + image.mean() + spec.extra.get("fill_offset", 0.0)
        out = image * (1 - alpha[..., None]) + patch * alpha[..., None]
        return out, alpha > 0.5
    if family == "blur":
        fill = ndimage.gaussian_filter(image, (spec.blur_sigma * side / 128,) * 2 + (0,))
    else:  # discolor
        fill = image * np.asarray(spec.tint, np.float32) + spec.extra.get("offset", 0.0)
    a = (alpha * spec.strength)[..., None]
    return image * (1 - a) + fill * a, alpha > 0.5


def _darkness(image, rng):
    """What an empty hole in a flat texture looks like: deep shadow with faint grain."""
    h, w = image.shape[:2]
    return (0.06 + 0.03 * rng.random((h, w, 1), dtype=np.float32)).repeat(3, axis=2)


def _smooth_noise(rng, shape, sigma):
    """Smooth noise (H, W) rescaled to [0, 1]."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), max(sigma, 1.0))
    return (n - n.min()) / (np.ptp(n) + 1e-8)

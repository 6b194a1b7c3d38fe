"""The embedded benchmark: real photographs shipped with scikit-image, real-looking defects.

Five categories, generated offline in 1–3 s each (200 train + 180 test images at 160 px):

- ``brick``, ``grass``, ``gravel`` — grayscale texture photographs (512 px, CC0);
- ``tissue`` — the colour immunohistochemistry photograph (glands and stroma);
- ``washer`` — a rendered metal washer with a key notch and two bolt holes, whose surface grain
  is a real photograph, under pose jitter (free rotation, shift, scale).

Normal variation: crop position, small rotation, gain/gamma/white balance, sensor noise.
Train crops and test crops come from **disjoint regions** of each photograph (diagonal quadrants,
no leakage). Each category has four recurring defect types of consistent appearance (see
``CATEGORIES``), drawn from six of the seven families of :mod:`lbnb.defects`, each with its exact
pixel mask.

Why the natural textures are photographed softly (``optics_sigma``): a 512 px photograph holds only
a few crops' worth of unique grass or gravel per split, so at full sharpness every test crop is
grain-level novel and a memory bank cannot tell a new stone from a defect (measured: PatchCore
I-AUROC 0.54–0.56 on sharp grass/gravel). A camera blur of 2 px keeps the structure and the
defects and removes the detail no small training set can cover (0.96 with the same detector).

Every sample has its own seed derived from (random_state, category, split, type, index), so a
sample does not change when the counts around it change.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .defects import DefectSpec, apply_defect
from .imageset import GOOD, ImageSet

Region = tuple[int, int, int, int]  # rows [r0, r1), cols [c0, c1) of the source photograph


@dataclass(frozen=True)
class Category:
    """How one embedded category is made.

    ``source``: scikit-image photograph name; ``crop``: side of the source window in source
    pixels (resized to ``image_size``); ``train_regions`` / ``test_regions``: disjoint source
    rectangles; ``rotation``: max |angle| in degrees; ``defects``: defect type → spec;
    ``foreign``: photograph used by ``cutpaste``; ``render``: "crop" or "washer";
    ``optics_sigma``: blur (source pixels) of the camera that photographs the part — a natural
    texture photographed this softly keeps its structure but loses the grain-level detail that no
    small training set can cover.
    """

    source: str
    crop: int
    train_regions: tuple[Region, ...]
    test_regions: tuple[Region, ...]
    defects: dict[str, DefectSpec]
    rotation: float = 4.0
    foreign: str = "gravel"
    render: str = "crop"
    colour_jitter: float = 0.0
    optics_sigma: float = 0.0
    extra: dict = field(default_factory=dict)


# Train and test come from diagonal quadrants (a 2x2 checkerboard with a 12 px gap): a lighting or
# perspective gradient across the photograph then affects both splits alike.
_TRAIN_Q = ((0, 250, 0, 250), (262, 512, 262, 512))
_TEST_Q = ((0, 250, 262, 512), (262, 512, 0, 250))
CATEGORIES: dict[str, Category] = {
    "brick": Category("brick", 150, _TRAIN_Q, _TEST_Q, foreign="grass", optics_sigma=1.0, defects={
        "scratch": DefectSpec("scratch", size=(0.35, 0.6), width=(1.2, 2.0), color=(0.92,) * 3, strength=0.75),
        "crack": DefectSpec("crack", size=(0.25, 0.45), width=(1.0, 1.6), color=(0.05,) * 3, strength=0.9,
                            extra={"branches": 1}),
        "hole": DefectSpec("hole", size=(0.05, 0.09)),
        "stain": DefectSpec("stain", size=(0.08, 0.14), tint=(0.45,) * 3, strength=0.9),
    }),
    "grass": Category("grass", 150, _TRAIN_Q, _TEST_Q, foreign="gravel", optics_sigma=2.0, defects={
        "cutpaste": DefectSpec("cutpaste", size=(0.07, 0.12)),
        "discolor": DefectSpec("discolor", size=(0.09, 0.15), tint=(1.45,) * 3, strength=0.9, extra={"offset": 0.05}),
        "bare": DefectSpec("hole", size=(0.06, 0.1)),
        "stain": DefectSpec("stain", size=(0.09, 0.14), tint=(0.3,) * 3, strength=0.9),
    }),
    "gravel": Category("gravel", 150, _TRAIN_Q, _TEST_Q, foreign="brick", optics_sigma=2.0, defects={
        "cutpaste": DefectSpec("cutpaste", size=(0.07, 0.12)),
        "stain": DefectSpec("stain", size=(0.08, 0.14), tint=(0.35,) * 3, strength=0.9),
        "hole": DefectSpec("hole", size=(0.05, 0.09)),
        "scratch": DefectSpec("scratch", size=(0.4, 0.7), width=(1.5, 2.5), color=(0.97,) * 3, strength=0.8),
    }),
    "tissue": Category("immunohistochemistry", 140, _TRAIN_Q, _TEST_Q, rotation=6.0, foreign="hubble_deep_field",
                       colour_jitter=0.03, optics_sigma=2.5, defects={
        "ink": DefectSpec("stain", size=(0.08, 0.13), tint=(0.25, 0.12, 0.45), strength=0.9),
        "tear": DefectSpec("hole", size=(0.05, 0.09), extra={"fill": "bright"}),
        "fold": DefectSpec("scratch", size=(0.45, 0.75), width=(2.5, 3.5), color=(0.35, 0.18, 0.15), strength=0.75),
        "overstain": DefectSpec("discolor", size=(0.1, 0.15), tint=(1.0, 0.45, 0.35), strength=0.9),
    }),
    "washer": Category("gravel", 150, _TRAIN_Q, _TEST_Q, render="washer", rotation=180.0, foreign="brick",
                       colour_jitter=0.02, defects={
        "scratch": DefectSpec("scratch", size=(0.15, 0.3), width=(0.8, 1.3), color=(0.98, 0.98, 0.95),
                              strength=0.5),
        "bite": DefectSpec("hole", size=(0.03, 0.05), aspect=(0.8, 1.0)),
        "rust": DefectSpec("discolor", size=(0.05, 0.08), tint=(0.95, 0.7, 0.5), strength=0.6),
        "oil": DefectSpec("stain", size=(0.06, 0.09), tint=(0.45, 0.45, 0.5), strength=0.85),
    }),
}


def embedded_categories() -> list[str]:
    """Names of the embedded benchmark's categories."""
    return list(CATEGORIES)


@lru_cache(maxsize=16)
def _photo(name: str) -> np.ndarray:
    """A scikit-image photograph as (H, W, C) float32 in [0, 1], C = 1 (grayscale) or 3.

    These photographs ship inside the scikit-image wheel: nothing is downloaded."""
    import skimage.data

    img = getattr(skimage.data, name)()
    img = img[..., None] if img.ndim == 2 else img[..., :3]
    img = img.astype(np.float32) / 255.0
    img.setflags(write=False)
    return img


@lru_cache(maxsize=32)
def _prefiltered(name: str, crop: int, size: int, optics_sigma: float = 0.0) -> np.ndarray:
    """The photograph low-passed for sampling a ``crop``-pixel window at ``size`` pixels: the camera's
    ``optics_sigma`` combined with anti-aliasing (sigma = 0.5 x the shrink factor when shrinking)."""
    photo = _photo(name)
    alias = 0.5 * crop / size if crop > size else 0.0
    sigma = float(np.hypot(alias, optics_sigma))
    if sigma == 0:
        return photo
    out = ndimage.gaussian_filter(photo, (sigma, sigma, 0))
    out.setflags(write=False)
    return out


def _rotated_crop(photo, regions, crop, size, max_rot, rng) -> np.ndarray:
    """(size, size, 3) crop of a ``crop``-pixel window, rotated, lying wholly inside one region.

    ``photo`` (H, W, C) is sampled bilinearly; pass it through :func:`_prefiltered` when shrinking."""
    areas = np.array([(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in regions], float)
    r0, r1, c0, c1 = regions[rng.choice(len(regions), p=areas / areas.sum())]
    angle = np.deg2rad(rng.uniform(-max_rot, max_rot))
    half = 0.5 * crop * (abs(np.cos(angle)) + abs(np.sin(angle))) if max_rot < 45 else crop / np.sqrt(2)
    # bilinear sampling at position p reads pixels floor(p) and floor(p) + 1 < r1
    if r1 - r0 < 2 * half + 2 or c1 - c0 < 2 * half + 2:
        raise ValueError(f"region {(r0, r1, c0, c1)} is too small for a {crop}px window")
    cy, cx = rng.uniform(r0 + half, r1 - 1 - half), rng.uniform(c0 + half, c1 - 1 - half)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    v, u = np.meshgrid(t * crop, t * crop, indexing="ij")
    ys = cy + v * np.cos(angle) - u * np.sin(angle)
    xs = cx + v * np.sin(angle) + u * np.cos(angle)
    out = np.stack([ndimage.map_coordinates(photo[..., c], [ys, xs], order=1, mode="reflect")
                    for c in range(photo.shape[2])], axis=2)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def _lighting(img, rng, colour_jitter):
    """Gain, gamma, white balance and sensor noise: the normal variation of a production line."""
    gain = rng.uniform(0.9, 1.1)
    gamma = rng.uniform(0.9, 1.1)
    balance = 1 + rng.uniform(-colour_jitter, colour_jitter, 3).astype(np.float32)
    out = np.clip(img, 0, 1) ** gamma * gain * balance
    return out + 0.008 * rng.standard_normal(img.shape, dtype=np.float32)


_WASHER_R_IN, _WASHER_R_OUT = 0.28, 0.72


@lru_cache(maxsize=1)
def _washer_template(n: int = 512):
    """The washer in its own frame on an (n, n) grid over [-1, 1]²: (solid, d height/dy, d height/dx).

    Annulus with a key notch on the inner edge (at angle 0) and two bolt holes; the height is a
    saturating distance to the nearest edge, so edges are bevelled.
    """
    t = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1
    y, x = np.meshgrid(t, t, indexing="ij")
    r = np.hypot(x, y)
    solid = (r > _WASHER_R_IN) & (r < _WASHER_R_OUT)
    solid &= ~((x > 0) & (np.abs(y) < 0.07) & (r < _WASHER_R_IN + 0.1))
    for ang in (2 * np.pi / 3, 4 * np.pi / 3):
        solid &= np.hypot(x - 0.5 * np.cos(ang), y - 0.5 * np.sin(ang)) >= 0.055
    height = np.tanh(ndimage.distance_transform_edt(solid) * (2 / n) / 0.04) * 0.06
    gy, gx = np.gradient(height, 2 / n)
    return solid.astype(np.float32), gy.astype(np.float32), gx.astype(np.float32)


def _render_washer(grain, size, rng):
    """A washer with free pose: returns (image (S,S,3), object mask, rim anchor, background).

    ``grain`` (S, S, 3) is a real photograph that modulates the metal's albedo (it is cropped with
    the pose's rotation, so it turns with the part).
    """
    solid_t, gy_t, gx_t = _washer_template()
    n = solid_t.shape[0]
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(t, t, indexing="ij")
    phi = rng.uniform(0, 2 * np.pi)
    scale = rng.uniform(0.96, 1.04)
    cy, cx = rng.uniform(-0.05, 0.05, 2)
    c, s = np.cos(phi), np.sin(phi)
    y = ((yy - cy) * c - (xx - cx) * s) / scale  # object-frame coordinates of each output pixel
    x = ((yy - cy) * s + (xx - cx) * c) / scale
    idx = [(y + 1) * n / 2 - 0.5, (x + 1) * n / 2 - 0.5]
    cover, gy, gx = (ndimage.map_coordinates(a, idx, order=1, mode="constant") for a in (solid_t, gy_t, gx_t))
    wy, wx = (c * gy + s * gx) / scale, (-s * gy + c * gx) / scale  # gradient in the image frame
    norm = np.sqrt(wx ** 2 + wy ** 2 + 1)
    light = np.array([-0.45, -0.55, 0.7]) / np.linalg.norm([-0.45, -0.55, 0.7])
    half = (light + [0, 0, 1]) / np.linalg.norm(light + [0, 0, 1])
    diffuse = np.clip((-wx * light[0] - wy * light[1] + light[2]) / norm, 0, 1)
    spec = np.clip((-wx * half[0] - wy * half[1] + half[2]) / norm, 0, 1) ** 24
    texture = grain.mean(axis=2)
    albedo = 0.78 + 0.35 * (texture - texture.mean())
    metal = (0.3 + 0.6 * diffuse * albedo)[..., None] * np.array([0.85, 0.84, 0.8], np.float32) \
        + 0.35 * spec[..., None]
    background = (0.15 + 0.04 * (yy + xx))[..., None] * np.array([0.95, 1.0, 1.05], np.float32)
    img = background + cover[..., None] * (metal - background)
    mask = cover > 0.5
    rim = mask & ~ndimage.binary_erosion(mask, iterations=2)
    outer = np.hypot(yy - cy, xx - cx) > (_WASHER_R_IN + _WASHER_R_OUT) / 2 * scale
    return img.astype(np.float32), mask, rim & outer, background.astype(np.float32)


def _seed(random_state: int, *parts) -> np.random.Generator:
    key = [int(random_state)] + [zlib.crc32(str(p).encode()) for p in parts]
    return np.random.default_rng(key)


def _sample(cat_name, cat, split, kind, index, size, random_state):
    """One sample: (image uint8 (S,S,3), mask (S,S) bool)."""
    rng = _seed(random_state, cat_name, split, kind, index)
    regions = cat.train_regions if split == "train" else cat.test_regions
    max_rot = 0.0 if cat.render == "washer" else cat.rotation
    base = _rotated_crop(_prefiltered(cat.source, cat.crop, size, cat.optics_sigma), regions, cat.crop, size, max_rot, rng)
    support = anchor = below = None
    if cat.render == "washer":
        base, support, rim, below = _render_washer(base, size, rng)
        anchor = rim if kind == "bite" else ndimage.binary_erosion(support, iterations=3)
        support = support if kind == "bite" else ndimage.binary_erosion(support, iterations=1)
    mask = np.zeros((size, size), bool)
    if kind != GOOD:
        spec = cat.defects[kind]
        foreign = None
        if spec.family == "cutpaste":
            foreign = _rotated_crop(_prefiltered(cat.foreign, cat.crop, size), ((0, 512, 0, 512),), cat.crop, size,
                                    0.0, rng)
        base, mask = apply_defect(base, spec, rng, support=support, anchor=anchor, below=below,
                                  foreign=foreign)
    img = _lighting(base, rng, cat.colour_jitter)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8), mask


def _build(cat_name, cat, split, counts, size, random_state, defect_types):
    images, masks, ids, kinds = [], [], [], []
    for kind, n in counts:
        for i in range(n):
            img, mask = _sample(cat_name, cat, split, kind, i, size, random_state)
            images.append(img); masks.append(mask)
            ids.append(f"{cat_name}/{split}/{kind}/{i:03d}"); kinds.append(kind)
    if images:
        images, masks = np.stack(images), np.stack(masks)
    else:  # an empty split
        images, masks = np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), bool)
    kinds = np.array(kinds, dtype=str)
    return ImageSet(images, (kinds != GOOD).astype(np.int8), masks, np.array(ids, dtype=str),
                    kinds, cat_name, {"source": "embedded", "random_state": random_state})


def load_embedded(category: str, random_state: int = 0, *, image_size: int = 160, n_train: int = 200,
                  n_test_good: int = 60, n_test_per_type: int = 30,
                  defect_types: list[str] | None = None) -> tuple[ImageSet, ImageSet]:
    """Generate one embedded category as ``(train, test)``.

    train: ``n_train`` normal images (N, S, S, 3) uint8 with S = ``image_size``;
    test: ``n_test_good`` normals then ``n_test_per_type`` anomalies of each defect type, with masks.
    Deterministic for a given ``random_state``.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown embedded category {category!r}; choose from {embedded_categories()}")
    if not 32 <= int(image_size) <= 1024:
        raise ValueError(f"image_size must be between 32 and 1024 pixels, got {image_size}")
    for name, n in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_per_type", n_test_per_type)):
        if int(n) < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    cat = CATEGORIES[category]
    kinds = list(cat.defects) if defect_types is None else list(defect_types)
    unknown = [k for k in kinds if k not in cat.defects]
    if unknown:
        raise ValueError(f"unknown defect types {unknown} for {category!r}; it has {list(cat.defects)}")
    size = int(image_size)
    train = _build(category, cat, "train", [(GOOD, n_train)], size, random_state, kinds)
    test = _build(category, cat, "test", [(GOOD, n_test_good)] + [(k, n_test_per_type) for k in kinds],
                  size, random_state, kinds)
    return train, test

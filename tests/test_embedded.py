"""Tests for lbnb.embedded (+ lbnb.defects): the offline benchmark built from scikit-image photographs."""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pytest
from scipy import ndimage

import lbnb.embedded as embedded
from lbnb import data
from lbnb.defects import FAMILIES
from lbnb.embedded import CATEGORIES, _rotated_crop, embedded_categories, load_embedded
from lbnb.imageset import GOOD

CATS = embedded_categories()
SMALL = dict(n_train=6, n_test_good=3, n_test_per_type=2)


@lru_cache(maxsize=None)
def small(category, random_state=0, image_size=160):
    return load_embedded(category, random_state, image_size=image_size, **SMALL)


# -- catalogue -----------------------------------------------------------------------------------------
def test_catalogue():
    assert len(CATS) >= 5 and {"brick", "grass", "gravel"} <= set(CATS)
    assert CATS == list(CATEGORIES) and len(set(CATS)) == len(CATS)
    assert data.embedded_categories() == CATS and data.load_embedded is load_embedded


def test_defect_families_are_varied():
    families = {spec.family for cat in CATEGORIES.values() for spec in cat.defects.values()}
    assert len(families) >= 5 and families <= set(FAMILIES)
    for name, cat in CATEGORIES.items():
        assert len(cat.defects) >= 3, name
        assert GOOD not in cat.defects, name


# -- per-category content ------------------------------------------------------------------------------
@pytest.mark.parametrize("category", CATS)
def test_category_content(category):
    train, test = small(category)
    kinds = list(CATEGORIES[category].defects)
    assert train.images.shape == (6, 160, 160, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (3 + 2 * len(kinds), 160, 160, 3) and test.images.dtype == np.uint8
    assert train.masks.shape == (6, 160, 160) and test.masks.dtype == bool
    assert train.category == test.category == category
    assert train.meta["source"] == "embedded"
    # counts, labels and types agree
    assert train.summary() == {"good": 6}
    assert test.summary() == {"good": 3, **{k: 2 for k in kinds}}
    for s in (train, test):
        np.testing.assert_array_equal(s.labels, (s.defect_types != "good").astype(np.int8))
    # masks: empty exactly for normal samples, a visible area for anomalies
    for s in (train, test):
        area = s.masks.mean(axis=(1, 2))
        assert (area[s.labels == 0] == 0).all()
        assert (area[s.labels == 1] >= 0.001).all()
        assert (area[s.labels == 1] < 0.25).all()
    # ids: unique, "<cat>/<split>/<type>/<NNN>", and matching the sample's split and type
    all_ids = train.ids.tolist() + test.ids.tolist()
    assert len(set(all_ids)) == len(all_ids)
    for split, s in (("train", train), ("test", test)):
        for sid, kind in zip(s.ids.tolist(), s.defect_types.tolist()):
            m = re.fullmatch(r"([a-z]+)/(train|test)/([a-z]+)/(\d{3})", sid)
            assert m and m.groups()[:3] == (category, split, kind), sid
    # normal test images come first, then each type in catalogue order
    assert test.defect_types.tolist() == ["good"] * 3 + [k for k in kinds for _ in range(2)]
    # images use a real dynamic range (not blank or saturated)
    assert 20 < train.images.mean() < 235 and train.images.std() > 10


@pytest.mark.parametrize("category", CATS)
def test_normal_variation_exists(category):
    train, _ = small(category)
    imgs = train.images.astype(np.float32)
    diffs = [np.abs(imgs[i] - imgs[j]).mean() for i in range(6) for j in range(i + 1, 6)]
    assert min(diffs) > 3  # no two training images are (nearly) the same
    brightness = imgs.mean(axis=(1, 2, 3))
    assert brightness.std() > 0.5


# -- determinism and stability ----------------------------------------------------------------------------
@pytest.mark.parametrize("category", ["brick", "washer"])
def test_same_seed_same_data_other_seed_other_data(category):
    a_tr, a_te = load_embedded(category, 7, **SMALL)
    b_tr, b_te = load_embedded(category, 7, **SMALL)
    for x, y in ((a_tr, b_tr), (a_te, b_te)):
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.masks, y.masks)
        assert x.ids.tolist() == y.ids.tolist()
    c_tr, c_te = load_embedded(category, 8, **SMALL)
    assert c_tr.ids.tolist() == a_tr.ids.tolist()
    per_image = np.abs(c_tr.images.astype(float) - a_tr.images).mean(axis=(1, 2, 3))
    assert (per_image > 3).all()
    anomalous = c_te.labels == 1
    assert (c_te.masks[anomalous] != a_te.masks[anomalous]).any(axis=(1, 2)).all()


def test_a_sample_does_not_depend_on_the_counts():
    tr3, te3 = load_embedded("grass", n_train=3, n_test_good=1, n_test_per_type=1)
    tr6, te6 = small("grass")
    np.testing.assert_array_equal(tr3.images, tr6.images[:3])
    for sid in te3.ids.tolist():
        np.testing.assert_array_equal(te3.select_ids([sid]).images, te6.select_ids([sid]).images)
        np.testing.assert_array_equal(te3.select_ids([sid]).masks, te6.select_ids([sid]).masks)
    # choosing a subset of defect types does not change the samples of the others either
    _, only = load_embedded("grass", n_train=1, n_test_good=0, n_test_per_type=2, defect_types=["bare"])
    assert only.defect_types.tolist() == ["bare", "bare"]
    np.testing.assert_array_equal(only.images, te6.select_ids(only.ids.tolist()).images)


@pytest.mark.parametrize("image_size", [128, 256])
def test_other_image_sizes(image_size):
    train, test = load_embedded("tissue", image_size=image_size, n_train=2, n_test_good=1, n_test_per_type=1)
    assert train.image_size == test.image_size == (image_size, image_size)
    assert test.masks.shape == (5, image_size, image_size)
    area = test.masks.mean(axis=(1, 2))
    assert area[0] == 0 and (area[1:] >= 0.001).all() and (area[1:] < 0.25).all()
    assert train.images.std() > 10


# -- argument checking -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, pattern", [
    (dict(category="carpet"), r"category 'carpet'.*brick"),
    (dict(defect_types=["scratch", "dent"]), r"defect.types.*'dent'"),
    (dict(image_size=16), r"image_size.*16"),
    (dict(image_size=4096), r"image_size.*4096"),
    (dict(n_train=-1), r"n_train.*-1"),
    (dict(n_test_good=-2), r"n_test_good.*-2"),
    (dict(n_test_per_type=-1), r"n_test_per_type.*-1"),
])
def test_bad_arguments_raise_valueerror_naming_them(kwargs, pattern):
    kwargs = {"category": "brick", **kwargs}
    with pytest.raises(ValueError, match=pattern):
        load_embedded(**kwargs)


def test_zero_counts_give_empty_sets():
    train, test = load_embedded("brick", n_train=0, n_test_good=1, n_test_per_type=1)
    assert len(train) == 0 and train.images.shape == (0, 160, 160, 3)
    assert len(test) == 5


# -- no leakage between train and test ------------------------------------------------------------------------
def _overlap(a, b):
    (ar0, ar1, ac0, ac1), (br0, br1, bc0, bc1) = a, b
    return max(ar0, br0) < min(ar1, br1) and max(ac0, bc0) < min(ac1, bc1)


@pytest.mark.parametrize("category", CATS)
def test_train_and_test_regions_are_disjoint(category):
    cat = CATEGORIES[category]
    h, w = embedded._photo(cat.source).shape[:2]
    assert cat.train_regions and cat.test_regions
    for r in cat.train_regions + cat.test_regions:
        assert 0 <= r[0] < r[1] <= h and 0 <= r[2] < r[3] <= w, r
    for a in cat.train_regions:
        for b in cat.test_regions:
            assert not _overlap(a, b), (a, b)


def test_overlap_helper():
    assert _overlap((0, 10, 0, 10), (5, 15, 5, 15))
    assert not _overlap((0, 10, 0, 10), (10, 20, 0, 10))  # half-open: touching is fine
    assert not _overlap((0, 10, 0, 10), (0, 10, 10, 20))


def _indicator(regions, inside=1.0):
    photo = np.full((512, 512, 1), 1.0 - inside, np.float32)
    for r0, r1, c0, c1 in regions:
        photo[r0:r1, c0:c1] = inside
    return photo


def _crop_args(cat):
    return cat.crop, (0.0 if cat.render == "washer" else cat.rotation)


N_SEEDS = 150


@pytest.mark.parametrize("category", CATS)
def test_crops_never_read_the_other_split(category):
    """The photo is 0 on the other split's regions and 1 elsewhere: every crop pixel must be 1."""
    cat = CATEGORIES[category]
    crop, max_rot = _crop_args(cat)
    for own, other in ((cat.train_regions, cat.test_regions), (cat.test_regions, cat.train_regions)):
        photo = _indicator(other, inside=0.0)
        for size in (160, 64):
            for seed in range(N_SEEDS):
                out = _rotated_crop(photo, own, crop, size, max_rot, np.random.default_rng(seed))
                assert out.shape == (size, size, 3)
                assert out.min() == 1.0, (own, size, seed)


def test_crops_stay_inside_their_region():
    """The photo is 1 inside the split's regions and 0 elsewhere: every crop pixel must be 1."""
    bad = []
    for name, cat in CATEGORIES.items():
        crop, max_rot = _crop_args(cat)
        for split, regions in (("train", cat.train_regions), ("test", cat.test_regions)):
            photo = _indicator(regions)
            for seed in range(N_SEEDS):
                out = _rotated_crop(photo, regions, crop, 160, max_rot, np.random.default_rng(seed))
                if out.min() < 1.0:
                    bad.append((name, split, seed, float(out.min())))
    assert not bad, f"{len(bad)} crops read outside their region, e.g. {bad[:3]}"


def test_crop_sampler_detects_a_window_outside_the_region():
    """The indicator check above is sensitive: a crop of a region smaller than its window fails."""
    with pytest.raises(ValueError, match="too small"):
        _rotated_crop(_indicator(((0, 100, 0, 100),)), ((0, 100, 0, 100),), 150, 64, 0.0, np.random.default_rng(0))
    photo = _indicator(((0, 512, 0, 300),))  # crops drawn from the whole photo do leave that region
    mins = [_rotated_crop(photo, ((0, 512, 0, 512),), 150, 64, 0.0, np.random.default_rng(s)).min()
            for s in range(20)]
    assert min(mins) == 0.0


# -- defects: the mask is where the image changed --------------------------------------------------------------
@lru_cache(maxsize=None)
def with_and_without_defects(category, n=3):
    """(test, counterfactual): the counterfactual is the same samples generated with the defect
    drawn (so every random number stays the same) but not painted."""
    real = embedded.apply_defect
    _, test = load_embedded(category, n_train=1, n_test_good=0, n_test_per_type=n)

    def unpainted(image, spec, rng, **kwargs):
        _, mask = real(image, spec, rng, **kwargs)
        return image, mask

    embedded.apply_defect = unpainted
    try:
        _, counterfactual = load_embedded(category, n_train=1, n_test_good=0, n_test_per_type=n)
    finally:
        embedded.apply_defect = real
    return test, counterfactual


def _gradient_energy(gray, where):
    gy, gx = np.gradient(gray)
    return float(np.hypot(gy, gx)[where].mean())


@pytest.mark.parametrize("category", CATS)
def test_defects_change_the_image_where_the_mask_is(category):
    test, cf = with_and_without_defects(category)
    assert test.ids.tolist() == cf.ids.tolist()
    np.testing.assert_array_equal(test.masks, cf.masks)
    for kind, spec in CATEGORIES[category].defects.items():
        sel = np.flatnonzero(test.defect_types == kind)
        recall = []
        for i in sel:
            img, ref, mask = test.images[i].astype(np.float64), cf.images[i].astype(np.float64), test.masks[i]
            diff = np.abs(img - ref).mean(axis=2)
            assert mask.any()
            assert diff[mask].mean() >= 5, (kind, i)         # visibly changed inside the mask
            assert diff[~mask].mean() <= 1, (kind, i)        # (almost) untouched outside it
            strong = diff > 10
            assert (strong & mask).sum() >= 0.6 * strong.sum(), (kind, i)  # changes lie in the mask
            recall.append((diff[mask] > 5).mean())
            # the change goes in the direction the defect family implies
            signed = (img - ref).mean(axis=2)[mask].mean()
            if spec.family == "hole" and spec.extra.get("fill") == "bright":
                assert signed > 5, (kind, i)  # a tear shows the bright slide below
            elif spec.family in ("crack", "hole"):
                assert signed < -5, (kind, i)
            elif spec.family in ("stain", "discolor"):
                gain = float(np.mean(spec.tint))
                assert np.sign(signed) == np.sign(gain - 1) and abs(signed) > 3, (kind, i, signed)
            elif spec.family == "scratch":
                target = 255 * float(np.mean(spec.color))
                assert np.sign(signed) == np.sign(target - ref[mask].mean()), (kind, i)
            elif spec.family == "blur":
                gray, gref = img.mean(axis=2), ref.mean(axis=2)
                assert _gradient_energy(gray, mask) < 0.8 * _gradient_energy(gref, mask), (kind, i)
        assert np.mean(recall) >= 0.5, kind  # most mask pixels changed by more than 5 levels

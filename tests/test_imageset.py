"""Tests for lbnb.imageset: the ImageSet container and describe()."""
from __future__ import annotations

import numpy as np
import pytest

from lbnb.imageset import GOOD, ImageSet, describe


def make_set(n=6, size=8, n_anom=2, prefix="toy", seed=0, category="toy"):
    """n samples: the first n - n_anom normal, then n_anom anomalies of type 'scratch' with a
    mask covering exactly ``k + 1`` pixels for the k-th anomaly."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.array([0] * (n - n_anom) + [1] * n_anom)
    masks = np.zeros((n, size, size), bool)
    for k in range(n_anom):
        masks[n - n_anom + k].reshape(-1)[:k + 1] = True
    types = [GOOD] * (n - n_anom) + ["scratch"] * n_anom
    ids = [f"{prefix}/{t}/{i:03d}" for i, t in enumerate(types)]
    return ImageSet(images, labels, masks, ids, types, category, {"source": "unit"})


# -- validation --------------------------------------------------------------------------------------
def test_valid_set_normalises_dtypes_and_shapes():
    s = ImageSet(np.zeros((2, 4, 5, 3), np.uint8), [[0], [1]], np.zeros((2, 4, 5), np.uint8),
                 ["a", "b"], ["good", "x"])
    assert s.labels.dtype == np.int8 and s.labels.tolist() == [0, 1]
    assert s.masks.dtype == bool and s.masks.shape == (2, 4, 5)
    assert s.ids.tolist() == ["a", "b"] and s.defect_types.tolist() == ["good", "x"]
    assert len(s) == 2 and s.image_size == (4, 5)
    assert "n=2" in repr(s) and "anomalous=1" in repr(s)


@pytest.mark.parametrize("images", [
    np.zeros((2, 4, 4, 3), np.float32),      # wrong dtype
    np.zeros((2, 4, 4), np.uint8),           # no channel axis
    np.zeros((2, 4, 4, 1), np.uint8),        # one channel
    np.zeros((2, 4, 4, 4), np.uint8),        # RGBA
    np.zeros((4, 4, 3), np.uint8),           # a single image, no batch axis
])
def test_bad_images_raise(images):
    n = images.shape[0] if images.ndim == 4 else 2
    with pytest.raises(ValueError, match="images must be uint8"):
        ImageSet(images, [0] * n, np.zeros((n, 4, 4), bool), ["a", "b"][:n], ["good"] * n)


def test_mask_shape_mismatch_raises():
    with pytest.raises(ValueError, match="masks must have shape"):
        ImageSet(np.zeros((2, 4, 4, 3), np.uint8), [0, 0], np.zeros((2, 4, 5), bool), ["a", "b"], ["good"] * 2)
    with pytest.raises(ValueError, match="masks must have shape"):
        ImageSet(np.zeros((2, 4, 4, 3), np.uint8), [0, 0], np.zeros((3, 4, 4), bool), ["a", "b"], ["good"] * 2)


@pytest.mark.parametrize("field, value, name", [
    ("labels", [0, 1, 0], "labels"),
    ("ids", ["a"], "ids"),
    ("defect_types", ["good"] * 3, "defect_types"),
])
def test_length_mismatch_raises_naming_the_field(field, value, name):
    kwargs = dict(images=np.zeros((2, 4, 4, 3), np.uint8), labels=[0, 1], masks=np.zeros((2, 4, 4), bool),
                  ids=["a", "b"], defect_types=["good", "x"])
    kwargs[field] = value
    with pytest.raises(ValueError, match=f"{name} has {len(value)} entries for 2 images"):
        ImageSet(**kwargs)


@pytest.mark.parametrize("labels", [[0, 2], [0, -1], [0, 256], [0, 0.5], [0, 1.7], [0, np.nan]])
def test_label_values_outside_0_1_raise(labels):
    # 256 and 0.5 used to be cast to int8 (0) before the check and pass silently
    with pytest.raises(ValueError, match="labels must be 0"):
        ImageSet(np.zeros((2, 4, 4, 3), np.uint8), labels, np.zeros((2, 4, 4), bool), ["a", "b"], ["good"] * 2)


def test_bool_labels_are_accepted():
    s = ImageSet(np.zeros((2, 4, 4, 3), np.uint8), [True, False], np.zeros((2, 4, 4), bool), ["a", "b"],
                 ["x", "good"])
    assert s.labels.tolist() == [1, 0]


def test_duplicate_ids_raise_and_name_them():
    with pytest.raises(ValueError, match=r"unique.*\['dup'\]"):
        ImageSet(np.zeros((3, 4, 4, 3), np.uint8), [0, 0, 0], np.zeros((3, 4, 4), bool), ["dup", "b", "dup"],
                 ["good"] * 3)


def test_dataclass_is_frozen():
    s = make_set()
    with pytest.raises(AttributeError):
        s.category = "other"


# -- properties -------------------------------------------------------------------------------------
def test_contamination_rate_and_n_anomalous():
    s = make_set(n=8, n_anom=2)
    assert s.n_anomalous == 2
    assert s.contamination_rate == pytest.approx(0.25)
    empty = s.subset([])
    assert len(empty) == 0 and empty.n_anomalous == 0 and empty.contamination_rate == 0.0
    assert empty.images.shape == (0, 8, 8, 3)


def test_summary_counts_per_type():
    assert make_set(n=7, n_anom=3).summary() == {"good": 4, "scratch": 3}


# -- subset / select_ids / concat ------------------------------------------------------------------
def test_subset_by_index_keeps_order_and_all_fields():
    s = make_set()
    sub = s.subset([5, 0, 3])
    assert sub.ids.tolist() == [s.ids[5], s.ids[0], s.ids[3]]
    np.testing.assert_array_equal(sub.images, s.images[[5, 0, 3]])
    np.testing.assert_array_equal(sub.masks, s.masks[[5, 0, 3]])
    assert sub.labels.tolist() == [1, 0, 0]
    assert sub.defect_types.tolist() == ["scratch", "good", "good"]
    assert sub.category == s.category and sub.meta == s.meta


def test_subset_by_bool_mask_equals_subset_by_positions():
    s = make_set()
    keep = s.labels == 0
    a, b = s.subset(keep), s.subset(np.flatnonzero(keep))
    assert a.ids.tolist() == b.ids.tolist() == s.ids[:4].tolist()
    np.testing.assert_array_equal(a.images, b.images)


def test_subset_bool_mask_of_wrong_length_raises():
    s = make_set()
    with pytest.raises(IndexError):
        s.subset(np.array([True, False]))


def test_subset_is_a_copy():
    s = make_set()
    before = [a.copy() for a in (s.images, s.masks, s.labels)]
    for sub in (s.subset([0, 4, 5]), s.subset(np.ones(len(s), bool))):
        sub.images[...] = 7
        sub.masks[...] = True
        sub.labels[...] = 1
        sub.meta["source"] = "changed"
        assert not np.shares_memory(sub.images, s.images)
    for arr, orig in zip((s.images, s.masks, s.labels), before):
        np.testing.assert_array_equal(arr, orig)
    assert s.meta == {"source": "unit"}


def test_select_ids_follows_the_given_order():
    s = make_set()
    wanted = [s.ids[4], s.ids[1], s.ids[2]]
    sel = s.select_ids(wanted)
    assert sel.ids.tolist() == wanted
    np.testing.assert_array_equal(sel.images, s.images[[4, 1, 2]])
    assert sel.labels.tolist() == [1, 0, 0]
    assert len(s.select_ids(iter([]))) == 0


def test_select_ids_unknown_raises_keyerror_naming_it():
    s = make_set()
    with pytest.raises(KeyError, match="no/such/id"):
        s.select_ids([s.ids[0], "no/such/id"])


def test_concat_appends_and_keeps_ids_unique():
    a, b = make_set(n=4, n_anom=1, prefix="a"), make_set(n=3, n_anom=2, prefix="b", seed=1)
    c = a.concat(b)
    assert len(c) == 7
    assert c.ids.tolist() == a.ids.tolist() + b.ids.tolist()
    np.testing.assert_array_equal(c.images[:4], a.images)
    np.testing.assert_array_equal(c.images[4:], b.images)
    np.testing.assert_array_equal(c.masks[4:], b.masks)
    assert c.labels.tolist() == [0, 0, 0, 1, 0, 1, 1]
    assert c.n_anomalous == 3 and c.contamination_rate == pytest.approx(3 / 7)


def test_concat_rejects_shared_ids_and_size_mismatch():
    a = make_set(n=3, n_anom=1)
    with pytest.raises(ValueError, match="unique"):
        a.concat(make_set(n=3, n_anom=1, seed=5))  # same ids
    with pytest.raises(ValueError, match="image sizes differ"):
        a.concat(make_set(n=3, n_anom=1, size=9, prefix="b"))


def test_concat_category_falls_back_to_other():
    a, b = make_set(prefix="a", category=""), make_set(prefix="b", category="bolt")
    assert a.concat(b).category == "bolt"


# -- describe -----------------------------------------------------------------------------------------
def test_describe_counts_and_mask_areas():
    s = make_set(n=6, size=8, n_anom=2)  # anomaly masks cover 1 and 2 pixels of 64
    s = s.concat(ImageSet(np.zeros((1, 8, 8, 3), np.uint8), [1], np.ones((1, 8, 8), bool), ["x/crack/0"],
                          ["crack"], "toy"))
    df = describe(s)
    assert list(df.index) == ["good", "crack", "scratch"]  # good first, then alphabetical
    assert df.loc["good", "count"] == 4 and df.loc["scratch", "count"] == 2 and df.loc["crack", "count"] == 1
    assert df.loc["good", "mask_area_max"] == 0.0
    assert df.loc["scratch", "mask_area_min"] == pytest.approx(1 / 64)
    assert df.loc["scratch", "mask_area_max"] == pytest.approx(2 / 64)
    assert df.loc["scratch", "mask_area_mean"] == pytest.approx(1.5 / 64)
    assert df.loc["crack", "mask_area_mean"] == pytest.approx(1.0)
    assert df["count"].sum() == len(s)


def test_describe_of_an_empty_set_is_an_empty_table():
    df = describe(make_set().subset([]))
    assert len(df) == 0
    assert {"count", "mask_area_mean", "mask_area_min", "mask_area_max"} <= set(df.columns)

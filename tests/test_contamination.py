"""Tests for lbnb.contamination: SoftPatch / fixed-rate injection and the Real-IAD FUIAD reader."""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnb.contamination import (Contaminated, augment_pair, contaminate_fixed_rate,
                                contaminate_softpatch, load_realiad_fuiad)
from lbnb.imageset import ImageSet

FIXTURE = Path(__file__).parent / "data" / "realiad_fuiad_small"
FIXTURE_JSON = FIXTURE / "realiad_jsons_fuiad_0.1" / "audiojack.json"


# -- synthetic sets -------------------------------------------------------------------------------
def _blob_mask(rng, size):
    mask = np.zeros((size, size), bool)
    r, c = rng.integers(size // 4, size // 2, size=2)
    h, w = rng.integers(3, size // 4, size=2)
    mask[r:r + h, c:c + w] = True
    return mask


def make_sets(n_normal=20, n_test_normal=8, n_anom=12, size=32, seed=0):
    """train: n_normal normals; test: n_test_normal normals + n_anom anomalies with blob masks."""
    rng = np.random.default_rng(seed)
    train = ImageSet(rng.integers(0, 256, (n_normal, size, size, 3), dtype=np.uint8),
                     np.zeros(n_normal), np.zeros((n_normal, size, size), bool),
                     [f"toy/train/good/{i:03d}" for i in range(n_normal)], ["good"] * n_normal, "toy")
    types = ["good"] * n_test_normal + [("scratch", "crack")[i % 2] for i in range(n_anom)]
    masks = np.stack([np.zeros((size, size), bool)] * n_test_normal
                     + [_blob_mask(rng, size) for _ in range(n_anom)])
    test = ImageSet(rng.integers(0, 256, (len(types), size, size, 3), dtype=np.uint8),
                    [int(t != "good") for t in types], masks,
                    [f"toy/test/{t}/{i:03d}" for i, t in enumerate(types)], types, "toy")
    return train, test


def _snapshot(s: ImageSet):
    return [np.array(a, copy=True) for a in (s.images, s.labels, s.masks, s.ids, s.defect_types)]


def _same(s: ImageSet, snap) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(
        (s.images, s.labels, s.masks, s.ids, s.defect_types), snap))


# -- SoftPatch protocol ---------------------------------------------------------------------------
@pytest.mark.parametrize("noise, expected", [(0.0, 0), (0.1, 2), (0.25, 5), (0.29, 5), (0.5, 10),
                                             (0.55, 11), (0.6, 12)])
def test_softpatch_counts(noise, expected):
    train, test = make_sets()
    out = contaminate_softpatch(train, test, noise)
    assert isinstance(out, Contaminated) and out.protocol == "softpatch"
    assert len(out.injected_ids) == expected
    assert len(out.train) == 20 + expected and out.train.n_anomalous == expected
    assert len(out.test) == len(test) - expected and out.test.n_anomalous == 12 - expected
    assert out.realised_rate == pytest.approx(expected / (20 + expected))
    rep = out.report()
    assert rep == {"protocol": "softpatch", "nominal": noise, "realised_rate": out.realised_rate,
                   "n_train": 20 + expected, "n_injected": expected, "n_test": 20 - expected,
                   "n_test_anomalous": 12 - expected, "n_resampled": 0, "overlap": False}


def test_float_error_does_not_lose_a_sample():
    train, test = make_sets(n_normal=100, n_anom=40)  # 0.29 * 100 = 28.999999999999996
    assert len(contaminate_softpatch(train, test, 0.29).injected_ids) == 29


def test_no_overlap_moves_samples_out_of_test():
    train, test = make_sets()
    out = contaminate_softpatch(train, test, 0.3)
    left = set(out.test.ids.tolist())
    assert not left & set(out.injected_ids)
    assert left | set(out.injected_ids) == set(test.ids.tolist())
    assert out.report()["overlap"] is False


def test_overlap_keeps_test_intact():
    train, test = make_sets()
    out = contaminate_softpatch(train, test, 0.3, overlap=True)
    assert out.test.ids.tolist() == test.ids.tolist()
    assert np.array_equal(out.test.images, test.images) and out.test.n_anomalous == 12
    assert set(out.injected_ids) <= set(test.ids.tolist())
    assert out.report()["overlap"] is True


def test_deterministic_and_seed_dependent():
    train, test = make_sets()
    a = contaminate_softpatch(train, test, 0.25, random_state=3)
    b = contaminate_softpatch(train, test, 0.25, random_state=3)
    assert a.injected_ids == b.injected_ids
    assert np.array_equal(a.train.images, b.train.images) and np.array_equal(a.test.ids, b.test.ids)
    draws = {frozenset(contaminate_softpatch(train, test, 0.25, random_state=s).injected_ids)
             for s in range(6)}
    assert len(draws) > 1


def test_inputs_not_mutated():
    train, test = make_sets()
    snap_train, snap_test = _snapshot(train), _snapshot(test)
    outs = [contaminate_softpatch(train, test, 0.3), contaminate_softpatch(train, test, 0.0),
            contaminate_softpatch(train, test, 0.9, resample=True),
            contaminate_fixed_rate(train, test, 0.2, overlap=True)]
    for out in outs:  # writing into the results must not reach the inputs either
        out.train.images[:] = 0
        out.train.masks[:] = True
        out.test.images[:] = 0
    assert _same(train, snap_train) and _same(test, snap_test)


def test_ids_unique_traceable_and_ground_truth_travels():
    train, test = make_sets()
    out = contaminate_softpatch(train, test, 0.5)
    assert len(set(out.train.ids.tolist())) == len(out.train)
    assert set(out.injected_ids) <= set(test.ids.tolist())
    assert out.train.ids[:20].tolist() == train.ids.tolist()
    got, src = out.train.select_ids(out.injected_ids), test.select_ids(out.injected_ids)
    assert (got.labels == 1).all()
    for name in ("images", "masks", "labels", "defect_types"):
        assert np.array_equal(getattr(got, name), getattr(src, name)), name
    assert all(m.any() for m in got.masks)


def test_zero_noise_returns_train_unchanged():
    train, test = make_sets()
    out = contaminate_softpatch(train, test, 0.0)
    assert out.injected_ids == () and out.realised_rate == 0.0
    assert np.array_equal(out.train.ids, train.ids) and np.array_equal(out.train.images, train.images)
    assert np.array_equal(out.test.ids, test.ids)


# -- re-sampling ----------------------------------------------------------------------------------
def test_resample_adds_augmented_copies():
    train, test = make_sets()
    out = contaminate_softpatch(train, test, 0.9, resample=True)  # 18 asked, 12 exist
    assert len(out.injected_ids) == 18 and out.report()["n_resampled"] == 6
    assert out.train.n_anomalous == 18 and out.test.n_anomalous == 0
    assert out.realised_rate == pytest.approx(18 / 38)
    aug = [i for i in out.injected_ids if "#aug" in i]
    assert len(aug) == 6 and len(set(out.train.ids.tolist())) == 38
    test_ids = set(test.ids.tolist())
    assert set(out.injected_ids) - set(aug) == {i for i in test_ids if "/good/" not in i}
    for sid in aug:
        base = sid.split("#aug")[0]
        assert base in test_ids
        got, src = out.train.select_ids([sid]), test.select_ids([base])
        assert got.masks.shape == src.masks.shape and got.masks.any()
        assert got.defect_types[0] == src.defect_types[0] and got.labels[0] == 1
    again = contaminate_softpatch(train, test, 0.9, resample=True)
    assert np.array_equal(out.train.images, again.train.images)


def test_augment_pair_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    size = 96
    mask = np.zeros((size, size), bool)
    mask[30:60, 20:45] = True
    mask[60:70, 40:75] = True
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[..., 0] = np.where(mask, 255, 0)
    changed = 0
    for _ in range(8):
        img2, m2 = augment_pair(image, mask, rng)
        assert img2.shape == image.shape and img2.dtype == np.uint8
        assert m2.shape == mask.shape and m2.dtype == bool and m2.any()
        assert np.mean(m2 == (img2[..., 0] > 127)) > 0.98  # same transform on both
        assert (m2 & mask).sum() / (m2 | mask).sum() > 0.5  # a small motion, not garbage
        changed += not np.array_equal(m2, mask)
    assert changed >= 6
    flat = np.full((size, size, 3), 200, np.uint8)
    full = np.ones((size, size), bool)
    outs = [augment_pair(flat, full, rng) for _ in range(5)]
    assert all((o[0] == 200).all() for o in outs)  # reflect padding: no dark border
    assert any(not o[1].all() for o in outs)  # mask padded with False


def test_error_without_resample():
    train, test = make_sets()
    with pytest.raises(ValueError, match=r"resample") as err:
        contaminate_softpatch(train, test, 0.9)
    assert "18" in str(err.value) and "12" in str(err.value)


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.1", None, True])
def test_bad_rates(bad):
    train, test = make_sets()
    with pytest.raises(ValueError, match="noise"):
        contaminate_softpatch(train, test, bad)
    with pytest.raises(ValueError, match="contamination_rate"):
        contaminate_fixed_rate(train, test, bad)


def test_train_must_be_normal_and_sizes_match():
    train, test = make_sets()
    dirty = train.concat(test.subset(np.flatnonzero(test.labels == 1)[:1]))
    with pytest.raises(ValueError, match="normal"):
        contaminate_softpatch(dirty, test.subset(np.arange(1, len(test))), 0.1)
    _, small = make_sets(size=16)
    with pytest.raises(ValueError, match="size"):
        contaminate_fixed_rate(train, small, 0.1)


# -- fixed rate -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate, expected", [(0.0, 0), (0.1, 2), (0.2, 5), (0.25, 7), (0.3, 9),
                                            (1 / 3, 10)])
def test_fixed_rate_formula(rate, expected):
    train, test = make_sets()  # 20 normals: n = round(rate * 20 / (1 - rate))
    out = contaminate_fixed_rate(train, test, rate)
    assert out.protocol == "fixed_rate" and out.nominal == rate
    assert len(out.injected_ids) == expected == out.train.n_anomalous
    assert out.realised_rate == pytest.approx(expected / (20 + expected))
    assert abs(out.realised_rate - rate) <= 0.5 / (20 + expected) + 1e-12


def test_fixed_rate_resample_and_seed():
    train, test = make_sets()
    out = contaminate_fixed_rate(train, test, 0.5, resample=True, random_state=1)
    assert len(out.train) == 40 and out.realised_rate == 0.5 and out.n_resampled == 8
    with pytest.raises(ValueError, match="resample"):
        contaminate_fixed_rate(train, test, 0.5)


# -- Real-IAD FUIAD reader ------------------------------------------------------------------------
def _write_realiad(root: Path, json_src: Path = FIXTURE_JSON, odd_size: str | None = None):
    """Write 32x32 images/masks for every record of ``json_src`` under root/realiad_256/<cat>/."""
    doc = json.loads(json_src.read_text())
    rng = np.random.default_rng(7)
    truth = {}
    for split in ("train", "test"):
        for rec in doc[split]:
            folder = root / "realiad_256" / rec["category"]
            size = 48 if rec["image_path"] == odd_size else 32
            img = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
            path = folder / rec["image_path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, quality=95)
            mask = None
            if rec.get("mask_path"):
                mask = _blob_mask(rng, size)
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / rec["mask_path"])
            truth[f"{rec['category']}/{rec['image_path']}"] = (img, mask)
    return root / "realiad_256", truth


def test_realiad_reader_on_fixture(tmp_path):
    data_root, truth = _write_realiad(tmp_path)
    with pytest.warns(UserWarning, match="mask"):
        out = load_realiad_fuiad(FIXTURE_JSON, data_root)
    assert out.protocol == "realiad_json" and out.nominal == 0.1
    assert len(out.train) == 10 and out.train.n_anomalous == 1 and out.realised_rate == 0.1
    assert len(out.test) == 5 and out.test.n_anomalous == 2 and out.report()["overlap"] is False
    assert out.train.image_size == (32, 32) and out.train.category == "audiojack"
    assert out.train.summary() == {"AK": 1, "good": 9}
    assert out.test.summary() == {"HS": 1, "QS": 1, "good": 3}
    (inj,) = out.injected_ids
    assert inj.startswith("audiojack/NG/AK/") and out.train.select_ids([inj]).labels[0] == 1
    for s in (out.train, out.test):
        for sid, img, mask, label in zip(s.ids, s.images, s.masks, s.labels):
            ref_img, ref_mask = truth[sid]
            assert np.abs(img.astype(int) - ref_img).max() <= 3  # jpeg
            assert np.array_equal(mask, ref_mask if ref_mask is not None else np.zeros((32, 32)))
            assert label == ("/NG/" in sid)
    assert not out.test.select_ids([i for i in out.test.ids if "/QS/" in i]).masks.any()
    with pytest.warns(UserWarning, match="1 anomalous"):  # data root = the category folder
        again = load_realiad_fuiad(FIXTURE_JSON, data_root / "audiojack")
    assert again.train.ids.tolist() == out.train.ids.tolist()


def test_realiad_sizes_and_nominal(tmp_path):
    odd = json.loads(FIXTURE_JSON.read_text())["test"][0]["image_path"]
    data_root, _ = _write_realiad(tmp_path, odd_size=odd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="image_size"):
            load_realiad_fuiad(FIXTURE_JSON, data_root)
        out = load_realiad_fuiad(FIXTURE_JSON, data_root, image_size=24)
        assert out.train.image_size == (24, 24) == out.test.image_size
        assert out.train.masks[out.train.labels == 1].any()
        plain = tmp_path / "jsons" / "audiojack.json"
        plain.parent.mkdir()
        shutil.copy(FIXTURE_JSON, plain)
        assert math.isnan(load_realiad_fuiad(plain, data_root, image_size=(24, 24)).nominal)
        for alpha in ("0.0", "0.4"):
            other = tmp_path / f"realiad_jsons_fuiad_{alpha}" / "audiojack.json"
            other.parent.mkdir()
            shutil.copy(FIXTURE_JSON, other)
            assert load_realiad_fuiad(other, data_root, image_size=24).nominal == float(alpha)


def test_realiad_errors(tmp_path):
    data_root, _ = _write_realiad(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_realiad_fuiad(tmp_path / "nope.json", data_root)
    doc = json.loads(FIXTURE_JSON.read_text())
    del doc["test"][3]["anomaly_class"]
    bad = tmp_path / "realiad_jsons_fuiad_0.1" / "audiojack.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"test\[3\].*anomaly_class"):
        load_realiad_fuiad(bad, data_root)
    doc = json.loads(FIXTURE_JSON.read_text())
    missing = doc["train"][2]["image_path"]
    (data_root / "audiojack" / missing).unlink()
    with pytest.raises(FileNotFoundError, match=r"train\[2\]") as err:
        load_realiad_fuiad(FIXTURE_JSON, data_root)
    with pytest.raises(FileNotFoundError, match="data root"):
        load_realiad_fuiad(FIXTURE_JSON, tmp_path / "missing_root")
    assert Path(missing).name in str(err.value)

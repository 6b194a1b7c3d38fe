"""Tests for lbnb.folder_layout: the MVTec AD layout, read and written."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnb.contamination import contaminate_softpatch
from lbnb.embedded import load_embedded
from lbnb.folder_layout import load_folder, write_folder
from lbnb.imageset import ImageSet


@pytest.fixture(scope="module")
def brick():
    return load_embedded("brick", n_train=6, n_test_good=3, n_test_per_type=2, image_size=64)


def _assert_same(a: ImageSet, b: ImageSet):
    order = np.argsort(a.ids)
    b = b.select_ids(a.ids[order].tolist())
    a = a.subset(order)
    assert a.ids.tolist() == b.ids.tolist()
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.defect_types, b.defect_types)
    assert a.category == b.category


def _leftovers(root: Path):
    return [p.name for p in root.iterdir() if ".partial" in p.name]


def _write_image(path: Path, arr: np.ndarray, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)


def _toy_layout(root: Path, category="toy", size=(16, 16), n_good=2, with_masks=True):
    """A small hand-made category: train/good x n_good, test/good x1, test/dent x1 (+ mask)."""
    rng = np.random.default_rng(0)
    cat = root / category
    for i in range(n_good):
        _write_image(cat / "train" / "good" / f"{i:03d}.png", rng.integers(0, 256, size + (3,), dtype=np.uint8))
    _write_image(cat / "test" / "good" / "000.png", rng.integers(0, 256, size + (3,), dtype=np.uint8))
    _write_image(cat / "test" / "dent" / "000.png", rng.integers(0, 256, size + (3,), dtype=np.uint8))
    if with_masks:
        mask = np.zeros(size, np.uint8)
        mask[2:6, 3:9] = 255
        _write_image(cat / "ground_truth" / "dent" / "000_mask.png", mask, "L")
    return cat


# -- round trip ------------------------------------------------------------------------------------------
def test_write_then_load_round_trips_exactly(tmp_path, brick):
    train, test = brick
    target = write_folder(tmp_path, train, test)
    assert target == tmp_path / "brick"
    assert (target / "train" / "good" / "000.png").is_file()
    assert (target / "test" / "crack" / "001.png").is_file()
    assert (target / "ground_truth" / "crack" / "001_mask.png").is_file()
    assert not (target / "ground_truth" / "good").exists()
    assert _leftovers(tmp_path) == []
    train2, test2 = load_folder(tmp_path, "brick")
    _assert_same(train, train2)
    _assert_same(test, test2)
    assert set(test2.ids.tolist()) == set(test.ids.tolist())  # ids are "brick/<split>/<type>/NNN"
    assert train2.n_anomalous == 0 and test2.n_anomalous == test.n_anomalous == 8
    # int image_size that matches the stored size changes nothing
    train3, _ = load_folder(tmp_path, "brick", image_size=64)
    _assert_same(train, train3)


def test_write_refuses_to_overwrite_unless_asked(tmp_path, brick):
    train, test = brick
    write_folder(tmp_path, train, test)
    marker = tmp_path / "brick" / "marker.txt"
    marker.write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_folder(tmp_path, train, test)
    assert marker.exists()
    write_folder(tmp_path, train.subset([0, 1]), test, overwrite=True)
    assert not marker.exists()  # replaced, not merged
    assert len(load_folder(tmp_path, "brick")[0]) == 2
    assert _leftovers(tmp_path) == []


def test_write_needs_a_category(tmp_path, brick):
    train, test = brick
    anon = lambda s: ImageSet(s.images, s.labels, s.masks, s.ids, s.defect_types, "")  # noqa: E731
    with pytest.raises(ValueError, match="category"):
        write_folder(tmp_path, anon(train), anon(test))
    assert write_folder(tmp_path, anon(train), anon(test), category="named") == tmp_path / "named"


def _failing_save(monkeypatch, after):
    real = Image.Image.save
    calls = {"n": 0}

    def save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError("disk full (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    return calls


def test_write_is_atomic_when_interrupted(tmp_path, brick, monkeypatch):
    train, test = brick
    calls = _failing_save(monkeypatch, after=5)
    with pytest.raises(OSError, match="simulated"):
        write_folder(tmp_path, train, test)
    assert calls["n"] == 6
    assert not (tmp_path / "brick").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_interrupted_overwrite_keeps_the_old_category(tmp_path, brick, monkeypatch):
    train, test = brick
    write_folder(tmp_path, train, test)
    _failing_save(monkeypatch, after=3)
    with pytest.raises(OSError, match="simulated"):
        write_folder(tmp_path, train.subset([0]), test, overwrite=True)
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    _assert_same(train, load_folder(tmp_path, "brick")[0])


def test_write_rejects_file_name_collisions(tmp_path, brick):
    train, _ = brick
    clash = ImageSet(train.images[:2], [0, 0], train.masks[:2], ["a/x/007", "b/y/007"], ["good", "good"], "brick")
    with pytest.raises(ValueError, match="'007'"):
        write_folder(tmp_path, clash, brick[1])
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_train_and_test_masks_that_would_share_a_file(tmp_path, brick):
    """A train anomaly and a different test anomaly with the same type and name would both write
    ground_truth/<type>/<name>_mask.png: one mask would silently replace the other."""
    train, test = brick
    other = load_embedded("brick", random_state=1, n_train=1, n_test_good=0, n_test_per_type=2,
                          image_size=64)[1]
    injected = other.subset(other.defect_types == "crack")  # ids brick/test/crack/000, 001 as in `test`
    assert set(injected.ids.tolist()) <= set(test.ids.tolist())
    assert not np.array_equal(injected.masks[0], test.select_ids([injected.ids[0]]).masks[0])
    with pytest.raises(ValueError, match="ground_truth/crack"):
        write_folder(tmp_path, train.concat(injected.subset([0])), test)
    assert list(tmp_path.iterdir()) == []


def test_contaminated_train_round_trips(tmp_path, brick):
    train, test = brick
    cont = contaminate_softpatch(train, test, noise=0.5, random_state=0)  # 3 anomalies moved into train
    assert cont.train.n_anomalous == 3
    write_folder(tmp_path, cont.train, cont.test)
    train2, test2 = load_folder(tmp_path, "brick")
    assert len(train2) == len(cont.train) and train2.n_anomalous == 3
    assert train2.contamination_rate == pytest.approx(cont.realised_rate)
    # injected samples come back under train/<type>/ with their labels, types and masks
    for sid in cont.injected_ids:
        _, kind, name = sid.rsplit("/", 2)
        back = train2.select_ids([f"brick/train/{kind}/{name}"])
        orig = cont.train.select_ids([sid])
        assert back.labels[0] == 1 and back.defect_types[0] == kind
        np.testing.assert_array_equal(back.masks[0], orig.masks[0])
        np.testing.assert_array_equal(back.images[0], orig.images[0])
        assert back.masks[0].any()
    _assert_same(cont.test, test2)
    # overlap: the same sample in train and test shares one (identical) mask file
    cont2 = contaminate_softpatch(train, test, noise=0.5, overlap=True, random_state=0)
    write_folder(tmp_path, cont2.train, cont2.test, overwrite=True)
    train3, test3 = load_folder(tmp_path, "brick")
    assert train3.n_anomalous == 3 and len(test3) == len(test)


# -- load_folder errors -------------------------------------------------------------------------------------
def test_missing_category_lists_available_ones(tmp_path):
    _toy_layout(tmp_path, "bottle")
    _toy_layout(tmp_path, "cable")
    with pytest.raises(FileNotFoundError, match=r"screw.*\['bottle', 'cable'\]"):
        load_folder(tmp_path, "screw")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_folder(tmp_path / "nowhere", "bottle")


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split_folder_is_named(tmp_path, split):
    cat = _toy_layout(tmp_path)
    shutil.rmtree(cat / split)
    with pytest.raises(FileNotFoundError, match=f"missing folder .*toy/{split}"):
        load_folder(tmp_path, "toy")


def test_empty_split_is_an_error_naming_it(tmp_path):
    cat = _toy_layout(tmp_path)
    for p in (cat / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match="no images found under .*train"):
        load_folder(tmp_path, "toy")


def test_anomaly_without_mask(tmp_path):
    _toy_layout(tmp_path, with_masks=False)
    with pytest.raises(ValueError, match=r"no mask for anomalous image .*dent.000\.png.*allow_missing_masks"):
        load_folder(tmp_path, "toy")
    with pytest.warns(UserWarning, match="no mask"):
        train, test = load_folder(tmp_path, "toy", allow_missing_masks=True)
    assert test.labels.tolist() == [1, 0] and test.defect_types.tolist() == ["dent", "good"]
    assert not test.masks.any()


def test_mask_without_mask_suffix_is_found(tmp_path):
    cat = _toy_layout(tmp_path, with_masks=False)
    mask = np.zeros((16, 16), np.uint8)
    mask[0, 0] = 255
    _write_image(cat / "ground_truth" / "dent" / "000.png", mask, "L")
    _, test = load_folder(tmp_path, "toy")
    assert test.select_ids(["toy/test/dent/000"]).masks[0].sum() == 1


def test_mask_size_mismatch_names_both_files(tmp_path):
    cat = _toy_layout(tmp_path)
    _write_image(cat / "ground_truth" / "dent" / "000_mask.png", np.zeros((8, 8), np.uint8), "L")
    with pytest.raises(ValueError, match=r"000_mask\.png is 8x8 but its image .*000\.png is 16x16"):
        load_folder(tmp_path, "toy")


def test_truncated_image_is_named(tmp_path):
    cat = _toy_layout(tmp_path)
    path = cat / "train" / "good" / "001.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"train.good.001\.png"):
        load_folder(tmp_path, "toy")


@pytest.mark.parametrize("split", ["train", "test"])
def test_mixed_sizes_need_image_size(tmp_path, split):
    cat = _toy_layout(tmp_path)
    _write_image(cat / split / "good" / "extra.png", np.zeros((20, 24, 3), np.uint8))
    with pytest.raises(ValueError, match=f"{split}.*different sizes.*image_size"):
        load_folder(tmp_path, "toy")
    train, test = load_folder(tmp_path, "toy", image_size=(12, 10))
    assert train.images.shape[1:] == (12, 10, 3) and test.images.shape[1:] == (12, 10, 3)
    assert test.masks.shape[1:] == (12, 10)
    # the dent mask (rows 2:6, cols 3:9 of 16x16) survives resizing at about the same relative area
    dent = test.select_ids(["toy/test/dent/000"]).masks[0]
    assert abs(dent.mean() - 24 / 256) < 0.04


def test_uniform_test_size_is_resized_to_train_size(tmp_path):
    cat = _toy_layout(tmp_path)
    rng = np.random.default_rng(1)
    for sub in ("good", "dent"):
        _write_image(cat / "test" / sub / "000.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = np.zeros((32, 32), np.uint8)
    mask[:16] = 255
    _write_image(cat / "ground_truth" / "dent" / "000_mask.png", mask, "L")
    train, test = load_folder(tmp_path, "toy")
    assert train.image_size == test.image_size == (16, 16)
    assert test.select_ids(["toy/test/dent/000"]).masks[0].mean() == pytest.approx(0.5)


def test_image_size_int_resizes_everything(tmp_path):
    _toy_layout(tmp_path)
    train, test = load_folder(tmp_path, "toy", image_size=8)
    assert train.image_size == test.image_size == (8, 8)


def test_non_rgb_images_load_as_rgb8(tmp_path):
    cat = tmp_path / "modes"
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    _write_image(cat / "train" / "good" / "gray.png", gray, "L")
    rgba = np.dstack([np.full((16, 16, 3), 90, np.uint8), np.full((16, 16), 255, np.uint8)])
    _write_image(cat / "train" / "good" / "rgba.png", rgba, "RGBA")
    deep = (gray.astype(np.uint16) * 257)  # 16-bit with the same 8-bit values
    _write_image(cat / "train" / "good" / "deep.png", deep)
    _write_image(cat / "test" / "good" / "000.png", gray, "L")
    train, test = load_folder(tmp_path, "modes")
    assert train.images.shape == (3, 16, 16, 3) and train.images.dtype == np.uint8
    by_id = {sid: img for sid, img in zip(train.ids.tolist(), train.images)}
    for sid in ("modes/train/good/gray", "modes/train/good/deep"):
        for c in range(3):
            np.testing.assert_array_equal(by_id[sid][..., c], gray)
    assert (by_id["modes/train/good/rgba"] == 90).all()
    assert test.ids.tolist() == ["modes/test/good/000"]


def test_non_image_files_are_ignored(tmp_path):
    cat = _toy_layout(tmp_path)
    (cat / "train" / "good" / "README.txt").write_text("notes")
    (cat / "train" / "good" / "Thumbs.db").write_bytes(b"\0\1")
    train, _ = load_folder(tmp_path, "toy")
    assert train.ids.tolist() == ["toy/train/good/000", "toy/train/good/001"]


def test_load_is_deterministic_and_sorted(tmp_path):
    _toy_layout(tmp_path, n_good=5)
    a, _ = load_folder(tmp_path, "toy")
    b, _ = load_folder(tmp_path, "toy")
    assert a.ids.tolist() == sorted(a.ids.tolist()) == b.ids.tolist()
    np.testing.assert_array_equal(a.images, b.images)


def test_writes_are_quiet(tmp_path, brick):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_folder(tmp_path, *brick)
        load_folder(tmp_path, "brick")

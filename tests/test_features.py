"""Feature extraction: offline ImageNet weights, shapes, the per-image cache, clear errors."""
import os

import numpy as np
import pytest
import torch

from lbnb import data
from lbnb.cache import FeatureCache, content_hash
from lbnb.features import FeatureExtractor, WeightsNotFoundError, _lite_weights_file, _load_state_in_order


@pytest.fixture(scope="module")
def small():
    train, test = data.load_embedded("brick", n_train=6, n_test_good=2, n_test_per_type=1)
    return train, test


def test_lite0_imagenet_weights_classify_real_photos():
    """The shipped weights are really ImageNet's: chelsea is a cat (281-285), coffee an espresso (967)."""
    import skimage.data
    import timm
    import torch.nn.functional as F

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(_lite_weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    _load_state_in_order(model, state, "package")
    model.eval()
    for name, classes in (("chelsea", range(281, 286)), ("coffee", [967])):
        x = torch.tensor(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255
        x = (F.interpolate(x, size=(224, 224), mode="bilinear") - 0.5) / 0.5
        with torch.no_grad():
            top = int(model(x).argmax())
        assert top in classes, (name, top)


def test_shapes_layers_and_projection(small):
    train, _ = small
    feats = FeatureExtractor(progress=False).extract(train)
    assert feats.shape == (6, 40 + 112, 20, 20) and feats.dtype == torch.float32
    fine = FeatureExtractor(layers=(1, 2, 3), progress=False).extract(train)
    assert fine.shape == (6, 24 + 40 + 112, 40, 40)
    projected = FeatureExtractor(projection_dim=64, progress=False).extract(train)
    assert projected.shape == (6, 64, 20, 20)
    assert torch.isfinite(feats).all() and feats.abs().sum() > 0


def test_zero_pad_changes_only_the_border_and_its_own_cache_entry(small):
    """zero_pad averages zeros into border patches (PatchCore's, anomalib's border); the default
    averages in-image cells only. 20 × 20 grid: rows/cols 0 and 19 are the stride-8 tap's border, and the
    upsampled stride-16 tap's border reaches two cells further in, so cells 3..16 must agree exactly."""
    train, _ = small
    default = FeatureExtractor(progress=False).extract(train)
    padded_fx = FeatureExtractor(zero_pad=True, progress=False)
    padded = padded_fx.extract(train)
    inner = (slice(None), slice(None), slice(3, 17), slice(3, 17))
    torch.testing.assert_close(padded[inner], default[inner], rtol=0, atol=1e-6)
    assert (padded[..., 0, :] - default[..., 0, :]).abs().max() > 0.1     # zeros pulled the border in
    # corner of the stride-8 tap (first 40 channels): 4 of the 9 cells lie in the image
    torch.testing.assert_close(padded[:, :40, 0, 0], default[:, :40, 0, 0] * 4 / 9, rtol=1e-5, atol=1e-6)
    assert FeatureExtractor().config().get("zero_pad") is None            # default cache entries unchanged
    assert padded_fx.config()["zero_pad"] is True


def test_features_do_not_depend_on_the_batch_an_image_was_extracted_in(small):
    train, _ = small
    fx = FeatureExtractor(progress=False, cache=False, batch_size=4)
    together = fx.extract(train)                     # batches of 4 and 2
    alone = torch.cat([fx.extract(train.subset([i])) for i in range(len(train))])
    assert torch.equal(together, alone)


def test_arrays_and_imagesets_give_the_same_features(small):
    train, _ = small
    fx = FeatureExtractor(progress=False)
    assert torch.equal(fx.extract(train), fx.extract(train.images))


def test_second_run_extracts_nothing_even_from_a_new_object(small, tmp_path, monkeypatch):
    monkeypatch.setenv("LBNB_CACHE_DIR", str(tmp_path))  # a cold cache of its own
    train, test = small
    first = FeatureExtractor(progress=False)
    a = first.extract(train)
    assert first.n_extracted == len(train)
    a2 = first.extract(train)
    assert first.n_extracted == len(train) and torch.equal(a, a2)
    fresh = FeatureExtractor(progress=False)  # new object: only the disk cache can serve it
    b = fresh.extract(train)
    assert fresh.n_extracted == 0 and torch.equal(a, b)
    fresh.extract(train.concat(test))  # a mixed set extracts only the unseen test images
    assert fresh.n_extracted == len(test)


def test_same_id_different_pixels_do_not_collide(tmp_path, monkeypatch):
    monkeypatch.setenv("LBNB_CACHE_DIR", str(tmp_path))
    a, _ = data.load_embedded("grass", random_state=0, n_train=2, n_test_good=0, n_test_per_type=0)
    b, _ = data.load_embedded("grass", random_state=1, n_train=2, n_test_good=0, n_test_per_type=0)
    assert list(a.ids) == list(b.ids)
    fx = FeatureExtractor(progress=False)
    fa, fb = fx.extract(a), fx.extract(b)
    assert fx.n_extracted == 4 and not torch.equal(fa, fb)


def test_cache_layout_is_inspectable_and_writes_are_atomic(small, tmp_path, monkeypatch):
    monkeypatch.setenv("LBNB_CACHE_DIR", str(tmp_path))
    train, _ = small
    fx = FeatureExtractor(progress=False)
    fx.extract(train)
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1
    assert '"backbone": "efficientnet_lite0"' in (folders[0] / "config.json").read_text()
    names = sorted(p.name for p in folders[0].iterdir())
    assert not [n for n in names if n.startswith(".tmp")]
    assert sum(n.startswith("brick_train_good_") for n in names) == len(train)
    FeatureExtractor(patch_size=1, progress=False).extract(train)  # another configuration, another folder
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_cache_can_be_disabled(small, tmp_path, monkeypatch):
    monkeypatch.setenv("LBNB_CACHE_DIR", str(tmp_path))
    train, _ = small
    off = FeatureExtractor(cache=False, progress=False)
    off.extract(train)
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv("LBNB_NO_CACHE", "1")
    env_off = FeatureExtractor(progress=False)
    env_off.extract(train)
    assert env_off.n_extracted == len(train) and not any(tmp_path.iterdir())


def test_corrupt_cache_entry_is_recomputed(small, tmp_path, monkeypatch):
    monkeypatch.setenv("LBNB_CACHE_DIR", str(tmp_path))
    train, _ = small
    reference = FeatureExtractor(progress=False).extract(train)
    victim = sorted(next(p for p in tmp_path.iterdir() if p.is_dir()).glob("*.npy"))[0]
    victim.write_bytes(b"not a numpy file")
    again = FeatureExtractor(progress=False)
    assert torch.equal(again.extract(train), reference) and again.n_extracted == 1


def test_random_weights_are_an_explicit_ablation(small):
    train, _ = small
    pretrained = FeatureExtractor(progress=False, cache=False).extract(train)
    random = FeatureExtractor(weights="random", progress=False, cache=False).extract(train)
    assert random.shape == pretrained.shape and not torch.allclose(random, pretrained)


def test_torchvision_backbone_without_weights_is_a_clear_error(small, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty hub cache
    with pytest.raises(WeightsNotFoundError, match=r"wide_resnet50_2.*downloads nothing"):
        FeatureExtractor(backbone="wide_resnet50_2", progress=False, cache=False).extract(small[0])
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        FeatureExtractor(backbone="resnet18", weights=str(tmp_path / "nope.pth"), progress=False,
                         cache=False).extract(small[0])


def test_torchvision_backbone_with_a_weights_file(small, tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    feats = FeatureExtractor(backbone="resnet18", weights=str(path), layers=(2, 3), progress=False,
                             cache=False).extract(small[0])
    assert feats.shape == (6, 128 + 256, 20, 20)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"backbone": "vgg"}, "unknown backbone"),
    ({"patch_size": 2}, "patch_size"),
])
def test_bad_configuration(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        FeatureExtractor(**kwargs)


def test_bad_layer_and_bad_images(small):
    with pytest.raises(ValueError, match="layer index 9"):
        FeatureExtractor(layers=(2, 9), progress=False, cache=False).extract(small[0])
    with pytest.raises(ValueError, match="uint8"):
        FeatureExtractor(progress=False).extract(np.zeros((2, 32, 32), np.float32))


def test_content_hash_and_keys():
    img = np.zeros((4, 4, 3), np.uint8)
    other = img.copy()
    other[0, 0, 0] = 1
    assert content_hash(img) != content_hash(other) and content_hash(img) == content_hash(img.copy())
    assert FeatureCache.key("a/b c#1", img).startswith("a_b_c_1-")

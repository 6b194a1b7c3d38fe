"""FeatureReconstruction: protocol, determinism, loss history, sign convention; ReconstructionNet."""
import numpy as np
import pytest
import torch

from lbnb.data import load_embedded
from lbnb.detector_base import NotFittedError
from lbnb.features import FeatureExtractor
from lbnb.metrics import image_metrics
from lbnb.nets import ReconstructionNet, cosine_distance_map, global_cosine_distance
from lbnb.reconstruction import FeatureReconstruction

SMALL = dict(n_iterations=60, batch_size=8, hidden_dim=32, bottleneck_dim=16, record_every=20, progress=False)


@pytest.fixture(scope="module")
def brick():
    return load_embedded("brick", n_train=40, n_test_good=15, n_test_per_type=8)


@pytest.fixture(scope="module")
def fitted(brick):
    return FeatureReconstruction(extractor=FeatureExtractor(progress=False), **SMALL).fit(brick[0])


@pytest.fixture(scope="module")
def scores(fitted, brick):
    return fitted.score(brick[1])


def test_shapes_and_dtypes(fitted, scores, brick):
    test = brick[1]
    n, h, w = test.masks.shape
    assert scores.image_scores.shape == (n,) and scores.image_scores.dtype == np.float32
    assert scores.pixel_maps.shape == (n, h, w) and scores.pixel_maps.dtype == np.float32
    assert np.isfinite(scores.pixel_maps).all()
    np.testing.assert_allclose(scores.image_scores, scores.pixel_maps.reshape(n, -1).max(axis=1))
    grid = fitted.patch_scores(test)
    assert grid.shape == (n, 20, 20) and bool(((grid >= 0) & (grid <= 2)).all())
    assert fitted.batch_losses_.shape == (60,)
    np.testing.assert_array_equal(fitted.train_ids_, brick[0].ids)


def test_loss_history(fitted, brick):
    n_train = len(brick[0])
    assert fitted.loss_history_.shape == (4, n_train)
    np.testing.assert_array_equal(fitted.record_iterations_, [0, 20, 40, 60])
    mean = fitted.loss_history_.mean(axis=1)
    assert mean[-1] < 0.7 * mean[0]
    assert np.all(np.diff(mean) < 0)


def test_history_is_the_training_loss(fitted, brick):
    """The last record is each training image's loss under the final network (eval mode)."""
    maps = fitted.patch_scores(brick[0])  # (N, h, w) cosine distances
    np.testing.assert_allclose(fitted.loss_history_[-1], maps.mean(dim=(1, 2)).numpy(), rtol=1e-4)


def test_anomalies_score_higher(scores, brick):
    test = brick[1]
    s = scores.image_scores
    assert s[test.labels == 1].mean() > s[test.labels == 0].mean()
    assert image_metrics(test.labels, s)["i_auroc"] > 0.7  # measured 0.85 (seeds 0-2) with SMALL
    anomalous = test.labels == 1
    assert scores.pixel_maps[test.masks].mean() > scores.pixel_maps[anomalous][~test.masks[anomalous]].mean()


def test_deterministic_and_seed_dependent(fitted, scores, brick):
    ex = FeatureExtractor(progress=False)
    torch.manual_seed(99)  # the global RNG state must not matter
    again = FeatureReconstruction(extractor=ex, **SMALL).fit(brick[0])
    np.testing.assert_array_equal(again.loss_history_, fitted.loss_history_)
    np.testing.assert_array_equal(again.score(brick[1]).image_scores, scores.image_scores)
    other = FeatureReconstruction(extractor=ex, random_state=1, **dict(SMALL, n_iterations=5)).fit(brick[0])
    first = FeatureReconstruction(extractor=ex, **dict(SMALL, n_iterations=5)).fit(brick[0])
    assert not np.array_equal(other.batch_losses_, first.batch_losses_)


def test_no_history_when_recording_is_off(brick):
    det = FeatureReconstruction(extractor=FeatureExtractor(progress=False),
                                **dict(SMALL, n_iterations=3, record_every=0)).fit(brick[0])
    assert det.loss_history_.shape == (0, len(brick[0])) and det.record_iterations_.shape == (0,)


def test_bad_inputs(brick):
    train, test = brick
    ex = FeatureExtractor(progress=False)
    with pytest.raises(NotFittedError):
        FeatureReconstruction(extractor=ex).score(test)
    with pytest.raises(ValueError, match="empty"):
        FeatureReconstruction(extractor=ex).fit(train.images[:0])
    for bad in (dict(n_iterations=0), dict(n_iterations=1.5), dict(batch_size=0), dict(lr=0.0),
                dict(weight_decay=-1.0), dict(dropout=1.0), dict(dropout=-0.1), dict(bottleneck_dim=0),
                dict(record_every=-1), dict(schedule="step"), dict(sigma=-1.0)):
        with pytest.raises(ValueError):
            FeatureReconstruction(extractor=ex, **bad)


def test_size_mismatch_resizes_with_warning(fitted, brick):
    small = np.ascontiguousarray(brick[1].images[:2, ::2, ::2])
    with pytest.warns(UserWarning, match="resizing"):
        out = fitted.score(small)
    assert out.pixel_maps.shape == (2,) + brick[1].image_size


def test_global_rng_untouched(brick):
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    FeatureReconstruction(extractor=FeatureExtractor(progress=False), **dict(SMALL, n_iterations=2)).fit(brick[0])
    assert torch.equal(torch.rand(2), expected)


def test_net_shapes_and_noisy_bottleneck():
    torch.manual_seed(0)
    f = torch.randn(2, 12, 9, 7)
    for downsample in (True, False):
        net = ReconstructionNet(12, hidden_dim=16, bottleneck_dim=4, dropout=0.5, downsample=downsample)
        assert net(f).shape == f.shape
        net.eval()
        assert torch.equal(net(f), net(f))  # no dropout in eval mode
        net.train()
        assert not torch.equal(net(f), net(f))  # dropout while training
    with pytest.raises(ValueError):
        ReconstructionNet(12, dropout=1.0)


def test_cosine_distances():
    f = torch.randn(3, 5, 4, 4)
    assert torch.allclose(cosine_distance_map(f, 2 * f), torch.zeros(3, 4, 4), atol=1e-6)
    assert torch.allclose(cosine_distance_map(f, -f), torch.full((3, 4, 4), 2.0), atol=1e-6)
    assert torch.allclose(global_cosine_distance(f, 3 * f), torch.zeros(3), atol=1e-6)

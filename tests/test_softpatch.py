"""Tests for lbnb.softpatch: the three discriminators against reference implementations, finding injected
anomalies in a contaminated training set, denoising counts, soft weighting, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

from lbnb.contamination import contaminate_softpatch
from lbnb.data import load_embedded
from lbnb.detector_base import NotFittedError
from lbnb.metrics import evaluate
from lbnb.patchcore import PatchCore
from lbnb.softpatch import (DISCRIMINATORS, SoftPatch, denoise_mask, gaussian_scores, knn_scores, lof_scores,
                            pairwise_distances)

# Measured on brick (40 normal + 8 injected, α = 0.2, seed 0), AUROC of injected vs normal:
#   per-image max ω: lof 0.987, knn 0.956, gaussian 0.994; masked patches vs normal images' patches:
#   lof 0.998, knn 0.997, gaussian 0.998. Test I-AUROC: lof 0.883, knn 0.917, gaussian 0.931.
IMAGE_FLOOR, PATCH_FLOOR, I_AUROC_FLOOR = 0.9, 0.95, 0.8


@pytest.fixture(scope="module")
def noisy():
    train, test = load_embedded("brick", n_train=40, n_test_good=15, n_test_per_type=8)
    return contaminate_softpatch(train, test, 0.2)


@pytest.fixture(scope="module")
def fitted(noisy):
    return {d: SoftPatch(discriminator=d, progress=False).fit(noisy.train) for d in DISCRIMINATORS}


def point_sets(seed=0, n_sets=3, n=40, dim=12):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_sets, n, dim, generator=gen) * torch.rand(n_sets, 1, dim, generator=gen)
    x[:, :3] += 4.0                                                        # a few outliers per set
    return x


# -- discriminators against references -------------------------------------------------------------
def test_lof_matches_scikit_learn():
    x = point_sets()
    ours = lof_scores(pairwise_distances(x), 6)
    for p in range(len(x)):
        ref = -LocalOutlierFactor(n_neighbors=6).fit(x[p].numpy()).negative_outlier_factor_
        np.testing.assert_allclose(ours[p].numpy(), ref, rtol=1e-4)


def test_gaussian_matches_ledoit_wolf_mahalanobis():
    for x in (point_sets(1), point_sets(2, n=20, dim=50)):                 # N > C and N < C
        ours = gaussian_scores(x)
        for p in range(len(x)):
            xp = x[p].double().numpy()
            ref = np.sqrt(LedoitWolf().fit(xp).mahalanobis(xp))
            np.testing.assert_allclose(ours[p].numpy(), ref, rtol=1e-4)


def test_knn_is_mean_distance_to_other_points():
    x = point_sets(3)
    ours = knn_scores(pairwise_distances(x), 4)
    d = torch.cdist(x.double(), x.double())
    d.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    ref = d.sort(dim=2).values[:, :, :4].mean(2)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4)
    assert (ours[:, :3].mean(1) > ours[:, 3:].mean(1)).all()              # outliers score high


# -- the detector ----------------------------------------------------------------------------------
@pytest.mark.parametrize("discriminator", DISCRIMINATORS)
def test_each_discriminator_fits_and_scores(noisy, fitted, discriminator):
    model, test = fitted[discriminator], noisy.test
    n = len(noisy.train)
    omega = model.outlier_scores_.numpy()
    assert omega.shape == (n, 20, 20) and np.isfinite(omega).all() and (omega >= 0).all()
    # normalised so that inliers ≈ 1: at least half of every position's scores are ≤ 1
    assert ((omega <= 1 + 1e-6).mean(0) >= 0.5).all()
    scores, maps = model.score(test)
    assert scores.shape == (len(test),) and maps.shape == (len(test), 160, 160)
    assert scores.dtype == np.float32 and maps.dtype == np.float32 and np.isfinite(maps).all()
    assert scores[test.labels == 1].mean() > scores[test.labels == 0].mean()
    assert evaluate(test, scores, maps)["i_auroc"] >= I_AUROC_FLOOR


@pytest.mark.parametrize("discriminator", DISCRIMINATORS)
def test_injected_anomalies_get_high_outlier_scores(noisy, fitted, discriminator):
    train = noisy.train
    omega = fitted[discriminator].outlier_scores_.numpy()                  # (N, h, w)
    assert roc_auc_score(train.labels, omega.reshape(len(train), -1).max(1)) >= IMAGE_FLOOR
    on_defect = F.adaptive_max_pool2d(torch.from_numpy(train.masks).float()[:, None], (20, 20))[:, 0] > 0
    bad, normal = omega[on_defect.numpy()], omega[train.labels == 0].ravel()
    labels = np.r_[np.ones(len(bad)), np.zeros(len(normal))]
    assert roc_auc_score(labels, np.r_[bad, normal]) >= PATCH_FLOOR


def test_denoising_drops_the_expected_patches(noisy, fitted):
    model = fitted["lof"]
    n = len(noisy.train)                                                   # 48 images, 20×20 grid
    n_drop = int(0.1 * n)
    keep, omega = model.kept_mask_.numpy(), model.outlier_scores_.numpy()
    assert (keep.sum(0) == n - n_drop).all()                               # at every position
    dropped_min = np.where(keep, np.inf, omega).min(0)
    kept_max = np.where(keep, omega, -np.inf).max(0)
    assert (dropped_min >= kept_max).all()                                 # the most outlying ones
    assert len(model.memory_bank_) == int(0.1 * (n - n_drop) * 400)
    index = model.coreset_index_.numpy()
    assert keep.reshape(-1)[index].all()
    np.testing.assert_array_equal(model.bank_weights_.cpu().numpy(), omega.reshape(-1)[index])


def test_denoise_mask_global_scope_and_zero_ratio():
    omega = torch.rand(10, 4, 5, generator=torch.Generator().manual_seed(0))
    keep = denoise_mask(omega, 0.3, "global")
    assert int((~keep).sum()) == 3 * 20
    assert float(omega[~keep].min()) >= float(omega[keep].max())
    assert denoise_mask(omega, 0.0).all()
    assert (denoise_mask(omega, 0.3).sum(0) == 7).all()


def test_soft_weighting_changes_scores_and_reduces_to_patchcore(noisy, fitted):
    model, test = fitted["gaussian"], noisy.test.subset(range(12))
    weighted = model.score(test).image_scores
    model.soft_weight = False
    try:
        unweighted = model.score(test).image_scores
    finally:
        model.soft_weight = True
    assert not np.allclose(weighted, unweighted)
    few = noisy.train.subset(range(12))
    plain = SoftPatch(denoise_ratio=0.0, soft_weight=False, progress=False).fit(few).score(test)
    reference = PatchCore(progress=False).fit(few).score(test)
    np.testing.assert_array_equal(plain.image_scores, reference.image_scores)
    np.testing.assert_array_equal(plain.pixel_maps, reference.pixel_maps)


def test_bad_inputs(noisy):
    train, test = noisy.train, noisy.test
    with pytest.raises(NotFittedError):
        SoftPatch().score(test)
    with pytest.raises(ValueError, match="empty"):
        SoftPatch(progress=False).fit(train.subset([]))
    for kwargs, message in [({"discriminator": "isolation_forest"}, "discriminator"),
                            ({"denoise_ratio": 1.0}, "denoise_ratio"), ({"denoise_ratio": -0.1}, "denoise_ratio"),
                            ({"n_neighbors_lof": 0}, "n_neighbors_lof"), ({"denoise_scope": "image"}, "denoise_scope"),
                            ({"coreset_ratio": 0}, "coreset_ratio")]:
        with pytest.raises(ValueError, match=message):
            SoftPatch(**kwargs).fit(train)
    single = SoftPatch(progress=False).fit(train.subset([0]))              # one image: nothing to compare
    assert np.all(single.outlier_scores_.numpy() == 1) and single.kept_mask_.all()

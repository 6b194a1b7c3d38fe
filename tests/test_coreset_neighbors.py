"""Tests for lbnb.neighbors (exact chunked kNN) and lbnb.coreset (greedy k-center subsampling)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lbnb.coreset import coverage_radius, greedy_coreset, random_projection
from lbnb.neighbors import DEFAULT_BLOCK_BYTES, auto_chunk_size, nearest, squared_distances


def gaussian(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def clustered(n_clusters=12, per_cluster=(5, 400), dim=16, seed=0):
    """Clusters of very different sizes: random subsets miss the small ones, k-center does not."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_clusters, dim, generator=gen) * 20
    sizes = torch.linspace(per_cluster[0], per_cluster[1], n_clusters).long()
    return torch.cat([c + torch.randn(int(s), dim, generator=gen) for c, s in zip(centers, sizes)])


# -- neighbours ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_nearest_matches_brute_force(k, chunk_size):
    queries, bank = gaussian((150, 24), 1), gaussian((90, 24), 2)
    ref = torch.cdist(queries.double(), bank.double())
    ref_d, ref_i = torch.sort(ref, dim=1)
    dist, index = nearest(queries, bank, k=k, chunk_size=chunk_size)
    assert dist.shape == index.shape == (150, k)
    assert dist.dtype == torch.float32 and index.dtype == torch.int64
    np.testing.assert_allclose(dist.numpy(), ref_d[:, :k].numpy(), rtol=1e-5, atol=1e-4)
    assert torch.equal(index, ref_i[:, :k])


def test_nearest_distance_zero_for_bank_members_and_never_nan():
    bank = gaussian((50, 8), 3) * 10 + 10_000           # ‖b‖² ~ 1e9: float32 cancellation territory
    dist, index = nearest(bank, bank, k=1, chunk_size=16)
    assert torch.equal(index[:, 0], torch.arange(50))
    assert torch.isfinite(dist).all() and (dist >= 0).all()
    assert float(dist.max()) < 0.1                      # uncentred, the error would be ~10
    assert (squared_distances(bank, bank) >= 0).all()


def test_auto_chunk_bounds_block_memory():
    for m in (1, 1000, 80_000, 10**8):
        chunk = auto_chunk_size(m)
        assert chunk >= 1
        assert chunk == 1 or chunk * m * 4 <= DEFAULT_BLOCK_BYTES


def test_nearest_bad_inputs():
    q, b = gaussian((5, 4)), gaussian((6, 4))
    with pytest.raises(ValueError, match="share C"):
        nearest(q, gaussian((6, 3)))
    with pytest.raises(ValueError, match="k must be"):
        nearest(q, b, k=7)
    with pytest.raises(ValueError, match="k must be"):
        nearest(q, b, k=0)
    with pytest.raises(ValueError, match="empty"):
        nearest(q, b[:0])
    with pytest.raises(ValueError, match="chunk_size"):
        nearest(q, b, chunk_size=0)


# -- coreset ---------------------------------------------------------------------------------------
def naive_greedy(x: np.ndarray, n_select: int, first: int) -> list[int]:
    """Textbook farthest-point selection in float64."""
    chosen = [first]
    min_d = np.linalg.norm(x - x[first], axis=1)
    while len(chosen) < n_select:
        nxt = int(np.argmax(min_d))
        chosen.append(nxt)
        min_d = np.minimum(min_d, np.linalg.norm(x - x[nxt], axis=1))
    return chosen


def test_greedy_coreset_is_farthest_point_selection():
    x = clustered(seed=4)
    index = greedy_coreset(x, 40, projection_dim=None, random_state=7)
    assert index.tolist() == naive_greedy(x.double().numpy(), 40, int(index[0]))


def test_greedy_coreset_size_uniqueness_determinism_and_seeds():
    x = gaussian((3000, 152), 5)
    a = greedy_coreset(x, 200, random_state=0)
    assert a.shape == (200,) and a.dtype == torch.int64
    assert len(set(a.tolist())) == 200 and int(a.min()) >= 0 and int(a.max()) < 3000
    assert torch.equal(a, greedy_coreset(x, 200, random_state=0))
    assert not torch.equal(a, greedy_coreset(x, 200, random_state=1))


def test_greedy_coreset_covers_better_than_random():
    x = clustered(seed=0)
    for seed in range(3):
        index = greedy_coreset(x, 30, projection_dim=8, random_state=seed)   # projected: still covers
        random_subset = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:30]
        assert coverage_radius(x, index) <= coverage_radius(x, random_subset)
    # every cluster, even the 5-point one, is hit by the greedy coreset
    full = greedy_coreset(x, 30, projection_dim=None)
    assert coverage_radius(x, full) < 10  # clusters sit ~20σ apart, radius within a cluster is ~5


def test_greedy_coreset_all_points_and_bad_inputs():
    x = gaussian((20, 4))
    assert torch.equal(greedy_coreset(x, 20), torch.arange(20))
    assert torch.equal(greedy_coreset(x, 50), torch.arange(20))
    with pytest.raises(ValueError, match="n_select"):
        greedy_coreset(x, 0)
    with pytest.raises(ValueError, match="non-empty"):
        greedy_coreset(x[:0], 3)
    with pytest.raises(ValueError, match="projection_dim"):
        greedy_coreset(x, 3, projection_dim=0)


def test_greedy_coreset_restores_thread_count():
    before = torch.get_num_threads()
    greedy_coreset(gaussian((500, 8)), 50)
    assert torch.get_num_threads() == before


def test_random_projection_seeded_and_roughly_distance_preserving():
    x = gaussian((100, 512), 6)
    z = random_projection(x, 128, random_state=3)
    assert z.shape == (100, 128)
    assert torch.equal(z, random_projection(x, 128, random_state=3))
    ratio = torch.pdist(z) / torch.pdist(x)
    assert 0.7 < float(ratio.min()) and float(ratio.max()) < 1.3          # Johnson–Lindenstrauss
    assert random_projection(x[:, :64], 128) is not None and random_projection(x[:, :64], 128).shape == (100, 64)

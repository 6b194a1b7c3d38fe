"""Tests for lbnb.filtering (stage 1): partition, score matrix, aggregations, selection, report, bad input.

The oracle scorer below scores an image by its mean intensity, whatever it was trained on, so every
selection has one right answer: the lowest-scored ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lbnb.detector_base import NotFittedError, Scores, as_imageset
from lbnb.filtering import (AGGREGATIONS, ScoreMatrix, aggregate, auto_threshold, cross_maps, filter_report,
                            round_report,
                            partition,
                            score_matrix, select, stage1)
from lbnb.imageset import ImageSet


@dataclass
class OracleScorer:
    """Score = mean intensity of the image; records what it was trained on."""

    random_state: int = 0

    def fit(self, images):
        self.train_ids_ = as_imageset(images).ids.copy()
        return self

    def score(self, images):
        if not hasattr(self, "train_ids_"):
            raise NotFittedError("not fitted")
        data = as_imageset(images)
        return Scores(data.images.reshape(len(data), -1).mean(1).astype(np.float32),
                      np.zeros((len(data),) + data.image_size, np.float32))


def toy_set(n=30, seed=0, n_bad=6) -> ImageSet:
    """n images of distinct constant intensity; the n_bad brightest are labelled contaminated."""
    rng = np.random.default_rng(seed)
    levels = rng.permutation(np.linspace(10, 240, n).round().astype(np.uint8))
    images = np.broadcast_to(levels[:, None, None, None], (n, 8, 8, 3)).copy()
    labels = (levels >= np.sort(levels)[-n_bad]).astype(np.int8) if n_bad else np.zeros(n, np.int8)
    masks = np.zeros((n, 8, 8), bool)
    masks[labels == 1, 2:4, 2:4] = True
    ids = np.array([f"img{i:03d}" for i in rng.permutation(n)])
    kinds = np.where(labels == 1, "bright", "good")
    return ImageSet(images, labels, masks, ids, kinds, "toy")


def matrix(scores, folds, labels=None) -> ScoreMatrix:
    scores = np.asarray(scores, float)
    k, n = scores.shape
    trained = np.asarray(folds)[None, :] == np.arange(k)[:, None]
    labels = np.zeros(n, np.int8) if labels is None else np.asarray(labels, np.int8)
    return ScoreMatrix(np.array([f"s{i}" for i in range(n)]), scores, trained, labels)


# -- partition ------------------------------------------------------------------------------------
def test_partition_is_disjoint_balanced_and_order_free():
    ids = np.array([f"id{i}" for i in range(23)])
    folds = partition(ids, 4, random_state=3)
    assert sorted(np.bincount(folds).tolist()) == [5, 6, 6, 6]
    perm = np.random.default_rng(1).permutation(len(ids))
    again = partition(ids[perm], 4, random_state=3)
    assert dict(zip(ids[perm], again)) == dict(zip(ids, folds))            # depends on ids, not order
    assert not np.array_equal(partition(ids, 4, random_state=4), folds)    # the seed matters


@pytest.mark.parametrize("k", [1, 0, -2, 2.5, True, "3", 24])
def test_partition_rejects_bad_n_subsets(k):
    with pytest.raises(ValueError, match="n_subsets"):
        partition([f"id{i}" for i in range(23)], k)


def test_partition_rejects_duplicate_ids():
    with pytest.raises(ValueError, match="unique"):
        partition(["a", "b", "a"], 2)


# -- score matrix -------------------------------------------------------------------------------
def test_score_matrix_records_who_saw_what():
    data = toy_set()
    m = score_matrix(data, OracleScorer, n_subsets=3, progress=False)
    assert m.scores.shape == m.trained_on.shape == (3, len(data))
    assert (m.trained_on.sum(0) == 1).all()
    np.testing.assert_array_equal(m.folds, partition(data.ids, 3))
    expected = data.images.reshape(len(data), -1).mean(1)
    np.testing.assert_allclose(m.scores, np.broadcast_to(expected, (3, len(data))), rtol=1e-6)
    assert m.fit_seconds.shape == (3,) and m.seconds >= 0


def test_sub_models_train_on_their_subset_only():
    data = toy_set()
    made = []

    def factory(seed):
        made.append(OracleScorer(seed))
        return made[-1]

    m = score_matrix(data, factory, n_subsets=3, random_state=7, progress=False)
    assert [d.random_state for d in made] == [7, 8, 9]
    for k, d in enumerate(made):
        assert set(d.train_ids_) == set(data.ids[m.trained_on[k]])


def test_factory_errors_are_clear():
    data = toy_set()
    shared = OracleScorer()
    with pytest.raises(ValueError, match="same object"):
        score_matrix(data, lambda s: shared, progress=False)
    with pytest.raises(TypeError, match="fit\\(\\) and score\\(\\)"):
        score_matrix(data, lambda s: object(), progress=False)

    class NeverFitted(OracleScorer):
        def fit(self, images):
            return self

    with pytest.raises(RuntimeError, match="unfitted"):
        score_matrix(data, NeverFitted, progress=False)

    class FitReturnsJunk(OracleScorer):
        def fit(self, images):
            super().fit(images)
            return 42

    with pytest.raises(TypeError, match="returned int"):
        score_matrix(data, FitReturnsJunk, progress=False)

    class WrongShape(OracleScorer):
        def score(self, images):
            return Scores(np.zeros(3, np.float32), np.zeros((3, 8, 8), np.float32))

    with pytest.raises(TypeError, match="shape"):
        score_matrix(data, WrongShape, progress=False)


# -- aggregation -----------------------------------------------------------------------------------
def test_aggregations_by_hand():
    # 3 models, 4 images; image i belongs to fold folds[i]
    s = [[0.0, 4.0, 2.0, 9.0],
         [3.0, 0.0, 6.0, 1.0],
         [5.0, 2.0, 0.0, 5.0]]
    m = matrix(s, folds=[0, 1, 2, 1])
    np.testing.assert_allclose(aggregate(m, "mean", "all"), [8 / 3, 2.0, 8 / 3, 5.0])
    np.testing.assert_allclose(aggregate(m, "mean", "cross"), [4.0, 3.0, 4.0, 7.0])    # own model left out
    np.testing.assert_allclose(aggregate(m, "max", "cross"), [5.0, 4.0, 6.0, 9.0])
    np.testing.assert_allclose(aggregate(m, "median", "all"), [3.0, 2.0, 2.0, 5.0])
    np.testing.assert_allclose(aggregate(m, "variance", "cross"), [1.0, 1.0, 4.0, 4.0])
    np.testing.assert_allclose(aggregate(m, "max_variance", "cross"), [5.0, 4.0, 24.0, 36.0])
    # ranks within each model over the images it scores (cross), divided by their count:
    # model 0 scores images 1, 2, 3 (4, 2, 9 -> 2/3, 1/3, 1); model 1 images 0, 2 (3, 6 -> 1/2, 1);
    # model 2 images 0, 1, 3 (5, 2, 5 -> tied 2.5/3, 1/3, 2.5/3)
    np.testing.assert_allclose(aggregate(m, "rank_mean", "cross"),
                               [np.mean([1 / 2, 2.5 / 3]), np.mean([2 / 3, 1 / 3]),
                                np.mean([1 / 3, 1.0]), np.mean([1.0, 2.5 / 3])])


def test_rank_mean_ignores_a_models_scale():
    rng = np.random.default_rng(0)
    base = rng.random(12)
    m = matrix(np.stack([base, 1000 * base, base + 5]), folds=np.arange(12) % 3)
    np.testing.assert_array_equal(np.argsort(aggregate(m, "rank_mean", "all")), np.argsort(base))


def test_aggregation_bad_input():
    m = matrix([[0.0, 1.0], [1.0, 0.0]], folds=[0, 1])
    with pytest.raises(ValueError, match="≥ 2 scores"):
        aggregate(m, "variance", "cross")
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(m, "sum", "all")
    with pytest.raises(ValueError, match="scope"):
        aggregate(m, "mean", "self")


# -- selection -------------------------------------------------------------------------------------
def test_keep_fraction_keeps_the_lowest_scores():
    s = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.5, 7.0, 6.0, 8.0, 9.0])
    np.testing.assert_array_equal(np.flatnonzero(select(s, 0.3)), [1, 3, 5])   # ⌊10 · 0.3⌋ = 3
    assert select(s, 1.0).all()
    assert select(s, 0.01).sum() == 1                                       # at least one image


def test_ties_break_by_id_not_position():
    s = np.zeros(6)
    ids = np.array(["f", "b", "d", "a", "e", "c"])
    assert set(ids[select(s, 0.5, ids)]) == {"a", "b", "c"}


def test_auto_threshold_finds_outliers_without_knowing_alpha():
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, 400)
    for n_out in (0, 40, 120):                                              # α = 0, 0.1, 0.3
        s = np.concatenate([normal, rng.normal(10, 1, n_out)])
        keep = select(s, "auto")
        assert keep[400:].sum() == 0                                        # every outlier removed
        assert keep[:400].mean() > 0.98                                    # few normals lost
    assert auto_threshold(normal) == pytest.approx(3.0, abs=0.4)            # ≈ median + 3σ


@pytest.mark.parametrize("t", [0, -0.1, 1.5, float("nan"), "half", None])
def test_select_rejects_bad_keep_fraction(t):
    with pytest.raises(ValueError, match="keep_fraction"):
        select(np.arange(5.0), t)


# -- report and the oracle selection regression (official code defect 1) ----------------------------
def test_filter_report_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([1.0, 2.0, 3.0, 5.0, 4.0, 6.0])
    keep = np.array([True, True, True, False, True, False])
    r = filter_report(labels, scores, keep)
    assert r["filter_auroc"] == pytest.approx(7 / 8)
    assert r["removed_share"] == 0.5 and r["normal_removed_share"] == 0.25
    assert r["kept_rate"] == 0.25 and r["input_rate"] == pytest.approx(1 / 3)
    assert (r["n_kept"], r["n_total"]) == (4, 6)
    assert np.isnan(filter_report(np.zeros(3), np.arange(3.0), np.ones(3, bool))["filter_auroc"])


@pytest.mark.parametrize("scope", ["all", "cross"])
def test_oracle_selection_is_exactly_the_lowest_scored_ids_whatever_the_order(scope):
    data = toy_set(n=40, n_bad=8)
    intensity = dict(zip(data.ids, data.images[:, 0, 0, 0]))
    lowest = set(sorted(data.ids, key=lambda i: intensity[i])[:24])       # ⌊40 · 0.6⌋
    for seed in range(3):
        shuffled = data.subset(np.random.default_rng(seed).permutation(len(data)))
        result = stage1(shuffled, OracleScorer, n_subsets=4, keep_fraction=0.6, scope=scope,
                        random_state=seed, progress=False)
        assert set(result.kept_ids) == lowest
        assert result.report["removed_share"] == 1.0 and result.report["kept_rate"] == 0.0
        assert result.report["filter_auroc"] == 1.0


def test_reselect_reuses_the_matrix():
    result = stage1(toy_set(), OracleScorer, n_subsets=3, keep_fraction=0.5, progress=False)
    other = result.reselect(keep_fraction=0.9, aggregation="median")
    assert other.matrix is result.matrix and other.keep.sum() == 27
    with pytest.raises(TypeError, match="reselect"):
        result.reselect(n_subsets=4)


def test_all_aggregations_run_on_a_real_matrix():
    result = stage1(toy_set(), OracleScorer, n_subsets=3, progress=False)
    for how in AGGREGATIONS:
        assert result.reselect(aggregation=how).aggregated.shape == (30,)


def test_cross_maps_average_the_out_of_fold_models():
    data = toy_set()
    result = stage1(data, OracleScorer, n_subsets=3, progress=False)
    maps = cross_maps(result.matrix, data, [0, 5])
    assert maps.shape == (2, 8, 8) and len(result.matrix.models) == 3
    with pytest.raises(ValueError, match="training set"):
        cross_maps(result.matrix, data.subset(np.arange(10)), [0])


# -- purification rounds ---------------------------------------------------------------------------
def test_rounds_rescore_the_kept_set_and_keep_t_overall():
    data = toy_set(n=40, n_bad=8)
    intensity = dict(zip(data.ids, data.images[:, 0, 0, 0]))
    result = stage1(data, OracleScorer, n_subsets=4, keep_fraction=0.5, n_rounds=2, progress=False)
    first, second = result.rounds
    assert len(first.matrix.ids) == 40 and first.round_keep.sum() == 28    # ⌊40 · √0.5⌋
    assert set(second.matrix.ids) == set(first.matrix.ids[first.round_keep])  # round 2 sees round 1's kept
    assert second.round_keep.sum() == 20                                   # ⌊40 · 0.5⌋ overall
    lowest = set(sorted(data.ids, key=lambda i: intensity[i])[:20])
    assert set(result.kept_ids) == lowest == set(second.kept_ids)
    assert result.keep.shape == (40,) and result.report["n_rounds"] == 2 and result.report["n_kept"] == 20
    assert result.seconds >= result.matrix.seconds
    with pytest.raises(ValueError, match="one-round"):
        result.reselect(keep_fraction=0.9)


def test_auto_rounds_stop_once_nothing_is_removed():
    data = toy_set(n=40, n_bad=0)
    levels = np.random.default_rng(0).normal(100, 5, 40).round()
    levels[:3] = 250
    images = np.broadcast_to(levels.astype(np.uint8)[:, None, None, None], data.images.shape).copy()
    data = ImageSet(images, (np.arange(40) < 3).astype(np.int8), data.masks, data.ids, data.defect_types, "toy")
    result = stage1(data, OracleScorer, n_subsets=4, n_rounds=5, progress=False)
    rounds = result.rounds
    assert len(rounds) < 5 and rounds[-1].round_keep.all()                 # converged early
    assert result.report["removed_share"] == 1.0
    assert result.report["n_rounds"] == len(rounds)


@pytest.mark.parametrize("r", [0, -1, 1.5, True, "2"])
def test_stage1_rejects_bad_n_rounds(r):
    with pytest.raises(ValueError, match="n_rounds"):
        stage1(toy_set(), OracleScorer, n_subsets=3, n_rounds=r, progress=False)


def test_round_report_counts_each_round():
    data = toy_set(n=40, n_bad=8)
    result = stage1(data, OracleScorer, n_subsets=4, keep_fraction=0.5, n_rounds=2, progress=False)
    rows = round_report(result)
    assert [r["n_scored"] for r in rows] == [40, 28]
    assert rows[0]["contaminated_removed"] == 8 and rows[0]["normal_removed"] == 4   # the 12 brightest
    assert rows[1]["contaminated_removed"] == 0 and rows[1]["normal_removed"] == 8
    assert rows[-1]["contaminated_left"] == 0

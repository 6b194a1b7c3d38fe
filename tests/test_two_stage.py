"""Tests for lbnb.two_stage: TwoStage as a detector, its bad input, the stage-1 budget, and PatchCore's
self-scoring trap (official code defect 2): scope "all" lets a duplicated defective image hide behind its
own patches, scope "cross" finds it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lbnb.contamination import contaminate_softpatch
from lbnb.data import load_embedded
from lbnb.detector_base import NotFittedError
from lbnb.filtering import partition
from lbnb.imageset import ImageSet
from lbnb.metrics import evaluate
from lbnb.patchcore import PatchCore
from lbnb.reconstruction import FeatureReconstruction
from lbnb.two_stage import TwoStage, with_iterations
from tests.test_filtering import OracleScorer, toy_set


def test_stage_two_trains_on_exactly_the_kept_ids():
    data = toy_set(n=40, n_bad=8)
    model = TwoStage(OracleScorer, n_subsets=4, keep_fraction=0.75, progress=False).fit(data)
    intensity = dict(zip(data.ids, data.images[:, 0, 0, 0]))
    lowest = set(sorted(data.ids, key=lambda i: intensity[i])[:30])
    assert set(model.kept_ids_) == lowest == set(model.detector_.train_ids_)
    assert model.report_["removed_share"] == 1.0
    assert model.stage1_.matrix.scores.shape == (4, 40)
    scores, maps = model.score(data)
    assert scores.shape == (40,) and maps.shape == (40, 8, 8)
    assert model.stage1_seconds_ >= 0 and model.stage2_seconds_ >= 0


def test_stage_two_trains_on_the_last_rounds_kept_ids():
    data = toy_set(n=40, n_bad=8)
    model = TwoStage(OracleScorer, n_subsets=4, keep_fraction=0.5, n_rounds=2, progress=False).fit(data)
    assert len(model.stage1_.rounds) == 2
    assert set(model.detector_.train_ids_) == set(model.kept_ids_) == set(model.stage1_.rounds[-1].kept_ids)
    assert len(model.kept_ids_) == 20 and model.report_["n_rounds"] == 2
    with pytest.raises(ValueError, match="n_rounds"):
        TwoStage(OracleScorer, n_rounds=0)


def test_auto_selection_removes_the_outliers():
    data = toy_set(n=40, n_bad=0)
    levels = np.random.default_rng(0).normal(100, 5, 40).round()
    levels[:4] = 250                                                       # four far outliers
    images = np.broadcast_to(levels.astype(np.uint8)[:, None, None, None], data.images.shape).copy()
    data = ImageSet(images, (np.arange(40) < 4).astype(np.int8), data.masks, data.ids, data.defect_types, "toy")
    model = TwoStage(OracleScorer, n_subsets=3, progress=False).fit(data)
    assert model.report_["removed_share"] == 1.0 and model.report_["normal_removed_share"] == 0.0


def test_score_before_fit_and_bad_parameters():
    with pytest.raises(NotFittedError):
        TwoStage(OracleScorer).score(toy_set())
    with pytest.raises(NotFittedError):
        TwoStage(OracleScorer).kept_ids_
    for bad in (0, 1.5, "all", -1):
        with pytest.raises(ValueError, match="keep_fraction"):
            TwoStage(OracleScorer, keep_fraction=bad)
    with pytest.raises(ValueError, match="aggregation"):
        TwoStage(OracleScorer, aggregation="sum")
    with pytest.raises(ValueError, match="scope"):
        TwoStage(OracleScorer, scope="own")
    with pytest.raises(TypeError, match="callable"):
        TwoStage(OracleScorer())
    data = toy_set(n=10)
    with pytest.raises(ValueError, match="n_subsets"):
        TwoStage(OracleScorer, n_subsets=1).fit(data)
    with pytest.raises(ValueError, match="larger than the training set allows"):
        TwoStage(OracleScorer, n_subsets=11).fit(data)


def test_stage1_budget_applies_to_trained_detectors_only():
    made = with_iterations(lambda s: FeatureReconstruction(n_iterations=300, random_state=s), 25)(3)
    assert made.n_iterations == 25 and made.random_state == 3
    assert with_iterations(OracleScorer, None) is OracleScorer
    with pytest.raises(TypeError, match="n_iterations"):
        with_iterations(lambda s: PatchCore(random_state=s), 10)(0)
    with pytest.raises(ValueError, match="stage1_iterations"):
        with_iterations(OracleScorer, 0)

    budgets = []

    @dataclass
    class Budgeted(OracleScorer):
        n_iterations: int = 1000

        def fit(self, images):
            budgets.append(self.n_iterations)
            return super().fit(images)

    TwoStage(Budgeted, n_subsets=3, keep_fraction=0.5, stage1_iterations=10, n_rounds=1,
             progress=False).fit(toy_set())
    assert budgets == [10, 10, 10, 1000]                                   # sub-models short, stage 2 full


# -- real features -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def brick():
    return load_embedded("brick", n_train=36, n_test_good=12, n_test_per_type=6)


def pc(seed):
    return PatchCore(coreset_ratio=0.25, random_state=seed, progress=False)


def test_own_patches_hide_a_defect_from_its_own_model_and_cross_scope_leaves_that_vote_out(brick):
    """A defective image, duplicated, both copies in one subset (K = 3).

    Its own sub-model has its patches in the bank: it scores both copies like any training image of its
    own (≈ the self-score of normal images, below every normal image's score by another model) — the
    defect hides behind its own patches. Scope "cross" leaves that vote out and ranks the copies on top.
    With the mean, scope "all" only adds the uninformative vote (it is ≈ equal for every image, so the
    ranking barely changes): the trap bites aggregations that listen to low votes, such as the median
    when the copies sit in two subsets — then both scopes miss them (measured; see notebook 03)."""
    train, test = brick
    bad = np.flatnonzero(test.labels == 1)
    clean_scores = pc(0).fit(train).score(test.subset(bad)).image_scores
    defect = test.subset([bad[np.argmax(clean_scores)]])                  # a defect a clean model sees
    copy = ImageSet(defect.images, defect.labels, defect.masks, np.array(["copy/of/the/defect"]),
                    defect.defect_types, defect.category)
    data = train.concat(defect).concat(copy)
    seed = next(s for s in range(50) if len(set(partition(data.ids, 3, s)[-2:])) == 1)
    result = TwoStage(pc, n_subsets=3, scope="all", keep_fraction=0.9, random_state=seed, n_rounds=1,
                      progress=False).fit(data).stage1_
    m = result.matrix
    own = m.trained_on[:, -1].argmax()
    normal_cross = np.concatenate([m.scores[k, ~m.trained_on[k]][:-2] for k in range(m.n_subsets) if k != own])
    assert m.scores[own, -2:].max() < normal_cross.min()                  # hidden from its own model
    cross = result.reselect(scope="cross")
    assert sorted((-cross.aggregated).argsort().argsort()[-2:].tolist()) == [0, 1]
    assert not cross.keep[-2:].any()


def test_two_stage_patchcore_purifies_a_contaminated_set(brick):
    train, test = brick
    noisy = contaminate_softpatch(train, test, 0.25, random_state=0)       # 9 defective of 45
    model = TwoStage(pc, n_subsets=3, keep_fraction=0.7, progress=False).fit(noisy.train)
    report = model.report_
    assert report["filter_auroc"] >= 0.9                                   # measured 0.99
    assert report["kept_rate"] < 0.5 * report["input_rate"]
    baseline = pc(0).fit(noisy.train)
    two = evaluate(noisy.test, *model.score(noisy.test))["i_auroc"]
    base = evaluate(noisy.test, *baseline.score(noisy.test))["i_auroc"]
    assert two > base

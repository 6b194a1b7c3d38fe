"""The two-stage framework as a detector like any other (a meta-estimator around a detector factory).

Stage 1 (:mod:`lbnb.filtering`): K sub-models, each trained (briefly, ``stage1_iterations`` for trained
models) on one of K disjoint subsets, score every training image; the aggregated score purifies the
set. Stage 2: a fresh detector from the same factory is trained on the kept images only. ``score``
is then the stage-2 detector's — so baseline, two-stage, SoftPatch and the clean oracle are rows of one
results table.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from .detector_base import Scores, as_imageset, check_fitted, check_training_set
from .filtering import (AGGREGATIONS, AUTO, SCOPES, DetectorFactory, Stage1Result, _check_choice,
                        check_keep_fraction, check_n_rounds, check_n_subsets, fit_checked, new_detector, stage1)


def with_iterations(make_detector: DetectorFactory, n_iterations: int | None) -> DetectorFactory:
    """The factory with ``n_iterations`` replaced (the stage-1 budget); unchanged for None.

    A detector without an ``n_iterations`` hyperparameter (a memory bank is not trained) gets a clear
    error rather than a silently ignored budget.
    """
    if n_iterations is None:
        return make_detector
    if isinstance(n_iterations, bool) or int(n_iterations) != n_iterations or n_iterations < 1:
        raise ValueError(f"stage1_iterations must be an integer ≥ 1 or None, got {n_iterations!r}")

    def make(seed: int):
        detector = make_detector(seed)
        if not (dataclasses.is_dataclass(detector) and hasattr(detector, "n_iterations")):
            raise TypeError(f"stage1_iterations applies to trained detectors with an n_iterations "
                            f"hyperparameter; {type(detector).__name__} has none (use stage1_iterations=None)")
        return dataclasses.replace(detector, n_iterations=int(n_iterations))

    return make


@dataclass
class TwoStage:
    """Stage-1 purification, then stage-2 training on the kept images.

    Hyperparameters: ``make_detector`` (random_state → new unfitted detector; used for the K sub-models
    and the final model); ``n_subsets`` K; ``keep_fraction`` t (kept share, the paper's semantics) or
    "auto" (robust threshold, no knowledge of α); ``aggregation`` and ``scope`` (see
    :func:`lbnb.filtering.aggregate`); ``stage1_iterations`` (training budget of each sub-model; None
    keeps the factory's); ``random_state`` (partition and sub-model seeds); ``n_rounds`` (most
    purification rounds, see :func:`lbnb.filtering.stage1`).

    Defaults K = 10 and up to 5 rounds (the released config uses K = 3 and one round). Measured with
    ``benchmarks/bench_two_stage.py --rounds 5`` on the embedded benchmark (PatchCore, coreset 0.05,
    5 categories × 3 seeds): share of the baseline→oracle I-AUROC gap recovered at α = 0.1 / 0.2 / 0.4 —
    K = 10, ≤ 5 rounds: 80 % / 76 % / 15 %; K = 5, ≤ 5 rounds: 78 % / 64 % / 7 %; K = 5, one round:
    50 % / −18 % / −23 %. More subsets means each sub-model has seen fewer copies of a recurring defect,
    and costs about the same (smaller banks). At α = 0: −0.002 (K = 10) and −0.001 (K = 5) against the
    baseline. Stage-1 cost: 3.1–3.7× a baseline fit (K = 10, rounds), 0.75–0.9× (K = 5, one round).

    Learned state: ``stage1_`` (:class:`~lbnb.filtering.Stage1Result`: score matrix, kept ids, report),
    ``detector_`` (the stage-2 detector), ``stage1_seconds_``, ``stage2_seconds_``.
    """

    make_detector: DetectorFactory
    n_subsets: int = 10
    keep_fraction: float | str = AUTO
    aggregation: str = "mean"
    scope: str = "cross"
    stage1_iterations: int | None = None
    random_state: int = 0
    progress: bool = True
    n_rounds: int = 5

    def __post_init__(self):
        self.detector_ = None
        check_keep_fraction(self.keep_fraction)
        check_n_rounds(self.n_rounds)
        _check_choice(self.aggregation, AGGREGATIONS, "aggregation")
        _check_choice(self.scope, SCOPES, "scope")
        if not callable(self.make_detector):
            raise TypeError("make_detector must be a callable: random_state -> new unfitted detector")

    def fit(self, images) -> "TwoStage":
        """Stage 1 on ``images`` (ImageSet or uint8 (N, H, W, 3)), then stage 2 on the kept set → self."""
        data = as_imageset(images)
        check_training_set(data, minimum=2)
        check_n_subsets(self.n_subsets, len(data))
        start = time.perf_counter()
        self.stage1_ = stage1(data, with_iterations(self.make_detector, self.stage1_iterations), self.n_subsets,
                              self.keep_fraction, self.aggregation, self.scope, self.random_state, self.progress,
                              self.n_rounds)
        self.stage1_seconds_ = time.perf_counter() - start
        start = time.perf_counter()
        detector = new_detector(self.make_detector, self.random_state)
        self.detector_ = fit_checked(detector, data.subset(self.stage1_.keep.nonzero()[0]))
        self.stage2_seconds_ = time.perf_counter() - start
        return self

    @property
    def kept_ids_(self):
        check_fitted(self, "detector_")
        return self.stage1_.kept_ids

    @property
    def report_(self) -> dict:
        check_fitted(self, "detector_")
        return self.stage1_.report

    def score(self, images) -> Scores:
        """The stage-2 detector's image scores (N,) and pixel maps (N, H, W)."""
        check_fitted(self, "detector_")
        return self.detector_.score(images)

"""Stage 1 of the two-stage framework: score every training image with K sub-models, keep the normal-looking.

The paper's argument (Zhang et al., arXiv 2508.07441): normal images dominate a contaminated training
set and look alike, anomalies are rare and diverse — so a sub-model trained (briefly) on one part of the
data has learned the normal patterns but not the anomalies of the *other* parts, and sub-models trained
on different data disagree about anomalies. Steps, for a training set 𝒟 of N images:

1. :func:`partition` — K disjoint subsets 𝒟_1..𝒟_K of (almost) equal size, drawn by a seeded shuffle of
   the *sorted sample ids*, so the split depends on ids and seed only, never on the input order.
2. :func:`score_matrix` — sub-model f_k is fitted on 𝒟_k and scores every image: S[k, i] = f_k(x_i),
   a K×N matrix kept with ``trained_on[k, i] = x_i ∈ 𝒟_k``.
3. :func:`aggregate` — one stage-1 score per image from a column of S: over all K models (``scope="all"``,
   the paper) or only over the models that did not see the image (``scope="cross"``, out-of-fold; the
   paper's rule lets a memory-bank detector find each image's own patches in its bank, score ≈ 0).
4. :func:`select` — keep the lowest-scored fraction t (``keep_fraction``, the paper's t) or, with
   ``"auto"``, every image below a robust threshold that needs no knowledge of the contamination α.
5. :func:`filter_report` — how well stage 1 found the contaminated images, when labels are known.

All selections go through sample ids (the official code's defect 1: it selected by position in a
reshuffled subset, so the kept set was effectively random).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import rankdata
from tqdm.auto import tqdm

from .detector_base import NotFittedError, as_imageset
from .imageset import ImageSet
from .metrics import image_metrics
from .validation import check_ratio

AGGREGATIONS = ("mean", "max", "variance", "max_variance", "median", "rank_mean")
SCOPES = ("all", "cross")
AUTO = "auto"
AUTO_THRESHOLD_Z = 3.0  # "auto": keep scores ≤ median + z · (robust spread of the lower half)

DetectorFactory = Callable[[int], object]  # random_state -> a new, unfitted detector


def check_n_subsets(n_subsets, n_samples: int) -> int:
    """K as an int, or ValueError: K ≥ 2 (one model cannot be cross-checked) and K ≤ N (no empty subset)."""
    if isinstance(n_subsets, bool) or not isinstance(n_subsets, (int, np.integer)) or n_subsets < 2:
        raise ValueError(f"n_subsets must be an integer ≥ 2, got {n_subsets!r}")
    if n_subsets > n_samples:
        raise ValueError(f"n_subsets={n_subsets} is larger than the training set allows: {n_samples} images "
                         f"cannot fill {n_subsets} non-empty subsets")
    return int(n_subsets)


def check_keep_fraction(keep_fraction) -> None:
    """``keep_fraction`` must be "auto" or a number in (0, 1]."""
    if isinstance(keep_fraction, str):
        if keep_fraction != AUTO:
            raise ValueError(f"keep_fraction must be a number in (0, 1] or {AUTO!r}, got {keep_fraction!r}")
        return
    check_ratio(keep_fraction, "keep_fraction")


def _check_choice(value, choices, name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def partition(ids, n_subsets: int, random_state: int = 0) -> np.ndarray:
    """Subset index (N,) in 0..K−1 for each id: a seeded shuffle of the sorted ids, cut into K parts.

    Sizes differ by at most one (the paper's split gives the remainder to the last subset; balanced
    parts are as disjoint and never leave one sub-model with twice the data of another). The result
    depends only on the set of ids and the seed: permuting the input permutes the output alike.
    """
    ids = np.asarray(ids).astype(str)
    n = len(ids)
    k = check_n_subsets(n_subsets, n)
    if len(np.unique(ids)) != n:
        raise ValueError("sample ids must be unique to partition them")
    order = np.argsort(ids, kind="stable")                                 # canonical order
    shuffled = order[np.random.default_rng(random_state).permutation(n)]
    folds = np.empty(n, np.int64)
    for fold, members in enumerate(np.array_split(shuffled, k)):
        folds[members] = fold
    return folds


@dataclass
class ScoreMatrix:
    """The K sub-models' scores of every training image.

    ``ids`` (N,) sample ids; ``scores`` S (K, N) float64, S[k, i] = image score of x_i under f_k (higher =
    more anomalous); ``trained_on`` (K, N) bool, x_i ∈ 𝒟_k; ``labels`` (N,) int8 ground truth when known
    (1 = contaminated; all 0 when unknown); ``fit_seconds`` / ``score_seconds`` (K,) per sub-model;
    ``models``: the K fitted sub-models (for anomaly maps of suspects, :func:`cross_maps`).
    """

    ids: np.ndarray
    scores: np.ndarray
    trained_on: np.ndarray
    labels: np.ndarray
    fit_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    score_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    models: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        k, n = self.scores.shape
        if self.trained_on.shape != (k, n) or len(self.ids) != n or len(self.labels) != n:
            raise ValueError("scores, trained_on, ids and labels disagree in shape")
        if not np.array_equal(self.trained_on.sum(0), np.ones(n)):
            raise ValueError("every image must belong to exactly one subset")

    @property
    def n_subsets(self) -> int:
        return self.scores.shape[0]

    @property
    def folds(self) -> np.ndarray:
        """Subset index (N,) of each image."""
        return self.trained_on.argmax(0)

    @property
    def seconds(self) -> float:
        return float(self.fit_seconds.sum() + self.score_seconds.sum())


def new_detector(make_detector: DetectorFactory, random_state: int, seen: list | None = None):
    """Call the factory and check that it returned a new object with ``fit`` and ``score``."""
    detector = make_detector(random_state)
    if not (callable(getattr(detector, "fit", None)) and callable(getattr(detector, "score", None))):
        raise TypeError(f"the detector factory must return an object with fit() and score(), "
                        f"got {type(detector).__name__}")
    if seen is not None:
        if any(detector is other for other in seen):
            raise ValueError("the detector factory returned the same object twice: it must build a new, "
                             "unfitted detector on every call (e.g. lambda seed: PatchCore(random_state=seed))")
        seen.append(detector)
    return detector


def fit_checked(detector, data: ImageSet):
    """``detector.fit(data)``, then check that the result can score: a clear error otherwise."""
    fitted = detector.fit(data)
    fitted = detector if fitted is None else fitted
    if not callable(getattr(fitted, "score", None)):
        raise TypeError(f"{type(detector).__name__}.fit() returned {type(fitted).__name__}, which cannot score; "
                        f"fit() must return the fitted detector")
    return fitted


def image_scores_checked(detector, data: ImageSet) -> np.ndarray:
    """Image scores (N,) float64 of a fitted detector, with clear errors for unfitted or malformed output."""
    name = type(detector).__name__
    try:
        out = detector.score(data)
    except NotFittedError as err:
        raise RuntimeError(f"{name} is still unfitted after fit(): the factory's detector is incompatible "
                           f"({err})") from err
    scores = np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float64)
    if scores.shape != (len(data),):
        raise TypeError(f"{name}.score() must return image scores of shape ({len(data)},) first, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} gave non-finite image scores")
    return scores


def score_matrix(images, make_detector: DetectorFactory, n_subsets: int = 5, random_state: int = 0,
                 progress: bool = True) -> ScoreMatrix:
    """Fit sub-model f_k = ``make_detector(random_state + k)`` on subset 𝒟_k and score all N images.

    Every model scores every image, so one matrix serves both scopes. Detectors that share a feature
    extractor configuration read the images' features from the cache: stage 1 extracts nothing twice.
    """
    data = as_imageset(images)
    folds = partition(data.ids, n_subsets, random_state)
    k = int(folds.max()) + 1
    scores = np.zeros((k, len(data)))
    fit_s, score_s, seen = np.zeros(k), np.zeros(k), []
    for fold in tqdm(range(k), desc="stage 1 sub-models", disable=not progress):
        detector = new_detector(make_detector, random_state + fold, seen)
        start = time.perf_counter()
        detector = fit_checked(detector, data.subset(np.flatnonzero(folds == fold)))
        fit_s[fold] = time.perf_counter() - start
        scores[fold] = image_scores_checked(detector, data)
        score_s[fold] = time.perf_counter() - start - fit_s[fold]
        seen[-1] = detector
    trained_on = folds[None, :] == np.arange(k)[:, None]
    return ScoreMatrix(data.ids.copy(), scores, trained_on, data.labels.copy(), fit_s, score_s, seen)


def cross_maps(matrix: ScoreMatrix, images, index) -> np.ndarray:
    """Anomaly maps (n, H, W) of the images at ``index`` (positions in ``images``, the set the matrix was
    built on): the mean map of the sub-models that did not train on each image."""
    data = as_imageset(images)
    if not np.array_equal(data.ids, matrix.ids):
        raise ValueError("images must be the training set the score matrix was computed on")
    if len(matrix.models) != matrix.n_subsets:
        raise ValueError("this score matrix holds no fitted sub-models")
    index = np.atleast_1d(np.asarray(index))
    maps = []
    for i in index:
        chosen = data.subset([int(i)])
        maps.append(np.mean([model.score(chosen)[1][0] for k, model in enumerate(matrix.models)
                             if not matrix.trained_on[k, i]], axis=0))
    return np.stack(maps).astype(np.float32)


def aggregate(matrix: ScoreMatrix, how: str = "mean", scope: str = "cross") -> np.ndarray:
    """Stage-1 score (N,) per image from the columns of S; higher = more suspicious.

    ``scope``: "all" uses all K scores of an image (paper), "cross" only the K−1 of models not trained on
    it. ``how``: "mean" (paper default), "max", "variance" (disagreement), "max_variance" (max × variance),
    "median", or "rank_mean" (each model's scores turned into ranks among the images it scores, then
    averaged: immune to one model's scores being on another scale).
    """
    _check_choice(how, AGGREGATIONS, "aggregation")
    _check_choice(scope, SCOPES, "scope")
    valid = ~matrix.trained_on if scope == "cross" else np.ones_like(matrix.trained_on)
    s = matrix.scores
    if how == "rank_mean":
        s = np.full_like(s, np.nan)
        for k in range(len(s)):
            s[k, valid[k]] = rankdata(matrix.scores[k, valid[k]]) / valid[k].sum()
    s = np.where(valid, s, np.nan)                                         # (K, N), NaN = not used
    if how in ("variance", "max_variance") and valid.sum(0).min() < 2:
        raise ValueError(f"aggregation {how!r} needs ≥ 2 scores per image: use n_subsets ≥ 3 with scope 'cross'")
    if how in ("mean", "rank_mean"):
        return np.nanmean(s, axis=0)
    if how == "median":
        return np.nanmedian(s, axis=0)
    if how == "max":
        return np.nanmax(s, axis=0)
    variance = np.nanvar(s, axis=0)
    return variance if how == "variance" else np.nanmax(s, axis=0) * variance


def auto_threshold(aggregated: np.ndarray, z: float = AUTO_THRESHOLD_Z) -> float:
    """median + z · σ̂, σ̂ = 1.4826 · median |s − median| over the scores *below* the median.

    Contaminated images sit in the upper tail, so the spread is read from the lower half only: it stays
    the spread of normal images even when α is large (as long as normal images are the majority).
    """
    s = np.asarray(aggregated, dtype=np.float64)
    med = float(np.median(s))
    lower = med - s[s <= med]
    spread = 1.4826 * float(np.median(lower)) if len(lower) else 0.0
    return med + z * spread


def select(aggregated: np.ndarray, keep_fraction=AUTO, ids=None) -> np.ndarray:
    """Kept mask (N,) bool: the ⌊N·t⌋ lowest scores (t = ``keep_fraction``, at least one image), or with
    "auto" the scores ≤ :func:`auto_threshold`. Ties break by id (then position), never by input order."""
    check_keep_fraction(keep_fraction)
    s = np.asarray(aggregated, dtype=np.float64)
    n = len(s)
    if keep_fraction == AUTO:
        return s <= auto_threshold(s)
    n_keep = max(1, int(n * float(keep_fraction) + 1e-9))
    tie = np.asarray(ids).astype(str) if ids is not None else np.arange(n)
    order = np.lexsort((tie, s))                                           # ascending score, then id
    keep = np.zeros(n, bool)
    keep[order[:n_keep]] = True
    return keep


def filter_report(labels: np.ndarray, aggregated: np.ndarray, keep: np.ndarray) -> dict:
    """Filter quality against ground truth (1 = contaminated) — DESIGN §6.

    ``filter_auroc``: AUROC of the stage-1 score at finding contaminated images (NaN without both
    classes); ``removed_share``: share of contaminated images removed; ``normal_removed_share``: share of
    normal images removed; ``kept_rate``: contamination of the kept set; ``input_rate``: before;
    ``n_kept`` / ``n_total``.
    """
    labels = np.asarray(labels).astype(bool)
    keep = np.asarray(keep, bool)
    both = 0 < labels.sum() < len(labels)
    auroc = image_metrics(labels, aggregated)["i_auroc"] if both else float("nan")
    n_bad, n_good = int(labels.sum()), int((~labels).sum())
    return {"filter_auroc": float(auroc),
            "removed_share": float((labels & ~keep).sum() / n_bad) if n_bad else float("nan"),
            "normal_removed_share": float((~labels & ~keep).sum() / n_good) if n_good else float("nan"),
            "kept_rate": float(labels[keep].mean()) if keep.any() else float("nan"),
            "input_rate": float(labels.mean()), "n_kept": int(keep.sum()), "n_total": len(labels)}


@dataclass
class Stage1Result:
    """A score matrix and one selection from it; :meth:`reselect` tries another rule without refitting.

    ``aggregated`` (N,) stage-1 scores; ``keep`` (N,) bool; ``kept_ids``; ``report`` (see
    :func:`filter_report`).

    With several purification rounds (:func:`stage1` with ``n_rounds`` > 1), ``next_round`` is the result
    of stage 1 run again on this round's kept images. ``keep`` is then the final selection: kept by this
    round *and* by every later one. ``round_keep`` is this round's own selection, and ``rounds`` lists the
    rounds in order. ``aggregated`` stays the first round's score, the paper's stage-1 score, so
    ``report["filter_auroc"]`` measures one stage 1 whatever the number of rounds.
    """

    matrix: ScoreMatrix
    aggregation: str = "mean"
    scope: str = "cross"
    keep_fraction: float | str = AUTO
    next_round: "Stage1Result | None" = None

    def __post_init__(self):
        check_keep_fraction(self.keep_fraction)
        self.aggregated = aggregate(self.matrix, self.aggregation, self.scope)
        self.round_keep = select(self.aggregated, self.keep_fraction, self.matrix.ids)
        self.keep = self.round_keep.copy()
        if self.next_round is not None:
            self.keep &= np.isin(self.matrix.ids, self.next_round.kept_ids)

    @property
    def kept_ids(self) -> np.ndarray:
        return self.matrix.ids[self.keep]

    @property
    def rounds(self) -> list["Stage1Result"]:
        """[this round, the next, …]: one :class:`Stage1Result` per purification round."""
        return [self] + (self.next_round.rounds if self.next_round is not None else [])

    @property
    def seconds(self) -> float:
        """Sub-model fit + score seconds summed over all rounds."""
        return sum(result.matrix.seconds for result in self.rounds)

    @property
    def report(self) -> dict:
        """:func:`filter_report` of the final selection, plus ``n_rounds`` (rounds run)."""
        return {**filter_report(self.matrix.labels, self.aggregated, self.keep), "n_rounds": len(self.rounds)}

    def reselect(self, **changes) -> "Stage1Result":
        """The same matrix with other ``aggregation``, ``scope`` or ``keep_fraction`` (one round only:
        later rounds were trained on this round's selection, so they cannot be re-selected for free)."""
        params = {"aggregation": self.aggregation, "scope": self.scope, "keep_fraction": self.keep_fraction}
        unknown = set(changes) - set(params)
        if unknown:
            raise TypeError(f"reselect() takes {sorted(params)}, not {sorted(unknown)}")
        if self.next_round is not None:
            raise ValueError("reselect() needs a one-round result; run stage1(..., n_rounds=...) again instead")
        return Stage1Result(self.matrix, **{**params, **changes})


def round_report(result: Stage1Result) -> list[dict]:
    """One row per purification round: ``round`` (1-based), ``n_scored`` images it scored, and how many
    contaminated / normal images it removed and left (labels as the score matrix holds them)."""
    rows = []
    for r, res in enumerate(result.rounds, 1):
        bad = res.matrix.labels.astype(bool)
        rows.append({"round": r, "n_scored": len(bad),
                     "contaminated_removed": int((bad & ~res.round_keep).sum()),
                     "normal_removed": int((~bad & ~res.round_keep).sum()),
                     "contaminated_left": int((bad & res.round_keep).sum()),
                     "seconds": res.matrix.seconds})
    return rows


def check_n_rounds(n_rounds) -> int:
    """``n_rounds`` must be an integer ≥ 1."""
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, (int, np.integer)) or n_rounds < 1:
        raise ValueError(f"n_rounds must be an integer ≥ 1, got {n_rounds!r}")
    return int(n_rounds)


def stage1(images, make_detector: DetectorFactory, n_subsets: int = 5, keep_fraction=AUTO,
           aggregation: str = "mean", scope: str = "cross", random_state: int = 0,
           progress: bool = True, n_rounds: int = 1) -> Stage1Result:
    """Partition, fit K sub-models, score, aggregate, select — the whole of stage 1.

    ``n_rounds`` > 1 purifies iteratively: each round runs stage 1 again on the images the previous round
    kept, with a new partition (seed ``random_state + r``). Sub-models trained on a purer set have seen
    fewer copies of each recurring defect, so the defects that hid behind their look-alikes in round 1
    stand out in round 2. With ``"auto"`` the rounds stop early once a round removes nothing; with a
    fixed t round r (1-based) keeps ⌊N·t^(r/R)⌋ of the N input images, so the last one keeps ⌊N·t⌋, as
    one round would. Rounds also stop when fewer than 2·K images remain.
    """
    check_keep_fraction(keep_fraction)
    _check_choice(aggregation, AGGREGATIONS, "aggregation")
    _check_choice(scope, SCOPES, "scope")
    n_rounds = check_n_rounds(n_rounds)
    data = as_imageset(images)
    rounds, current = [], data                                          # (matrix, keep fraction) per round
    for r in range(n_rounds):
        if r and len(current) < 2 * n_subsets:
            break
        matrix = score_matrix(current, make_detector, n_subsets, random_state + r, progress)
        fraction = keep_fraction
        if keep_fraction != AUTO:                                       # keep ⌊N · t^((r+1)/R)⌋ of all N
            target = max(1, int(len(data) * float(keep_fraction) ** ((r + 1) / n_rounds) + 1e-9))
            fraction = min(1.0, target / len(current))
        rounds.append((matrix, fraction))
        keep = Stage1Result(matrix, aggregation, scope, fraction).keep
        if keep.all():
            break
        current = current.subset(np.flatnonzero(keep))
    result = None
    for matrix, fraction in reversed(rounds):
        result = Stage1Result(matrix, aggregation, scope, fraction, next_round=result)
    return result

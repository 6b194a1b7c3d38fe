"""Trials and sweeps: contaminate, fit, score, evaluate — one tidy row per trial.

A *trial* is (category, detector, method, noise α, seed): the seed draws the contamination and seeds
the detector; the method (:data:`METHODS`) says what the detector is trained on. :func:`sweep` runs
the cross product and returns a tidy ``pandas.DataFrame`` (one row per trial with every metric, the
realised contamination rate and the wall time), ready for seaborn.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Callable, Iterable

import pandas as pd
import torch
from joblib import Parallel, delayed, parallel_config
from tqdm.auto import tqdm

from .contamination import Contaminate, Contaminated, softpatch_protocol
from .filtering import AGGREGATIONS, SCOPES, stage1
from .imageset import ImageSet
from .metrics import evaluate
from .patchcore import PatchCore
from .softpatch import SoftPatch
from .two_stage import TwoStage

DetectorFactory = Callable[[int], object]  # random_state -> unfitted detector
METHODS = ("baseline", "two_stage", "oracle", "softpatch")
"""How a detector meets a contaminated training set: trained on it as is (``baseline``), on what stage 1
keeps of it (``two_stage``, :class:`~lbnb.two_stage.TwoStage`), or on the uncontaminated training set
(``oracle``, the clean upper reference; same test set); ``softpatch``: the noise-robust peer, SoftPatch
with the PatchCore factory's hyperparameters, trained on the contaminated set (PatchCore factories only)."""
CORE_METHODS = METHODS[:3]  # the methods every detector has


def fit_method(method: str, make_detector: DetectorFactory, noisy: Contaminated, clean_train: ImageSet,
               seed: int, two_stage: dict | None = None):
    """A detector fitted the way ``method`` says (see :data:`METHODS`); ``two_stage``: TwoStage options."""
    if method == "baseline":
        return make_detector(seed).fit(noisy.train)
    if method == "oracle":
        return make_detector(seed).fit(clean_train)
    if method == "two_stage":
        options = {"progress": False, **(two_stage or {})}
        return TwoStage(make_detector, random_state=seed, **options).fit(noisy.train)
    if method == "softpatch":
        return softpatch_like(make_detector(seed)).fit(noisy.train)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def softpatch_like(detector) -> SoftPatch:
    """SoftPatch with the hyperparameters (and random state) of an unfitted PatchCore ``detector``."""
    if not isinstance(detector, PatchCore):
        raise TypeError(f"method 'softpatch' needs a PatchCore factory (SoftPatch is PatchCore with "
                        f"patch-level denoising), got {type(detector).__name__}")
    return SoftPatch(**{f.name: getattr(detector, f.name) for f in dataclasses.fields(PatchCore) if f.init})


def fit_methods(train: ImageSet, test: ImageSet, make_detector: DetectorFactory, noise: float, seed: int,
                methods=CORE_METHODS, two_stage: dict | None = None,
                contaminate: Contaminate = softpatch_protocol) -> tuple[Contaminated, dict]:
    """Contaminate (``contaminate``, seeded) and fit one detector per method → (noisy, {method: detector})."""
    noisy = contaminate(train, test, noise, seed)
    return noisy, {m: fit_method(m, make_detector, noisy, train, seed, two_stage) for m in methods}


def run_trial(train: ImageSet, test: ImageSet, make_detector: DetectorFactory, noise: float,
              seed: int, method: str = "baseline", two_stage: dict | None = None,
              contaminate: Contaminate = softpatch_protocol) -> dict:
    """Contaminate ``train`` with α = ``noise`` (``contaminate``: by default the SoftPatch protocol, seeded),
    fit per ``method``, score, evaluate; the row holds every metric, the filter report (two-stage) and the
    wall times."""
    noisy = contaminate(train, test, noise, seed)
    start = time.perf_counter()
    detector = fit_method(method, make_detector, noisy, train, seed, two_stage)
    fitted = time.perf_counter()
    image_scores, pixel_maps = detector.score(noisy.test)
    done = time.perf_counter()
    row = {**evaluate(noisy.test, image_scores, pixel_maps), "method": method, "noise": float(noise),
           "seed": int(seed), "realised_rate": noisy.realised_rate, "n_train": len(noisy.train),
           "n_test": len(noisy.test), "fit_seconds": fitted - start, "score_seconds": done - fitted}
    if isinstance(detector, TwoStage):
        row.update(detector.report_, stage1_seconds=detector.stage1_seconds_)
    return row


def _labelled_trial(category, name, train, test, make_detector, noise, seed, method, two_stage, threads,
                    contaminate):
    if threads:
        torch.set_num_threads(threads)
    return {"category": category, "detector": name,
            **run_trial(train, test, make_detector, noise, seed, method, two_stage, contaminate)}


def sweep(datasets: dict[str, tuple[ImageSet, ImageSet]], detectors: dict[str, DetectorFactory],
          noise_levels: Iterable[float], seeds: Iterable[int], n_jobs: int = 1,
          progress: bool = True, methods: Iterable[str] = ("baseline",),
          two_stage: dict | None = None, contaminate: Contaminate = softpatch_protocol) -> pd.DataFrame:
    """Every (category, detector, method, α, seed) trial; ``datasets`` maps category → (train, test).

    ``n_jobs`` > 1 runs trials in local processes with joblib (each with its share of the CPU
    threads); the feature cache on disk is shared, so extract features once before a parallel sweep
    (any serial fit does) to avoid computing them in several processes at once.
    """
    methods, noise_levels, seeds = list(methods), list(noise_levels), list(seeds)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be among {METHODS}, got {bad}")
    grid = [(c, d, m, a, s) for c in datasets for d in detectors for m in methods for a in noise_levels
            for s in seeds]
    threads = _threads_per_job(n_jobs)
    calls = [delayed(_labelled_trial)(c, d, *datasets[c], detectors[d], a, s, m, two_stage, threads, contaminate)
             for c, d, m, a, s in grid]
    return pd.DataFrame(list(_run(calls, n_jobs, "trials", progress)))


def _threads_per_job(n_jobs: int) -> int:
    """Torch threads for each of ``n_jobs`` worker processes (0 = leave the count alone, serial runs)."""
    return max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else 0


def _run(calls: list, n_jobs: int, desc: str, progress: bool, backend: str = "loky"):
    """Results of joblib ``delayed`` calls, in order, with a progress bar: serially for ``n_jobs == 1``
    (loky), else in local processes (``backend="loky"``) or on a Dask cluster (``backend="dask"``, inside
    a ``dask.distributed.Client`` context)."""
    if backend not in ("loky", "dask"):
        raise ValueError(f"backend must be 'loky' or 'dask', got {backend!r}")
    if backend == "dask":
        try:
            import distributed  # noqa: F401  (joblib's dask backend needs it)
        except ImportError as err:
            raise ImportError("backend='dask' needs dask.distributed: pip install -e .[dask]") from err

    def results():
        if n_jobs == 1 and backend == "loky":
            yield from (call[0](*call[1], **call[2]) for call in calls)
            return
        context = parallel_config(backend="dask") if backend == "dask" else contextlib.nullcontext()
        with context:                                                   # registers joblib's dask backend
            yield from Parallel(n_jobs=n_jobs, return_as="generator")(calls)

    return tqdm(results(), total=len(calls), desc=desc, disable=not progress)


def _filter_rows(category, train, test, make_detector, noise, seed, n_subsets, keep_fractions, aggregations,
                 scopes, threads, contaminate):
    if threads:
        torch.set_num_threads(threads)
    noisy = contaminate(train, test, noise, seed)
    start = time.perf_counter()
    result = stage1(noisy.train, make_detector, n_subsets, keep_fractions[0], aggregations[0], scopes[0],
                    random_state=seed, progress=False)
    seconds = time.perf_counter() - start
    base = {"category": category, "noise": float(noise), "seed": int(seed), "n_subsets": int(n_subsets),
            "realised_rate": noisy.realised_rate, "stage1_seconds": seconds}
    return [{**base, "aggregation": a, "scope": s, "keep_fraction": str(t),
             **result.reselect(aggregation=a, scope=s, keep_fraction=t).report}
            for a in aggregations for s in scopes for t in keep_fractions
            if not (a in ("variance", "max_variance") and s == "cross" and n_subsets < 3)]


def filter_sweep(datasets: dict[str, tuple[ImageSet, ImageSet]], make_detector: DetectorFactory,
                 noise_levels: Iterable[float], n_subsets: Iterable[int], seeds: Iterable[int],
                 keep_fractions=("auto",), aggregations=AGGREGATIONS, scopes=SCOPES, n_jobs: int = 1,
                 progress: bool = True, contaminate: Contaminate = softpatch_protocol) -> pd.DataFrame:
    """Stage-1 filter reports over (category, α, K, seed) × (aggregation, scope, keep fraction).

    Stage 1 runs once per (category, α, K, seed); every (aggregation, scope, t) is a re-selection of
    the same score matrix, so the extra rows cost nothing. One tidy row per combination with the
    :func:`~lbnb.filtering.filter_report` columns and ``stage1_seconds``.
    """
    keep_fractions, aggregations, scopes = list(keep_fractions), list(aggregations), list(scopes)
    grid = [(c, a, k, s) for c in datasets for a in noise_levels for k in n_subsets for s in seeds]
    threads = _threads_per_job(n_jobs)
    calls = [delayed(_filter_rows)(c, *datasets[c], make_detector, a, s, k, keep_fractions, aggregations, scopes,
                                   threads, contaminate) for c, a, k, s in grid]
    return pd.DataFrame([row for rows in _run(calls, n_jobs, "stage 1", progress) for row in rows])


def gap_recovery(results: pd.DataFrame, metric: str = "i_auroc", by=("detector", "noise")) -> pd.DataFrame:
    """Per ``by`` group: mean ``metric`` of each method, and the share of the baseline→oracle gap that
    two-stage recovers, (two-stage − baseline) / (oracle − baseline), computed on the means (NaN where the
    gap is below 0.005: nothing to recover) — column ``recovered``. Any further method (say a variant of
    two-stage labelled "two_stage_1round") gets its own ``recovered_<method>`` column."""
    means = results.pivot_table(index=list(by), columns="method", values=metric, aggfunc="mean")
    missing = {"baseline", "two_stage", "oracle"} - set(means.columns)
    if missing:
        raise ValueError(f"gap_recovery needs rows of methods {sorted(missing)}")
    gap = means["oracle"] - means["baseline"]
    others = [m for m in means.columns if m not in ("baseline", "two_stage", "oracle")]
    columns = ["baseline", "two_stage", *others, "oracle", "recovered"]
    means["recovered"] = ((means["two_stage"] - means["baseline"]) / gap).where(gap >= 0.005)
    for m in others:
        means[f"recovered_{m}"] = ((means[m] - means["baseline"]) / gap).where(gap >= 0.005)
        columns.append(f"recovered_{m}")
    means.columns.name = None
    return means[columns]

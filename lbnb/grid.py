"""The experiment grid: category × detector × method × α × K × t × aggregation × scope × rounds × seed.

:func:`expand` lists the trials (:class:`Trial`): the stage-1 settings (K, t, aggregation, scope, rounds)
only multiply the ``two_stage`` trials, since baseline, oracle and SoftPatch do not have them, and
``softpatch`` trials exist only for PatchCore factories. :func:`run_grid` runs them and returns one tidy
table: a row per trial with every metric, the filter report (two-stage rows), the realised contamination
and the wall time.

Every finished trial is written to ``cache_dir`` as one small JSON file, named by a hash of everything
that determines its result: the trial, the detector's full ``repr`` (every hyperparameter, the feature
extractor's included) and a fingerprint of the train and test images. A warm re-run reads the table back
from disk and trains nothing; an interrupted run resumes where it stopped. Change any setting and only the
trials it touches run again. Delete the folder to start over.

Trials run in local processes through joblib (``n_jobs``). For a cluster, pass ``backend="dask"`` inside
a ``dask.distributed.Client`` context (the optional ``dask`` extra: ``pip install -e .[dask]``): joblib then
ships the trials to the cluster's workers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from joblib import delayed

from .contamination import Contaminate, softpatch_protocol
from .experiments import METHODS, DetectorFactory, _run, _threads_per_job, run_trial
from .filtering import AGGREGATIONS, AUTO, SCOPES, check_keep_fraction, check_n_rounds
from .imageset import ImageSet
from .patchcore import PatchCore
from .series import write_json

STAGE1_FIELDS = ("n_subsets", "keep_fraction", "aggregation", "scope", "n_rounds", "stage1_iterations")


@dataclass(frozen=True)
class Trial:
    """One cell of the grid. The stage-1 fields are None for methods without a stage 1."""

    category: str
    detector: str
    method: str
    noise: float
    seed: int
    n_subsets: int | None = None
    keep_fraction: float | str | None = None
    aggregation: str | None = None
    scope: str | None = None
    n_rounds: int | None = None
    stage1_iterations: int | None = None

    def two_stage_options(self) -> dict | None:
        if self.method != "two_stage":
            return None
        return {f: getattr(self, f) for f in STAGE1_FIELDS}


def expand(categories: Iterable[str], detectors: dict[str, DetectorFactory], methods: Iterable[str] = METHODS,
           noise_levels: Iterable[float] = (0.0, 0.1, 0.2), seeds: Iterable[int] = (0,),
           n_subsets: Iterable[int] = (5,), keep_fractions: Iterable = (AUTO,),
           aggregations: Iterable[str] = ("mean",), scopes: Iterable[str] = ("cross",),
           n_rounds: Iterable[int] = (1,), stage1_iterations: dict[str, int | None] | None = None) -> list[Trial]:
    """Every trial of the grid, in a fixed order (bad names and values raise here, before any work).

    ``stage1_iterations`` maps a detector name to its sub-models' training budget (trained detectors
    only; memory banks are left out or given None).
    """
    methods, noise_levels, seeds = list(methods), [float(a) for a in noise_levels], [int(s) for s in seeds]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be among {METHODS}, got {bad}")
    for a in noise_levels:
        if not 0.0 <= a < 1.0:
            raise ValueError(f"noise levels α must lie in [0, 1), got {a}")
    for t in keep_fractions:
        check_keep_fraction(t)
    for how in aggregations:
        if how not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    for r in n_rounds:
        check_n_rounds(r)
    budgets = stage1_iterations or {}
    stage1_grid = [dict(n_subsets=int(k), keep_fraction=t, aggregation=how, scope=scope, n_rounds=int(r))
                   for k in n_subsets for t in keep_fractions for how in aggregations for scope in scopes
                   for r in n_rounds]
    trials = []
    for category in categories:
        for name, make in detectors.items():
            is_patchcore = isinstance(make(0), PatchCore)
            for method in methods:
                if method == "softpatch" and not is_patchcore:
                    continue
                settings = ([{**s, "stage1_iterations": budgets.get(name)} for s in stage1_grid]
                            if method == "two_stage" else [{}])
                trials += [Trial(category, name, method, a, s, **setting)
                           for setting in settings for a in noise_levels for s in seeds]
    return trials


def fingerprint(data: ImageSet) -> str:
    """Hash of an image set's ids, labels and pixels (16 hex digits)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps([data.category, data.ids.tolist()]).encode())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    h.update(np.ascontiguousarray(data.images).tobytes())
    return h.hexdigest()


def trial_key(trial: Trial, detector_repr: str, data_print: str) -> str:
    """The cache key of a trial: a hash of the trial, the detector's repr and the data fingerprint."""
    text = json.dumps({"trial": dataclasses.asdict(trial), "detector": detector_repr, "data": data_print,
                       "format": 1}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _one_trial(trial: Trial, train: ImageSet, test: ImageSet, make_detector: DetectorFactory, threads: int,
               contaminate: Contaminate) -> dict:
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    row = run_trial(train, test, make_detector, trial.noise, trial.seed, trial.method, trial.two_stage_options(),
                    contaminate)
    row.pop("noise"), row.pop("seed"), row.pop("method")
    if "n_rounds" in row:                                               # rounds run (≤ the trial's maximum)
        row["rounds_run"] = row.pop("n_rounds")
    row = {**dataclasses.asdict(trial), **row, "wall_seconds": time.perf_counter() - start}
    return _as_json(row)


def _as_json(row: dict) -> dict:
    """The row as the cache stores it (NaN → None, numpy → Python), so cold and warm runs give equal tables."""
    from .series import _clean

    return json.loads(json.dumps(_clean(row)))


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None                                                     # missing or torn: run it again


def run_grid(trials: list[Trial], datasets: dict[str, tuple[ImageSet, ImageSet]],
             detectors: dict[str, DetectorFactory], cache_dir: str | Path | None = "results/grid_cache",
             n_jobs: int = 1, backend: str = "loky", progress: bool = True,
             contaminate: Contaminate = softpatch_protocol) -> pd.DataFrame:
    """Run (or read back) every trial; one row per trial, in the order of ``trials``.

    ``datasets``: category → (clean train, test) ImageSets; ``detectors``: name → factory (random_state →
    unfitted detector); ``cache_dir``: one JSON file per finished trial (None: no cache); ``n_jobs``: trials
    in parallel; ``backend``: joblib backend, "loky" (local processes) or "dask" (inside a
    ``dask.distributed.Client`` context). Extract features once before a parallel run (any serial fit
    does) so that workers read them from the shared disk cache instead of computing them twice.
    ``contaminate``: how each trial obtains its noisy training set (default: SoftPatch protocol; another
    callable, e.g. :class:`~lbnb.datasets.PublishedSplits`, enters the cache key through its repr).
    The table gains ``cached`` (True where the row came from the cache).
    """
    missing = sorted({t.category for t in trials} - set(datasets)) + sorted({t.detector for t in trials} - set(detectors))
    if missing:
        raise KeyError(f"the trials name categories or detectors that were not given: {missing}")
    protocol = "" if contaminate is softpatch_protocol else repr(contaminate)
    prints = {c: fingerprint(datasets[c][0]) + fingerprint(datasets[c][1]) + protocol
              for c in {t.category for t in trials}}
    reprs = {d: repr(detectors[d](0)) for d in {t.detector for t in trials}}
    keys = [trial_key(t, reprs[t.detector], prints[t.category]) for t in trials]
    folder = Path(cache_dir) if cache_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict | None] = [None] * len(trials)
    for i, key in enumerate(keys):
        row = _read(folder / f"{key}.json") if folder is not None else None
        if row is not None:
            rows[i] = {**row, "cached": True}
    todo = [i for i, row in enumerate(rows) if row is None]
    if todo:
        _dispatch(trials, datasets, detectors, todo, rows, keys, folder, n_jobs, backend, progress, contaminate)
    return pd.DataFrame(rows)


def _dispatch(trials, datasets, detectors, todo, rows, keys, folder, n_jobs, backend, progress, contaminate) -> None:
    """Run the ``todo`` trials, filling ``rows`` and writing each finished row to the cache at once."""
    threads = _threads_per_job(n_jobs) if backend == "loky" else 1
    calls = [delayed(_one_trial)(trials[i], *datasets[trials[i].category], detectors[trials[i].detector], threads,
                                 contaminate)
             for i in todo]
    for i, row in zip(todo, _run(calls, n_jobs, "grid trials", progress, backend)):
        rows[i] = {**row, "cached": False}
        if folder is not None:
            write_json(folder / f"{keys[i]}.json", row)

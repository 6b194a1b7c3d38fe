"""Trials and sweeps: contaminate, fit, score, evaluate — one tidy row per trial.

A *trial* is (category, detector, noise α, seed): the seed draws the contamination and seeds the
detector. :func:`sweep` runs the cross product and returns a tidy ``pandas.DataFrame`` (one row per
trial with every metric, the realised contamination rate and the wall time), ready for seaborn.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable

import pandas as pd
import torch
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .contamination import contaminate_softpatch
from .imageset import ImageSet
from .metrics import evaluate

DetectorFactory = Callable[[int], object]  # random_state -> unfitted detector


def run_trial(train: ImageSet, test: ImageSet, make_detector: DetectorFactory, noise: float,
              seed: int) -> dict:
    """Contaminate ``train`` with α = ``noise`` (SoftPatch protocol, seeded), fit, score, evaluate."""
    noisy = contaminate_softpatch(train, test, noise, random_state=seed)
    detector = make_detector(seed)
    start = time.perf_counter()
    detector.fit(noisy.train)
    fitted = time.perf_counter()
    image_scores, pixel_maps = detector.score(noisy.test)
    done = time.perf_counter()
    return {**evaluate(noisy.test, image_scores, pixel_maps), "noise": float(noise), "seed": int(seed),
            "realised_rate": noisy.realised_rate, "n_train": len(noisy.train), "n_test": len(noisy.test),
            "fit_seconds": fitted - start, "score_seconds": done - fitted}


def _labelled_trial(category, name, train, test, make_detector, noise, seed, threads):
    if threads:
        torch.set_num_threads(threads)
    return {"category": category, "detector": name, **run_trial(train, test, make_detector, noise, seed)}


def sweep(datasets: dict[str, tuple[ImageSet, ImageSet]], detectors: dict[str, DetectorFactory],
          noise_levels: Iterable[float], seeds: Iterable[int], n_jobs: int = 1,
          progress: bool = True) -> pd.DataFrame:
    """Every (category, detector, α, seed) trial; ``datasets`` maps category → (train, test).

    ``n_jobs`` > 1 runs trials in local processes with joblib (each with its share of the CPU
    threads); the feature cache on disk is shared, so extract features once before a parallel sweep
    (any serial fit does) to avoid computing them in several processes at once.
    """
    grid = [(c, d, a, s) for c in datasets for d in detectors for a in noise_levels for s in seeds]
    threads = max(1, (os.cpu_count() or 1) // n_jobs) if n_jobs > 1 else 0
    calls = (delayed(_labelled_trial)(c, d, *datasets[c], detectors[d], a, s, threads) for c, d, a, s in grid)
    if n_jobs == 1:
        results = (call[0](*call[1], **call[2]) for call in calls)
    else:
        results = Parallel(n_jobs=n_jobs, return_as="generator")(calls)
    rows = list(tqdm(results, total=len(grid), desc="trials", disable=not progress))
    return pd.DataFrame(rows)

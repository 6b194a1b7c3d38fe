"""Trials and sweeps: contaminate, fit, score, evaluate — one tidy row per trial.

A *trial* is (category, detector, noise α, seed): the seed draws the contamination and seeds the
detector. :func:`sweep` runs the cross product and returns a tidy ``pandas.DataFrame`` (one row per
trial with every metric, the realised contamination rate and the wall time), ready for seaborn.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import pandas as pd
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


def sweep(datasets: dict[str, tuple[ImageSet, ImageSet]], detectors: dict[str, DetectorFactory],
          noise_levels: Iterable[float], seeds: Iterable[int], progress: bool = True) -> pd.DataFrame:
    """Every (category, detector, α, seed) trial; ``datasets`` maps category → (train, test)."""
    grid = [(c, d, a, s) for c in datasets for d in detectors for a in noise_levels for s in seeds]
    rows = []
    for category, name, noise, seed in tqdm(grid, desc="trials", disable=not progress):
        train, test = datasets[category]
        row = run_trial(train, test, detectors[name], noise, seed)
        rows.append({"category": category, "detector": name, **row})
    return pd.DataFrame(rows)

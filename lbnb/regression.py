"""Regression bands for the series' headline numbers.

The series writes one combined ``summary.json`` (:func:`lbnb.series.run_series`). A committed bands file
(``tests/expected_smoke.json``) gives, for each headline number of the SMOKE run, the interval it must stay
in. :func:`check` lists every number that left its band, by name (``notebook/key/sub-key``), so a change
that breaks a result fails the test suite with a message saying which number moved and how far.

Bands are refreshed *deliberately*, after a change that is meant to move the numbers:

    .venv/bin/python -m lbnb run --smoke --out results/smoke
    .venv/bin/python -m lbnb bands results/smoke/summary.json --write tests/expected_smoke.json

then review the diff of the bands file and say why in the commit message. Timings, counts of rows and
settings (everything under :data:`IGNORED`) are not banded: they vary by machine or are not results.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

IGNORED = re.compile(r"seconds|(^|/)(n_rows|n_trials|categories|seeds|settings|smoke)(/|$)"
                     r"|(^|/)gap_recovered")   # a ratio of two small AUROC differences: on SMOKE sets a 0.01
                                               # CPU-to-CPU shift of its inputs (banded themselves) moves it by 0.4
ABS_TOL = 0.03   # numbers in [−1, 1] (metrics, shares): ±0.03 absorbs CPU-to-CPU float differences
REL_TOL = 0.05   # larger numbers (distances, counts): ±5 %


def flatten(summary: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested summary, keyed ``a/b/c`` (booleans, text and None are skipped)."""
    flat = {}
    for key, value in summary.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def headline_numbers(combined: dict) -> dict[str, float]:
    """The banded numbers of a combined series summary: every numeric leaf not matched by :data:`IGNORED`."""
    flat = flatten(combined.get("notebooks", combined))
    return {k: v for k, v in flat.items() if not IGNORED.search(k)}


def make_bands(combined: dict, abs_tol: float = ABS_TOL, rel_tol: float = REL_TOL) -> dict[str, list[float]]:
    """Bands [low, high] around each headline number: value ∓ abs_tol for numbers in [−1, 1] (metrics,
    shares), value ∓ rel_tol·|value| for larger ones (distances, counts)."""
    bands = {}
    for key, value in sorted(headline_numbers(combined).items()):
        width = abs_tol if abs(value) <= 1 else rel_tol * abs(value)
        bands[key] = [round(value - width, 6), round(value + width, 6)]
    return bands


def check(combined: dict, bands: dict[str, list[float]]) -> list[str]:
    """Messages for every banded number that is missing or outside its band (empty list: all good)."""
    numbers = headline_numbers(combined)
    problems = []
    for key, (low, high) in sorted(bands.items()):
        if key not in numbers:
            problems.append(f"{key}: missing from the summary (expected in [{low:.4g}, {high:.4g}])")
        elif not low <= numbers[key] <= high:
            problems.append(f"{key} = {numbers[key]:.4g} is outside its band [{low:.4g}, {high:.4g}]")
    return problems


def load_bands(path: str | Path) -> dict[str, list[float]]:
    return json.loads(Path(path).read_text())["bands"]


def write_bands(combined: dict, path: str | Path) -> Path:
    """Write the bands of ``combined`` to ``path`` (with a note on how they were made)."""
    path = Path(path)
    doc = {"note": "Headline numbers of the SMOKE series, value ± 0.03 (± 5 % above 1). Refresh deliberately: "
                   "see lbnb/regression.py.", "bands": make_bands(combined)}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return path

"""Interactive ablations: ipywidgets over a precomputed results table, plus one small live trial.

:class:`AblationExplorer` takes the tidy table of :func:`lbnb.grid.run_grid` (notebook 05 writes one) and
offers a dropdown or slider per setting — detector, category, α, K, t, aggregation, scope, purification
rounds, metric. Every change re-selects the matching rows and redraws a table and a bar chart of each
method (baseline, two-stage, SoftPatch, oracle; mean ± seed std). Baseline, oracle and SoftPatch rows do
not depend on the stage-1 settings, so they stay as the references. The button runs one small live trial
on the chosen category with the chosen settings (:func:`live_trial`).

Everything the widgets do goes through plain methods (:meth:`~AblationExplorer.selection`,
:meth:`~AblationExplorer.summary`, :meth:`~AblationExplorer.update`, :meth:`~AblationExplorer.run_live`),
so tests and headless runs (papermill) drive the callbacks without a browser.
"""
from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import tables
from .filtering import AUTO

METRICS = ("i_auroc", "aupro", "p_auroc", "i_ap", "i_f1max", "filter_auroc")
STAGE1_WIDGETS = ("n_subsets", "keep_fraction", "aggregation", "scope", "n_rounds")


def _options(values) -> list:
    """Distinct non-missing values, numbers ascending and text after them."""
    present = [v for v in pd.unique(pd.Series(list(values), dtype=object)) if v is not None and not
               (isinstance(v, float) and np.isnan(v))]
    numbers = sorted(v for v in present if not isinstance(v, str))
    return numbers + sorted(v for v in present if isinstance(v, str))


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    return bool(np.isclose(float(a), float(b)))


def live_trial(category: str, detector: str, noise: float, n_subsets: int = 5, keep_fraction=AUTO,
               aggregation: str = "mean", scope: str = "cross", n_rounds: int = 1, seed: int = 0,
               n_train: int = 60, image_size: int = 128, cache_dir=None) -> pd.DataFrame:
    """Baseline, two-stage and oracle on a small embedded set (``n_train`` images at ``image_size`` px),
    with the given stage-1 settings: a few seconds for PatchCore on 2 CPU cores. Returns the grid rows."""
    from . import data, grid
    from .detectors import FeatureReconstruction, PatchCore

    factories = {"PatchCore": lambda s: PatchCore(coreset_ratio=0.1, random_state=s, progress=False),
                 "FeatureReconstruction": lambda s: FeatureReconstruction(n_iterations=60, random_state=s,
                                                                          progress=False)}
    if detector not in factories:
        raise ValueError(f"live trials run {sorted(factories)}, not {detector!r}")
    datasets = {category: data.load_embedded(category, 0, image_size=image_size, n_train=n_train,
                                             n_test_good=n_train // 3, n_test_per_type=n_train // 6)}
    chosen = {detector: factories[detector]}
    budget = {"FeatureReconstruction": 20}
    trials = grid.expand([category], chosen, ["baseline", "two_stage", "oracle"], [noise], [seed],
                         n_subsets=[n_subsets], keep_fractions=[keep_fraction], aggregations=[aggregation],
                         scopes=[scope], n_rounds=[n_rounds], stage1_iterations=budget)
    return tables.with_labels(grid.run_grid(trials, datasets, chosen, cache_dir, progress=False))


class AblationExplorer:
    """Widgets over ``table`` (rows of :func:`lbnb.grid.run_grid`). ``live``: the function behind the
    live-trial button (default :func:`live_trial`; it receives the chosen settings as keyword arguments).
    Display :attr:`widget`."""

    def __init__(self, table: pd.DataFrame, live: Callable[..., pd.DataFrame] | None = None):
        import ipywidgets as w

        if table.empty:
            raise ValueError("the results table is empty: run notebook 05 (or lbnb.grid.run_grid) first")
        self.table = tables.with_labels(table)
        self.table["keep_fraction"] = pd.Series([tables.keep_fraction_value(v) for v in self.table.keep_fraction],
                                                index=self.table.index, dtype=object)
        self.live = live or live_trial
        self.live_rows: list[pd.DataFrame] = []
        two = self.table[self.table.method == "two_stage"]
        self.detector = w.Dropdown(options=_options(self.table.detector), description="detector")
        self.category = w.Dropdown(options=["all"] + _options(self.table.category), description="category")
        self.noise = w.SelectionSlider(options=_options(self.table.noise), description="α")
        self.n_subsets = w.SelectionSlider(options=[int(k) for k in _options(two.n_subsets)] or [5], description="K")
        self.keep_fraction = w.Dropdown(options=_options(two.keep_fraction) or [AUTO], description="t")
        self.aggregation = w.Dropdown(options=_options(two.aggregation) or ["mean"], description="aggregation")
        self.scope = w.ToggleButtons(options=_options(two.scope) or ["cross"], description="scope")
        self.n_rounds = w.SelectionSlider(options=[int(r) for r in _options(two.n_rounds)] or [1],
                                          description="rounds")
        self.metric = w.Dropdown(options=[m for m in METRICS if m in self.table], description="metric")
        self._defaults()
        self.output = w.Output()
        self.button = w.Button(description="run one live trial", icon="play")
        self.live_output = w.Output()
        for control in self.controls:
            control.observe(self.update, names="value")
        self.button.on_click(self.run_live)
        self.widget = w.VBox([w.HBox([self.detector, self.category, self.metric]),
                              w.HBox([self.noise, self.n_subsets, self.n_rounds]),
                              w.HBox([self.keep_fraction, self.aggregation]), self.scope, self.output,
                              w.HBox([self.button]), self.live_output])
        self.update()

    @property
    def controls(self) -> list:
        return [self.detector, self.category, self.noise, self.n_subsets, self.keep_fraction, self.aggregation,
                self.scope, self.n_rounds, self.metric]

    def _defaults(self) -> None:
        """Start on PatchCore (when present), its most common two-stage setting and the largest α."""
        if "PatchCore" in self.detector.options:
            self.detector.value = "PatchCore"
        two = self.table[(self.table.method == "two_stage") & (self.table.detector == self.detector.value)]
        if len(two):
            common = two.groupby(list(STAGE1_WIDGETS), dropna=False).size().idxmax()
            for name, value in zip(STAGE1_WIDGETS, common):
                widget = getattr(self, name)
                match = [o for o in widget.options if _same(o, value)]
                if match:
                    widget.value = match[0]
        self.noise.value = self.noise.options[-1]

    def settings(self) -> dict:
        """The chosen values, by name."""
        names = ("detector", "category", "noise", *STAGE1_WIDGETS, "metric")
        return {name: getattr(self, name).value for name in names}

    def selection(self) -> pd.DataFrame:
        """Rows of the chosen detector, category and α; two-stage rows only with the chosen stage-1 settings."""
        t = self.table
        rows = t[(t.detector == self.detector.value) & np.isclose(t.noise.astype(float), float(self.noise.value))]
        if self.category.value != "all":
            rows = rows[rows.category == self.category.value]
        two = rows.method == "two_stage"
        match = np.ones(len(rows), bool)
        for name in STAGE1_WIDGETS:
            wanted = getattr(self, name).value
            match &= np.array([_same(v, wanted) if v is not None and not (isinstance(v, float) and np.isnan(v))
                               else False for v in rows[name]])
        return rows[~two.to_numpy() | match]

    def summary(self) -> pd.DataFrame:
        """Per method row: mean and seed std of the chosen metric, and the number of trials."""
        rows = self.selection()
        metric = self.metric.value
        if rows.empty or metric not in rows or rows[metric].isna().all():
            return pd.DataFrame(columns=["mean", "std", "n_trials"])
        stats = tables.seed_stats(rows.dropna(subset=[metric]), metric, ("row",))
        stats["n_trials"] = rows.groupby("row").size()
        return stats[["mean", "std", "n_trials"]]

    def update(self, change=None) -> pd.DataFrame:
        """Redraw the table and the bar chart; returns the summary shown."""
        from IPython.display import display

        summary = self.summary()
        self.output.clear_output(wait=True)
        with self.output:
            if summary.empty:
                print("no trial matches these settings in the table (run them with notebook 05 or the button)")
            else:
                display(summary.round(3))
                fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(summary)))
                ax.barh(summary.index, summary["mean"], xerr=summary["std"].fillna(0), color="#4c72b0")
                low = float(np.nanmin(summary["mean"] - summary["std"].fillna(0)))
                ax.set_xlim(max(0.0, low - 0.05), 1.0)
                ax.set_xlabel(self.metric.value)
                fig.tight_layout()
                display(fig)
                plt.close(fig)
                self.figure_ = fig
        return summary

    def run_live(self, button=None) -> pd.DataFrame:
        """Run :attr:`live` with the chosen settings on the chosen category (the first one for "all")."""
        chosen = self.settings()
        category = chosen["category"] if chosen["category"] != "all" else self.category.options[1]
        rows = self.live(category=category, detector=chosen["detector"], noise=float(chosen["noise"]),
                         n_subsets=int(chosen["n_subsets"]), keep_fraction=chosen["keep_fraction"],
                         aggregation=chosen["aggregation"], scope=chosen["scope"], n_rounds=int(chosen["n_rounds"]))
        self.live_rows.append(rows)
        self.live_output.clear_output(wait=True)
        with self.live_output:
            from IPython.display import display

            cols = [c for c in ("row", "category", "noise", "i_auroc", "aupro", "filter_auroc", "wall_seconds")
                    if c in rows]
            display(rows[cols].round(3))
        return rows

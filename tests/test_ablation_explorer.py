"""The ablation widgets, driven headless: controls filter the table, callbacks redraw, the button runs a trial."""
import numpy as np
import pandas as pd
import pytest

from lbnb.ablation_explorer import AblationExplorer, live_trial


def table():
    rows = []
    for seed in (0, 1):
        for noise in (0.0, 0.2):
            for cat in ("brick", "gravel"):
                base = dict(detector="PatchCore", category=cat, noise=noise, seed=seed, n_subsets=None,
                            keep_fraction=None, aggregation=None, scope=None, n_rounds=None)
                rows.append({**base, "method": "baseline", "i_auroc": 0.8 - noise / 2 + seed / 100, "aupro": 0.7})
                rows.append({**base, "method": "oracle", "i_auroc": 0.95, "aupro": 0.8})
                for k in (3, 5):
                    for t in ("auto", 0.8):
                        rows.append({**base, "method": "two_stage", "n_subsets": k, "keep_fraction": t,
                                     "aggregation": "mean", "scope": "cross", "n_rounds": 1,
                                     "i_auroc": 0.9 + k / 1000 + (t == "auto") / 100, "aupro": 0.75,
                                     "filter_auroc": 0.97})
    return pd.DataFrame(rows)


def test_controls_filter_the_table_and_callbacks_redraw():
    ex = AblationExplorer(table(), live=lambda **kw: pd.DataFrame([kw]))
    assert ex.noise.value == 0.2                                            # starts at the largest α
    rows = ex.selection()
    assert set(rows.method) == {"baseline", "oracle", "two_stage"}
    assert (rows[rows.method == "two_stage"].n_subsets == ex.n_subsets.value).all()
    assert len(rows[rows.method == "two_stage"]) == 4                       # 2 categories × 2 seeds
    ex.n_subsets.value = 5
    ex.keep_fraction.value = "auto"                                         # observers fire update()
    summary = ex.summary()
    assert summary.loc["PatchCore · two-stage", "mean"] == pytest.approx(0.915)
    assert summary.loc["PatchCore · baseline", "mean"] == pytest.approx(0.705)
    assert summary.loc["PatchCore · baseline", "std"] == pytest.approx(np.std([0.7, 0.71], ddof=1))
    ex.category.value = "brick"
    assert set(ex.selection().category) == {"brick"} and ex.summary().n_trials.max() == 2
    ex.metric.value = "aupro"
    assert ex.update().loc["PatchCore · clean oracle", "mean"] == pytest.approx(0.8)
    assert len(ex.figure_.axes[0].patches) == 3                             # one bar per method


def test_button_runs_a_live_trial_with_the_chosen_settings():
    calls = []
    ex = AblationExplorer(table(), live=lambda **kw: calls.append(kw) or pd.DataFrame([{"row": "x", **kw}]))
    ex.n_subsets.value, ex.keep_fraction.value = 3, 0.8
    ex.button.click()
    assert calls == [{"category": "brick", "detector": "PatchCore", "noise": 0.2, "n_subsets": 3,
                      "keep_fraction": 0.8, "aggregation": "mean", "scope": "cross", "n_rounds": 1}]
    assert len(ex.live_rows) == 1


def test_no_match_and_empty_table():
    ex = AblationExplorer(table()[lambda t: t.method != "two_stage"])
    assert set(ex.selection().method) == {"baseline", "oracle"}
    with pytest.raises(ValueError, match="empty"):
        AblationExplorer(table().iloc[:0])


def test_live_trial_runs_for_real():
    rows = live_trial("gravel", "PatchCore", 0.2, n_subsets=3, n_train=24, image_size=96)
    assert set(rows.method) == {"baseline", "two_stage", "oracle"}
    assert rows.i_auroc.between(0, 1).all() and rows.filter_auroc.notna().any()
    with pytest.raises(ValueError, match="live trials"):
        live_trial("gravel", "PaDiM", 0.2)

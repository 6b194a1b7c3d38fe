"""Tests for lbnb.tables: row labels, seed statistics by hand, the paper-style table, ablations."""
import numpy as np
import pandas as pd
import pytest

from lbnb.tables import ablation, method_label, paper_table, read_results, seed_stats, with_labels


def frame():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for cat, c in (("a", 0.0), ("b", 0.1)):
            rows.append(dict(detector="PC", method="baseline", n_rounds=None, noise=0.1, seed=seed, category=cat,
                             i_auroc=0.8 + c + shift, aupro=0.5, filter_auroc=np.nan, n_subsets=None))
            rows.append(dict(detector="PC", method="two_stage", n_rounds=5, noise=0.1, seed=seed, category=cat,
                             i_auroc=0.9 + c + shift, aupro=0.6, filter_auroc=0.95 + shift, n_subsets=5))
    return pd.DataFrame(rows)


def test_labels():
    assert method_label({"detector": "PC", "method": "two_stage", "n_rounds": 5}) == "PC · two-stage ×5"
    assert method_label({"detector": "PC", "method": "two_stage", "n_rounds": 1}) == "PC · two-stage"
    assert method_label({"detector": "PC", "method": "oracle", "n_rounds": None}) == "PC · clean oracle"
    assert with_labels(frame()).row.nunique() == 2


def test_seed_stats_average_categories_then_seeds():
    stats = seed_stats(with_labels(frame()), "i_auroc")
    s = stats.loc[("PC · baseline", 0.1)]
    assert s["mean"] == pytest.approx(0.86) and s["n_seeds"] == 2          # seeds: 0.85, 0.87
    assert s["std"] == pytest.approx(np.std([0.85, 0.87], ddof=1))


def test_paper_table_formats_mean_and_std():
    table = paper_table(with_labels(frame()))
    assert table.loc["PC · two-stage ×5", ("i_auroc", 0.1)] == "0.960 ± 0.014"
    assert table.loc["PC · baseline", ("aupro", 0.1)] == "0.500 ± 0.000"
    one_seed = paper_table(with_labels(frame()[frame().seed == 0]))
    assert one_seed.loc["PC · baseline", ("i_auroc", 0.1)] == "0.850"
    assert list(table.index) == ["PC · baseline", "PC · two-stage ×5"]


def test_ablation_along_one_setting():
    two = frame()[frame().method == "two_stage"]
    table = ablation(two, "n_subsets")
    assert table.loc["5", "filter_auroc_mean"] == pytest.approx(0.96)
    assert table.loc["5", "i_auroc_n_seeds"] == 2
    mixed = pd.concat([two, two.assign(n_subsets=10), two.assign(n_subsets=3)])
    assert list(ablation(mixed, "n_subsets").index) == ["3", "5", "10"]           # numeric order, not text


def test_read_results_restores_keep_fractions(tmp_path):
    rows = frame().assign(keep_fraction=[None, "auto", None, 0.8] * 2)
    rows.to_csv(tmp_path / "a.csv", index=False)
    back = read_results(tmp_path / "a.csv", tmp_path / "a.csv")
    assert len(back) == 16 and back.keep_fraction.tolist()[:4] == [None, "auto", None, 0.8]

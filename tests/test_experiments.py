"""Tests for the method-aware parts of lbnb.experiments: fit_method, run_trial rows, filter_sweep, gap_recovery."""
import numpy as np
import pandas as pd
import pytest

from lbnb.contamination import contaminate_softpatch
from lbnb.data import load_embedded
from lbnb.experiments import CORE_METHODS, METHODS, filter_sweep, fit_method, gap_recovery, run_trial, sweep
from lbnb.patchcore import PatchCore
from lbnb.two_stage import TwoStage


@pytest.fixture(scope="module")
def small():
    return load_embedded("gravel", n_train=30, n_test_good=10, n_test_per_type=5)


def pc(seed):
    return PatchCore(coreset_ratio=0.2, random_state=seed, progress=False)


def test_methods_train_on_the_right_sets(small):
    train, test = small
    noisy = contaminate_softpatch(train, test, 0.2, random_state=1)
    assert len(fit_method("baseline", pc, noisy, train, 0).coreset_index_) == int(0.2 * len(noisy.train) * 400)
    assert len(fit_method("oracle", pc, noisy, train, 0).coreset_index_) == int(0.2 * len(train) * 400)
    two = fit_method("two_stage", pc, noisy, train, 0, {"n_subsets": 3, "keep_fraction": 0.5})
    assert isinstance(two, TwoStage) and len(two.kept_ids_) == len(noisy.train) // 2
    soft = fit_method("softpatch", pc, noisy, train, 0)
    assert type(soft).__name__ == "SoftPatch" and soft.coreset_ratio == 0.2 and soft.random_state == 0
    with pytest.raises(ValueError, match="method"):
        fit_method("nope", pc, noisy, train, 0)
    with pytest.raises(TypeError, match="PatchCore"):
        fit_method("softpatch", lambda s: TwoStage(pc), noisy, train, 0)


def test_run_trial_row_carries_the_filter_report(small):
    row = run_trial(*small, pc, 0.2, 0, method="two_stage", two_stage={"n_subsets": 3})
    assert row["method"] == "two_stage" and 0 <= row["filter_auroc"] <= 1
    assert {"kept_rate", "removed_share", "stage1_seconds", "i_auroc", "aupro"} <= set(row)
    with pytest.raises(ValueError, match="methods"):
        sweep({"g": small}, {"pc": pc}, [0.1], [0], methods=["nope"])


def test_filter_sweep_reselects_one_matrix(small):
    rows = filter_sweep({"gravel": small}, pc, [0.2], [3], [0], keep_fractions=["auto", 0.5], progress=False)
    assert len(rows) == 6 * 2 * 2                                          # aggregations × scopes × rules
    assert rows.stage1_seconds.nunique() == 1
    assert (rows[rows.keep_fraction == "0.5"].n_kept == len(small[0]) * 1.2 // 2).all()


def test_gap_recovery_by_hand():
    rows = pd.DataFrame({"detector": "d", "noise": [0.2] * 3 + [0.0] * 3, "method": list(CORE_METHODS) * 2,
                         "i_auroc": [0.80, 0.95, 1.00, 0.99, 0.99, 0.992]})
    rec = gap_recovery(rows)
    assert rec.loc[("d", 0.2), "recovered"] == pytest.approx(0.75)
    assert np.isnan(rec.loc[("d", 0.0), "recovered"])                     # gap 0.002: nothing to recover
    with pytest.raises(ValueError, match="oracle"):
        gap_recovery(rows[rows.method != "oracle"])
    variant = pd.DataFrame({"detector": "d", "noise": [0.2], "method": ["two_stage_1round"], "i_auroc": [0.85]})
    rec = gap_recovery(pd.concat([rows, variant]))
    assert rec.loc[("d", 0.2), "recovered_two_stage_1round"] == pytest.approx(0.25)
    assert rec.loc[("d", 0.2), "recovered"] == pytest.approx(0.75)

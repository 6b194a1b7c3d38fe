"""Tests for lbnb.grid: grid expansion, the per-trial cache (warm re-runs train nothing), determinism,
local processes and a Dask LocalCluster on loopback giving the same table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lbnb.grid as grid
from lbnb.data import load_embedded
from lbnb.grid import Trial, expand, run_grid
from lbnb.patchcore import PatchCore
from lbnb.reconstruction import FeatureReconstruction

METRICS = ["i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro"]


@pytest.fixture(scope="module")
def small():
    return {"gravel": load_embedded("gravel", n_train=24, n_test_good=8, n_test_per_type=4, image_size=96)}


def pc(seed):
    return PatchCore(coreset_ratio=0.2, random_state=seed, progress=False)


def fr(seed):
    return FeatureReconstruction(n_iterations=5, random_state=seed, progress=False)


def test_expand_multiplies_stage1_settings_into_two_stage_trials_only():
    trials = expand(["a"], {"pc": pc, "fr": fr}, noise_levels=[0.0, 0.2], seeds=[0, 1], n_subsets=[3, 5],
                    keep_fractions=["auto", 0.8], stage1_iterations={"fr": 10})
    by_method = pd.Series([t.method for t in trials]).value_counts().to_dict()
    assert by_method == {"two_stage": 2 * 4 * 4, "baseline": 8, "oracle": 8, "softpatch": 4}  # no FR SoftPatch
    base = next(t for t in trials if t.method == "baseline")
    assert base.n_subsets is None and base.two_stage_options() is None
    fr_two = next(t for t in trials if t.method == "two_stage" and t.detector == "fr")
    assert fr_two.two_stage_options()["stage1_iterations"] == 10
    assert len(set(trials)) == len(trials)                                  # no duplicates


@pytest.mark.parametrize("bad", [dict(methods=["nope"]), dict(noise_levels=[1.0]), dict(keep_fractions=[0]),
                                 dict(aggregations=["sum"]), dict(scopes=["own"]), dict(n_rounds=[0])])
def test_expand_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        expand(["a"], {"pc": pc}, **bad)


def test_unknown_category_or_detector_is_a_clear_error(small, tmp_path):
    with pytest.raises(KeyError, match="brick"):
        run_grid([Trial("brick", "pc", "baseline", 0.1, 0)], small, {"pc": pc}, tmp_path)


def test_warm_rerun_reads_the_cache_and_trains_nothing(small, tmp_path, monkeypatch):
    trials = expand(["gravel"], {"pc": pc}, methods=["baseline", "two_stage", "softpatch"], noise_levels=[0.2],
                    n_subsets=[3], n_rounds=[2])
    cold = run_grid(trials, small, {"pc": pc}, tmp_path, progress=False)
    assert len(cold) == 3 and not cold.cached.any()
    assert len(list(tmp_path.glob("*.json"))) == 3
    two = cold[cold.method == "two_stage"].iloc[0]
    assert 0 <= two.filter_auroc <= 1 and two.n_rounds == 2 and 1 <= two.rounds_run <= 2
    assert (cold.wall_seconds > 0).all() and cold[METRICS].notna().all().all()

    def no_training(*args, **kwargs):
        raise AssertionError("a warm re-run must not run any trial")

    monkeypatch.setattr(grid, "_one_trial", no_training)
    warm = run_grid(trials, small, {"pc": pc}, tmp_path, progress=False)
    assert warm.cached.all()
    pd.testing.assert_frame_equal(warm.drop(columns="cached"), cold.drop(columns="cached"))


def test_a_changed_setting_reruns_only_its_trials(small, tmp_path):
    trials = expand(["gravel"], {"pc": pc}, methods=["baseline"], noise_levels=[0.0, 0.2])
    run_grid(trials, small, {"pc": pc}, tmp_path, progress=False)
    more = expand(["gravel"], {"pc": pc}, methods=["baseline"], noise_levels=[0.0, 0.2, 0.4])
    table = run_grid(more, small, {"pc": pc}, tmp_path, progress=False)
    assert table.cached.tolist() == [True, True, False]

    def pc_other(seed):                                                   # another hyperparameter: a new key
        return PatchCore(coreset_ratio=0.3, random_state=seed, progress=False)

    again = run_grid(trials, small, {"pc": pc_other}, tmp_path, progress=False)
    assert not again.cached.any()


def test_same_seed_same_numbers_serial_processes_and_dask(small, tmp_path):
    from distributed import Client, LocalCluster

    trials = expand(["gravel"], {"pc": pc}, methods=["baseline", "two_stage"], noise_levels=[0.2], seeds=[0, 1],
                    n_subsets=[3])
    serial = run_grid(trials, small, {"pc": pc}, None, progress=False)
    local = run_grid(trials, small, {"pc": pc}, None, n_jobs=2, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster, Client(cluster):
        dask = run_grid(trials, small, {"pc": pc}, None, n_jobs=2, backend="dask", progress=False)
    for other in (local, dask):
        np.testing.assert_array_equal(serial[METRICS + ["filter_auroc"]].to_numpy(float),
                                      other[METRICS + ["filter_auroc"]].to_numpy(float))
    assert not np.array_equal(serial.loc[0, METRICS].to_numpy(float), serial.loc[1, METRICS].to_numpy(float))
    with pytest.raises(ValueError, match="backend"):
        run_grid(trials, small, {"pc": pc}, None, backend="threads", progress=False)

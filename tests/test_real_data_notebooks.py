"""The notebook series on real-dataset folders prepared by the data scripts (here from synthetic stand-ins of
the MVTec AD and Real-IAD archives): ``DATASET`` and ``DATA_ROOT`` switch the notebooks from the embedded
benchmark to a prepared folder, in SMOKE mode (01 and 04 here; 02, 03 and 05 load data the same way)."""
import hashlib

import pandas as pd
import pytest

from lbnb import series
from lbnb.converters import prepare

from synthetic_datasets import mvtec_archive, realiad_archives



@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    archive = mvtec_archive(folder / "mvtec_anomaly_detection.tar.xz", categories=("brick", "gravel"))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    quiet = dict(progress=False, log=lambda *_: None)
    prepare("mvtec_ad", folder / "data", [archive], sha256=[digest], noise_levels=(0.2,), seeds=(0,), **quiet)
    prepare("realiad", folder / "data", realiad_archives(folder / "downloads", n_ok_samples=16), **quiet)
    return folder / "data"


def test_the_series_runs_on_a_prepared_mvtec_folder(data_root, tmp_path):
    # 01 (contamination of the prepared folder) and 04 (the trials) carry the DATASET plumbing; 02, 03 and 05
    # load data through the same helpers and are left out to keep CI short (they took 190 s here)
    summary = series.run_series(tmp_path, smoke=True, log=lambda *_: None, only=["01", "04"],
                                parameters={"DATASET": "mvtec_ad", "DATA_ROOT": str(data_root)})
    stems = [p.stem for p in series.notebooks()]
    assert list(summary["notebooks"]) == [stems[0], stems[3]]
    nb01 = summary["notebooks"]["01_contamination"]
    assert nb01["n_categories"] == 2
    assert nb01["realised_rate_by_noise"]["0.2"] == pytest.approx(8 / 48)      # int(0.2·40) into 40 normals
    results = pd.read_csv(tmp_path / "04_stage2_retraining" / "results.csv")
    assert set(results.category) == {"brick"} and results.i_auroc.between(0.5, 1).all()
    assert (results.n_train[results.noise == 0.2] >= 40).all()


def test_trials_on_realiad_use_its_published_splits(data_root, tmp_path):
    series.run_series(tmp_path, smoke=True, only=["04"], log=lambda *_: None,
                      parameters={"DATASET": "realiad", "DATA_ROOT": str(data_root)})
    results = pd.read_csv(tmp_path / "04_stage2_retraining" / "results.csv")
    assert set(results.category) == {"audiojack"}                               # the embedded default gave way
    noisy = results[(results.noise == 0.2) & (results.method == "baseline")]
    # stand-in: 13 OK training samples and round(0.2·13) = 3 NG samples, 3 views each, in the published split
    assert noisy.realised_rate.iloc[0] == pytest.approx(9 / 48)
    assert results.i_auroc.between(0.5, 1).all()
    assert (results.n_train[results.noise == 0.2] == 39 + 9).all()             # 13 OK samples + 3 NG, 3 views each

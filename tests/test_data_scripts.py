"""data_scripts/: the three preparation scripts on synthetic stand-ins of the real archives (no network) —
end to end, idempotent, and refusing bad archives (checksum mismatch, truncation, path traversal, absolute
paths, escaping links, unsafe index files) without writing outside the target or leaving a dataset that looks
complete."""
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lbnb import converters, data
from lbnb.archives import ArchiveError
from lbnb.contamination import softpatch_protocol
from lbnb.converters import PrepareError, prepare
from lbnb.datasets import MARKER

from synthetic_datasets import REALIAD_LEVELS, mvtec_archive, mvtec_files, realiad_archives, visa_archive

ROOT = Path(__file__).resolve().parent.parent


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "data_scripts" / f"prepare_{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mvtec")
    return mvtec_archive(folder / "mvtec_anomaly_detection.tar.xz", categories=("brick",), n_train=30, n_good=8,
                         n_per_type=4)


# -- MVTec AD ---------------------------------------------------------------------------------------
def test_mvtec_script_converts_records_splits_and_is_idempotent(mvtec, tmp_path):
    out = tmp_path / "data"
    run = script("mvtec_ad", "--archive", mvtec, "--out", out, "--sha256", sha(mvtec), "--quiet",
                 "--noise-levels", "0.2", "0.6", "--seeds", "0", "1")
    assert run.returncode == 0, run.stderr
    assert "done" in run.stdout and "verified" in run.stdout
    marker = json.loads((out / "mvtec_ad" / MARKER).read_text())
    assert marker["archives"][0] == {"name": mvtec.name, "sha256": sha(mvtec), "bytes": mvtec.stat().st_size,
                                     "verified": True}
    assert marker["categories"] == {"brick": {"train": 30, "train_anomalous": 0, "test_good": 8,
                                              "test_anomalous": 16}}
    assert data.dataset_categories("mvtec_ad", out) == ["brick"]
    train, test = data.load_dataset("mvtec_ad", "brick", out, image_size=64)
    assert (len(train), len(test), test.n_anomalous) == (30, 24, 16)          # brick: 4 defect types × 4
    assert all(test.masks[test.labels == 1].reshape(16, -1).any(axis=1))
    # the recorded splits are the ones lbnb draws: α = 0.6 needs 18 of 16 anomalies → 2 augmented re-samples
    assert len(marker["splits"]) == 4
    for alpha, seed in ((0.2, 1), (0.6, 0)):
        doc = json.loads((out / "mvtec_ad" / "splits" / "softpatch" / "brick" / f"noise_{alpha:g}_seed_{seed}.json")
                         .read_text())
        noisy = softpatch_protocol(train, test, alpha, seed)
        assert doc["injected"] == list(noisy.injected_ids) and doc["test"] == noisy.test.ids.tolist()
        assert doc["n_resampled"] == noisy.n_resampled == (2 if alpha == 0.6 else 0)
        assert all((out / "mvtec_ad" / "brick" / f).is_file() for f in doc["injected_files"])
    # idempotent: a second run keeps the completed preparation untouched
    stamp = (out / "mvtec_ad" / MARKER).stat().st_mtime_ns
    again = script("mvtec_ad", "--archive", mvtec, "--out", out, "--sha256", sha(mvtec), "--quiet")
    assert again.returncode == 0 and "already prepared" in again.stdout
    assert (out / "mvtec_ad" / MARKER).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in out.iterdir()) == ["mvtec_ad"]                # no staging left behind


def test_checksum_mismatch_fails_with_one_line_and_writes_nothing(mvtec, tmp_path):
    out = tmp_path / "data"
    run = script("mvtec_ad", "--archive", mvtec, "--out", out, "--quiet")    # the official digest ≠ stand-in
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "checksum mismatch" in lines[0] and converters.SOURCES["mvtec_ad"].sha256 in lines[0]
    assert not (out / "mvtec_ad").exists() and files_under(out) == set()


def test_truncated_archive_fails_and_leaves_no_dataset(mvtec, tmp_path):
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(mvtec.read_bytes()[: mvtec.stat().st_size // 2])
    out = tmp_path / "data"
    run = script("mvtec_ad", "--archive", cut, "--out", out, "--sha256", sha(cut), "--quiet")
    assert run.returncode == 1 and "truncated or corrupt" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert files_under(out) == set()
    with pytest.raises(FileNotFoundError, match="prepare_mvtec_ad.py"):
        data.load_dataset("mvtec_ad", "brick", out)


def _evil_tar(path: Path, extra: tarfile.TarInfo, content: bytes = b"x") -> Path:
    good = mvtec_files(categories=("brick",), n_train=4, n_good=2, n_per_type=1)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in good.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        extra.size = len(content) if extra.isfile() else 0
        tar.addfile(extra, io.BytesIO(content) if extra.isfile() else None)
    return path


def _member(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("member", [
    _member("brick/../../evil.txt"),
    _member("/tmp/lbnb-evil-absolute.txt"),
    _member("brick/escape", tarfile.SYMTYPE, "../../../outside"),
    _member("brick/hard", tarfile.LNKTYPE, "../outside.txt"),
    _member("brick/dev", tarfile.CHRTYPE),
], ids=["traversal", "absolute", "escaping-symlink", "escaping-hardlink", "device"])
def test_malicious_tar_is_refused_without_writing_outside(member, tmp_path):
    archive = _evil_tar(tmp_path / "evil.tar.gz", member)
    out = tmp_path / "deep" / "data"
    run = script("mvtec_ad", "--archive", archive, "--out", out, "--sha256", sha(archive), "--quiet")
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert files_under(tmp_path) == {"evil.tar.gz"}                         # nothing written anywhere
    assert not Path("/tmp/lbnb-evil-absolute.txt").exists()


def test_malicious_zip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("realiad_jsons_fuiad_0.0/x.json", "{}")
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(ArchiveError, match="evil"):
        prepare("realiad", tmp_path / "data", [archive], progress=False, log=lambda *_: None)
    assert files_under(tmp_path) == {"evil.zip"}


def test_download_is_verified_and_a_gated_dataset_needs_an_archive(mvtec, tmp_path, monkeypatch):
    digest = sha(mvtec)
    local = dataclasses.replace(converters.SOURCES["mvtec_ad"], url=mvtec.as_uri(), sha256=digest,
                                size=mvtec.stat().st_size)
    monkeypatch.setitem(converters.SOURCES, "mvtec_ad", local)
    marker = prepare("mvtec_ad", tmp_path / "data", progress=False, noise_levels=(0.1,), seeds=(0,),
                     log=lambda *_: None)
    assert marker["archives"][0]["verified"] and (tmp_path / "data" / "downloads" / local.filename).is_file()
    run = script("realiad", "--out", tmp_path / "r")
    assert run.returncode == 1 and "gated" in run.stderr and "--archive" in run.stderr


def test_an_unfinished_folder_is_not_overwritten_without_force(mvtec, tmp_path):
    (tmp_path / "data" / "mvtec_ad" / "mine").mkdir(parents=True)
    run = script("mvtec_ad", "--archive", mvtec, "--out", tmp_path / "data", "--sha256", sha(mvtec), "--quiet")
    assert run.returncode == 1 and "--force" in run.stderr
    assert (tmp_path / "data" / "mvtec_ad" / "mine").is_dir()
    forced = script("mvtec_ad", "--archive", mvtec, "--out", tmp_path / "data", "--sha256", sha(mvtec), "--quiet",
                    "--force", "--noise-levels", "0.1", "--seeds", "0")
    assert forced.returncode == 0, forced.stderr
    assert not (tmp_path / "data" / "mvtec_ad" / "mine").exists()


# -- VisA -------------------------------------------------------------------------------------------
def test_visa_script_converts_by_the_official_split(tmp_path):
    archive = visa_archive(tmp_path / "VisA_20220922.tar")
    out = tmp_path / "data"
    run = script("visa", "--archive", archive, "--out", out, "--sha256", sha(archive), "--quiet", "--seeds", "0")
    assert run.returncode == 0, run.stderr
    marker = json.loads((out / "visa" / MARKER).read_text())
    assert marker["categories"] == {c: {"train": 40, "train_anomalous": 0, "test_good": 10, "test_anomalous": 12}
                                    for c in ("candle", "pcb1")}
    mask = np.asarray(Image.open(out / "visa" / "candle" / "ground_truth" / "bad" / "001_mask.png"))
    assert set(np.unique(mask)) == {0, 255}                                  # class codes binarised
    train, test = data.load_dataset("visa", "pcb1", out, image_size=64, n_train=10, n_test_good=4, n_test_per_type=5)
    assert (len(train), len(test), test.n_anomalous) == (10, 9, 5) and set(test.defect_types) == {"good", "bad"}
    assert len(marker["splits"]) == 2 * 4                                    # 2 categories × 4 α × 1 seed


def test_visa_index_with_a_traversal_path_is_refused(tmp_path):
    archive = tmp_path / "visa.tar"
    csv_text = "object,split,label,image,mask\ncandle,train,normal,../../etc/passwd,\n"
    with tarfile.open(archive, "w") as tar:
        blob = csv_text.encode()
        info = tarfile.TarInfo("split_csv/1cls.csv")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(PrepareError, match="unsafe path"):
        prepare("visa", tmp_path / "data", [archive], sha256=[sha(archive)], progress=False, log=lambda *_: None)
    assert files_under(tmp_path) == {"visa.tar"}


# -- Real-IAD ---------------------------------------------------------------------------------------
def test_realiad_script_builds_one_layout_per_published_split(tmp_path):
    archives = realiad_archives(tmp_path / "downloads")
    out = tmp_path / "data"
    run = script("realiad", *[a for arc in archives for a in ("--archive", arc)], "--out", out, "--quiet")
    assert run.returncode == 0, run.stderr
    assert "NOT verified" in run.stdout and "publishes no checksum" in run.stdout
    marker = json.loads((out / "realiad" / MARKER).read_text())
    assert [a["verified"] for a in marker["archives"]] == [False, False]
    assert marker["archives"][0]["sha256"] == sha(archives[0])
    counts = marker["categories"]
    assert sorted(counts) == ["anomalous_without_mask"] + [f"fuiad_{a}" for a in REALIAD_LEVELS]
    # 10 OK samples × 3 views; 7 train the model; α moves round(α·7) NG samples (3 views each) into train
    for level in REALIAD_LEVELS:
        moved = int(float(level) * 7 + 0.5)
        assert counts[f"fuiad_{level}"]["audiojack"] == {"train": 21, "train_anomalous": 3 * moved, "test_good": 9,
                                                          "test_anomalous": 3 * (6 - moved)}
    assert len(marker["splits"]) == 8
    # the splits share their images through hard links
    a = next((out / "realiad" / "fuiad_0.0" / "audiojack" / "train" / "good").iterdir())
    b = out / "realiad" / "fuiad_0.4" / "audiojack" / "train" / "good" / a.name
    assert os.path.samefile(a, b)
    # the series reads the clean split, and a trial at α gets the published split of α
    train, test = data.load_dataset("realiad", "woodstick", out, image_size=64)
    assert (len(train), train.n_anomalous, len(test)) == (21, 0, 27)
    contaminate = data.contaminator("realiad", out, image_size=64)
    noisy = contaminate(train, test, 0.4, 123)
    assert noisy.protocol == "realiad_fuiad" and len(noisy.injected_ids) == 9 and noisy.train.n_anomalous == 9
    assert noisy.train.masks[noisy.train.labels == 1].reshape(9, -1).any(axis=1).all()
    with pytest.raises(ValueError, match="publishes FUIAD splits"):
        contaminate(train, test, 0.3, 0)


def test_realiad_json_with_an_unsafe_image_path_is_refused(tmp_path):
    archive = tmp_path / "jsons.zip"
    doc = {"train": [{"category": "x", "anomaly_class": "OK", "image_path": "../../secret.jpg"}], "test": []}
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("realiad_jsons_fuiad_0.0/x.json", json.dumps(doc))
    with pytest.raises(PrepareError, match="unsafe path"):
        prepare("realiad", tmp_path / "data", [archive], progress=False, log=lambda *_: None)
    assert files_under(tmp_path) == {"jsons.zip"}


def test_categories_fall_back_from_the_embedded_defaults_only():
    available = ["bottle", "cable", "capsule"]
    assert data.choose_categories("mvtec_ad", ["brick", "gravel"], available) == ["bottle", "cable"]
    assert data.choose_categories("mvtec_ad", [], available, 1) == ["bottle"]
    assert data.choose_categories("mvtec_ad", ["cable"], available) == ["cable"]
    with pytest.raises(ValueError, match="bottel"):
        data.choose_categories("mvtec_ad", ["bottel"], available)
    with pytest.raises(ValueError, match="DATASET"):
        data.load_dataset("mvtec", "bottle", "data")

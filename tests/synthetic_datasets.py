"""Small stand-ins for the MVTec AD, VisA and Real-IAD archives, in each archive's real structure, built from
the embedded categories (real texture photographs with synthetic defects). Used by the data-script tests."""
from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from lbnb.data import load_embedded

SIZE = 96


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _sets(category: str, n_train: int, n_good: int, n_per_type: int, seed: int):
    return load_embedded(category, seed, image_size=SIZE, n_train=n_train, n_test_good=n_good,
                         n_test_per_type=n_per_type)


def _tar(path: Path, files: dict[str, bytes], mode: str) -> Path:
    with tarfile.open(path, mode) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return path


def mvtec_files(categories=("brick", "gravel"), n_train=48, n_good=12, n_per_type=6) -> dict[str, bytes]:
    """``<category>/train/good/000.png``, ``test/<type>/000.png``, ``ground_truth/<type>/000_mask.png``,
    plus the archive's licence and readme, as in ``mvtec_anomaly_detection.tar.xz``."""
    files = {"license.txt": b"CC BY-NC-SA 4.0 (stand-in)\n", "readme.txt": b"MVTec AD stand-in\n"}
    for k, cat in enumerate(categories):
        train, test = _sets(cat, n_train, n_good, n_per_type, k)
        for i, image in enumerate(train.images):
            files[f"{cat}/train/good/{i:03d}.png"] = _png(image)
        for kind in sorted(set(test.defect_types)):
            index = np.flatnonzero(test.defect_types == kind)
            for j, i in enumerate(index):
                files[f"{cat}/test/{kind}/{j:03d}.png"] = _png(test.images[i])
                if kind != "good":
                    files[f"{cat}/ground_truth/{kind}/{j:03d}_mask.png"] = _png(test.masks[i].astype(np.uint8) * 255)
    return files


def mvtec_archive(path: Path, **kwargs) -> Path:
    return _tar(Path(path), mvtec_files(**kwargs), "w:xz")


def visa_archive(path: Path, categories=("candle", "pcb1"), sources=("brick", "gravel"), n_train=40,
                 n_test_good=10, n_anomaly=12) -> Path:
    """``<category>/Data/Images/{Normal,Anomaly}/*.JPG``, ``Data/Masks/Anomaly/*.png`` (class codes, not
    0/255), ``image_anno.csv`` and ``split_csv/1cls.csv``, as in ``VisA_20220922.tar`` (no outer folder)."""
    files = {"LICENSE-DATASET": b"CC BY 4.0 (stand-in)\n"}
    rows = []
    for k, (cat, src) in enumerate(zip(categories, sources)):
        train, test = _sets(src, n_train + n_test_good, 0, (n_anomaly + 2) // 3, k)
        anno = ["image,label,mask"]
        for i, image in enumerate(train.images):
            name = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            files[name] = _jpg(image)
            rows.append([cat, "train" if i < n_train else "test", "normal", name, ""])
            anno.append(f"{name},normal,")
        for j, i in enumerate(np.flatnonzero(test.labels == 1)[:n_anomaly]):
            name, mask = f"{cat}/Data/Images/Anomaly/{j:03d}.JPG", f"{cat}/Data/Masks/Anomaly/{j:03d}.png"
            files[name] = _jpg(test.images[i])
            files[mask] = _png(test.masks[i].astype(np.uint8) * (1 + j % 3))      # VisA masks hold class codes
            rows.append([cat, "test", "anomaly", name, mask])
            anno.append(f"{name},{test.defect_types[i]},{mask}")
        files[f"{cat}/image_anno.csv"] = ("\n".join(anno) + "\n").encode()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["object", "split", "label", "image", "mask"])
    writer.writerows(rows)
    files["split_csv/1cls.csv"] = buf.getvalue().encode()
    return _tar(Path(path), files, "w")


REALIAD_LEVELS = ("0.0", "0.1", "0.2", "0.4")


def realiad_archives(folder: Path, categories=("audiojack", "woodstick"), sources=("brick", "gravel"),
                     n_ok_samples=10, n_ng_samples=6, views=("C1", "C2", "C3")) -> list[Path]:
    """``realiad_256.zip`` (``realiad_256/<category>/OK/S0001/<category>_0001_OK_C1_<time>.jpg``,
    ``NG/<code>/S0101/...jpg`` with ``.png`` masks) and ``realiad_jsons_fuiad.zip``
    (``realiad_jsons_fuiad_<α>/<category>.json``): α = 0 trains on OK samples only; α > 0 moves whole NG
    samples (every view) from the test split into the training split."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, jsons = {}, {}
    for k, (cat, src) in enumerate(zip(categories, sources)):
        n_views = len(views)
        train, test = _sets(src, n_ok_samples * n_views, 0, n_ng_samples * n_views, k)
        codes = {kind: f"A{chr(ord('K') + i)}" for i, kind in enumerate(sorted(set(test.defect_types) - {"good"}))}
        ok, ng = [], []                                            # samples: lists of records (one per view)
        for s in range(n_ok_samples):
            sample = []
            for v, view in enumerate(views):
                rel = f"OK/S{s + 1:04d}/{cat}_{s + 1:04d}_OK_{view}_2023102113{v:04d}.jpg"
                images[f"realiad_256/{cat}/{rel}"] = _jpg(train.images[s * n_views + v])
                sample.append({"category": cat, "anomaly_class": "OK", "image_path": rel, "mask_path": None})
            ok.append(sample)
        anomalous = np.flatnonzero(test.labels == 1)
        for s in range(n_ng_samples):
            sample = []
            for v, view in enumerate(views):
                i = anomalous[(s * n_views + v) % len(anomalous)]
                code, sid = codes[test.defect_types[i]], f"S{101 + s:04d}"
                rel = f"NG/{code}/{sid}/{cat}_{101 + s:04d}_NG_{code}_{view}_2023102114{v:04d}"
                images[f"realiad_256/{cat}/{rel}.jpg"] = _jpg(test.images[i])
                images[f"realiad_256/{cat}/{rel}.png"] = _png(test.masks[i].astype(np.uint8) * 255)
                sample.append({"category": cat, "anomaly_class": code, "image_path": rel + ".jpg",
                               "mask_path": rel + ".png"})
            ng.append(sample)
        n_train_ok = n_ok_samples - 3                                # 3 OK samples stay in the test split
        for level in REALIAD_LEVELS:
            n_moved = int(float(level) * n_train_ok + 0.5)
            train_recs = [r for smp in ok[:n_train_ok] + ng[:n_moved] for r in smp]
            test_recs = [r for smp in ok[n_train_ok:] + ng[n_moved:] for r in smp]
            doc = {"meta": {"prefix": "", "normal_class": "OK"}, "train": train_recs, "test": test_recs}
            jsons[f"realiad_jsons_fuiad_{level}/{cat}.json"] = json.dumps(doc, indent=1).encode()
    return [_zip(folder / "realiad_256.zip", images), _zip(folder / "realiad_jsons_fuiad.zip", jsons)]

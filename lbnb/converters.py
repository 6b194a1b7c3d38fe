"""Prepare MVTec AD, VisA and Real-IAD for lbnb: fetch or take the archive, verify its SHA-256, extract it
safely (:mod:`lbnb.archives`), convert it to the MVTec AD layout that :func:`lbnb.data.load_folder` reads,
record the contamination splits, and write a completion marker last.

Result under ``OUT`` (read by :mod:`lbnb.datasets`)::

    OUT/mvtec_ad/<category>/{train,test,ground_truth}/...          the archive's own layout
    OUT/mvtec_ad/splits/softpatch/<category>/noise_<α>_seed_<s>.json
    OUT/visa/<category>/...    from split_csv/1cls.csv: train/good, test/{good,bad}, ground_truth/bad
    OUT/visa/splits/softpatch/...
    OUT/realiad/fuiad_<α>/<category>/...   one folder per published FUIAD split (hard links, no copies);
                                            anomalous training images under train/<defect code>
    OUT/realiad/splits/realiad_jsons_fuiad_<α>/<category>.json      the published jsons, as read
    OUT/<dataset>/.lbnb-complete.json       written last: archives and checksums, counts, splits

Everything is built in ``OUT/.<dataset>.partial/`` and moved into place at the end, so a failure or an
interruption leaves no folder that looks complete. Each data script is :func:`main` with its dataset.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from . import __version__
from .archives import ArchiveError, download, safe_extract, sha256_file, verify_sha256
from .contamination import FUIAD_LEVEL, softpatch_split
from .datasets import MARKER
from .folder_layout import category_dirs, split_files
from .image_io import IMAGE_SUFFIXES
from .imageset import GOOD
from .series import write_json


class PrepareError(Exception):
    """A preparation failed; the message is one line saying why."""


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from. ``sha256``/``size``: of the official archive (None: none published)."""

    title: str
    filename: str
    url: str | None
    sha256: str | None
    size: int | None
    licence: str
    note: str = ""


SOURCES = {
    # SHA-256 and sizes as recorded by anomalib's DownloadInfo and by independent downloads of each archive.
    "mvtec_ad": Source("MVTec AD", "mvtec_anomaly_detection.tar.xz",
                       "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
                       "420938113-1629952094/mvtec_anomaly_detection.tar.xz",
                       "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d", 5_264_982_680,
                       "CC BY-NC-SA 4.0"),
    "visa": Source("VisA", "VisA_20220922.tar",
                   "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
                   "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362", 1_929_840_640, "CC BY 4.0"),
    "realiad": Source("Real-IAD", "realiad_256 and realiad_jsons_fuiad_* archives", None, None, None,
                      "Real-IAD licence (research use, access on request)",
                      "Real-IAD is gated: request access at https://realiad4ad.github.io/Real-IAD/, download "
                      "realiad_256 and the realiad_jsons_fuiad_{0.0,0.1,0.2,0.4} archives, and pass each with "
                      "--archive"),
}
NOISE_LEVELS = (0.0, 0.1, 0.2, 0.4)
SEEDS = (0, 1, 2)
_FUIAD_DIR = re.compile("realiad_jsons_" + FUIAD_LEVEL)


# -- the pipeline -----------------------------------------------------------------------------------
def prepare(dataset: str, out, archives=(), *, sha256=(), force: bool = False, noise_levels=NOISE_LEVELS,
            seeds=SEEDS, progress: bool = True, log=print) -> dict:
    """Prepare ``dataset`` under ``OUT/<dataset>``; returns the completion marker's content.

    ``archives``: local archive paths (default: download the official one into ``OUT/downloads``);
    ``sha256``: expected digests, one per archive (default: the recorded official digest; Real-IAD has
    none, so its digests are computed and recorded but cannot be verified without ``sha256``).
    Idempotent: a completed preparation is kept unless ``force``. Raises :class:`PrepareError` or
    :class:`~lbnb.archives.ArchiveError`, leaving no partial dataset behind.
    """
    if dataset not in SOURCES:
        raise PrepareError(f"unknown dataset {dataset!r}; choose from {sorted(SOURCES)}")
    source, out = SOURCES[dataset], Path(out)
    final, started = out / dataset, time.perf_counter()
    if (final / MARKER).is_file() and not force:
        marker = json.loads((final / MARKER).read_text())
        log(f"{source.title} is already prepared in {final} (pass --force to redo it)")
        return marker
    if final.exists() and not force:
        raise PrepareError(f"{final} exists but holds no completed preparation ({MARKER} missing); "
                           f"remove it or pass --force")
    archives = [Path(a) for a in archives]
    sha256 = list(sha256)
    if sha256 and len(sha256) != len(archives or [source.filename]):
        raise PrepareError(f"give one --sha256 per archive ({len(archives)} archives, {len(sha256)} digests)")
    out.mkdir(parents=True, exist_ok=True)
    if archives:
        records = [_checked(a, (sha256 or [None] * len(archives))[i], source, progress, log)
                   for i, a in enumerate(archives)]
    else:
        if source.url is None:
            raise PrepareError(source.note)
        _check_space(out, 2.2 * source.size)
        expected = (sha256 or [source.sha256])[0]
        log(f"downloading {source.url}")
        archives = [download(source.url, out / "downloads" / source.filename, expected_sha256=expected,
                             progress=progress)]                        # verified while it lands
        records = [{"name": archives[0].name, "sha256": expected.lower(), "bytes": archives[0].stat().st_size,
                    "verified": True}]
    _check_space(out, 1.2 * sum(r["bytes"] for r in records))
    staging = out / f".{dataset}.partial"
    shutil.rmtree(staging, ignore_errors=True)                                       # a stale attempt of ours
    try:
        for i, archive in enumerate(archives):
            log(f"extracting {archive.name} ...")
            safe_extract(archive, staging / "raw" / str(i), progress=progress)
        data = staging / "data"
        data.mkdir()
        log(f"converting {source.title} to the MVTec AD layout ...")
        counts = CONVERTERS[dataset](staging / "raw", data, progress)
        splits = (_realiad_splits(data) if dataset == "realiad"
                  else write_softpatch_splits(data, noise_levels, seeds, progress))
        if final.exists():
            shutil.rmtree(final)
        os.replace(data, final)
        marker = {"dataset": dataset, "title": source.title, "licence": source.licence, "lbnb_version": __version__,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "archives": records,
                  "categories": counts, "splits": splits,
                  "seconds": round(time.perf_counter() - started, 1)}
        write_json(final / MARKER, marker, indent=1, sort_keys=True)                 # last: now it is complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return marker


def _checked(archive: Path, expected: str | None, source: Source, progress: bool, log) -> dict:
    """Verify one archive's SHA-256 (given, or the official one) → its record for the marker."""
    if not archive.is_file():
        raise PrepareError(f"archive not found: {archive}")
    expected = expected or source.sha256
    if expected:
        log(f"verifying SHA-256 of {archive.name} ...")
        digest = verify_sha256(archive, expected, progress=progress)
    else:
        digest = sha256_file(archive, progress=progress)
        log(f"warning: {source.title} publishes no checksum; {archive.name} has SHA-256 {digest} (recorded, "
            f"not verified; pass --sha256 to verify)")
    return {"name": archive.name, "sha256": digest, "bytes": archive.stat().st_size, "verified": bool(expected)}


def _check_space(folder: Path, needed: float) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise PrepareError(f"not enough disk space in {folder}: about {needed / 1e9:.1f} GB needed, "
                           f"{free / 1e9:.1f} GB free")


# -- helpers shared by the converters ------------------------------------------------------------
def _dirs(root: Path, depth: int):
    """Every folder under ``root`` down to ``depth`` levels, sorted, ``root`` first."""
    level = [root]
    for _ in range(depth + 1):
        yield from level
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir() and not c.is_symlink())


def _parts(rel: str, what: str) -> tuple[str, ...]:
    """The parts of a relative path read from an index file; absolute paths and '..' are refused."""
    parts = PurePosixPath(str(rel).replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or re.match(r"^[A-Za-z]:", parts[0]):
        raise PrepareError(f"{what}: unsafe path {rel!r} (absolute or with '..')")
    return parts


def _inside(base: Path, rel: str, what: str) -> Path:
    """The existing file ``base/rel`` named by an index file (see :func:`_parts`)."""
    path = base.joinpath(*_parts(rel, what))
    if not path.is_file():
        raise PrepareError(f"{what}: file {rel!r} not found in the archive")
    return path


def _safe_name(name: str, what: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise PrepareError(f"{what}: unsafe name {name!r}")
    return name


def _place(src: Path, dst: Path, how: str) -> None:
    """Put ``src`` at ``dst`` by ``how`` = "move" or "link" (hard link, else a copy); never overwrite."""
    if dst.exists():
        raise PrepareError(f"two source files map to {dst.parent.name}/{dst.name}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if how == "move":
        os.replace(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_mask(src: Path | None, dst: Path, size: tuple[int, int]) -> None:
    """Binary mask PNG (0/255) at ``dst``: any non-zero pixel of ``src`` is anomalous; None → all normal."""
    if dst.exists():
        raise PrepareError(f"two masks map to {dst.name}")
    mask = (np.asarray(Image.open(src).convert("L")) > 0 if src is not None
            else np.zeros(size[::-1], bool))
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(dst)


def _counts(data: Path) -> dict:
    """Per category folder: train normal/anomalous, test normal/anomalous image counts."""
    counts = {}
    for cat in category_dirs(data):
        train, test = split_files(cat, "train"), split_files(cat, "test")
        counts[cat.name] = {"train": sum(f[1] == GOOD for f in train),
                            "train_anomalous": sum(f[1] != GOOD for f in train),
                            "test_good": sum(f[1] == GOOD for f in test),
                            "test_anomalous": sum(f[1] != GOOD for f in test)}
    return counts


def _check_masks(cat: Path) -> None:
    """Every anomalous image of a category has ``ground_truth/<type>/<stem>_mask.png`` (MVTec naming)."""
    for split in ("train", "test"):
        for sid, kind, path in split_files(cat, split):
            if kind != GOOD and not (cat / "ground_truth" / kind / f"{path.stem}_mask.png").is_file():
                raise PrepareError(f"{cat.name}: anomalous image {split}/{kind}/{path.name} has no mask "
                                   f"ground_truth/{kind}/{path.stem}_mask.png")


# -- the three converters -----------------------------------------------------------------------
def convert_mvtec_ad(raw: Path, data: Path, progress: bool = True) -> dict:
    """Move every category folder (one with ``train/good`` and ``test``) of the extracted archive."""
    cats = [d for d in _dirs(raw, 3) if (d / "train" / GOOD).is_dir() and (d / "test").is_dir()]
    if not cats:
        raise PrepareError("no MVTec AD category (a folder with train/good/ and test/) in the archive")
    names = [d.name for d in cats]
    if len(set(names)) != len(names):
        raise PrepareError(f"the archive holds a category twice: {sorted(n for n in names if names.count(n) > 1)}")
    for cat in tqdm(cats, desc="categories", disable=not progress):
        _check_masks(cat)
        os.replace(cat, data / cat.name)
    return _counts(data)


def convert_visa(raw: Path, data: Path, progress: bool = True) -> dict:
    """Lay VisA out by its official one-class split ``split_csv/1cls.csv`` (columns object, split, label,
    image, mask): normal → ``<split>/good``, anomaly → ``<split>/bad`` with a 0/255 mask
    ``ground_truth/bad/<stem>_mask.png`` (VisA's masks hold class codes; any non-zero is anomalous)."""
    found = [d / "split_csv" / "1cls.csv" for d in _dirs(raw, 2) if (d / "split_csv" / "1cls.csv").is_file()]
    if len(found) != 1:
        raise PrepareError(f"expected one split_csv/1cls.csv in the VisA archive, found {len(found)}")
    root = found[0].parent.parent
    with found[0].open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = {"object", "split", "label", "image", "mask"} - set(rows[0] if rows else {})
    if missing:
        raise PrepareError(f"split_csv/1cls.csv lacks the columns {sorted(missing)}")
    for n, row in enumerate(tqdm(rows, desc="images", disable=not progress), 2):
        where = f"1cls.csv line {n}"
        cat, split, label = _safe_name(row["object"], where), row["split"].strip(), row["label"].strip()
        if split not in ("train", "test") or label not in ("normal", "anomaly"):
            raise PrepareError(f"{where}: split {split!r} / label {label!r} not train|test / normal|anomaly")
        image = _inside(root, row["image"], where)
        kind = GOOD if label == "normal" else "bad"
        if kind != GOOD:
            with Image.open(image) as im:
                size = im.size
            mask = _inside(root, row["mask"], where) if row["mask"].strip() else None
            _write_mask(mask, data / cat / "ground_truth" / kind / f"{image.stem}_mask.png", size)
        _place(image, data / cat / split / kind / image.name, "move")
    return _counts(data)


def convert_realiad(raw: Path, data: Path, progress: bool = True) -> dict:
    """One MVTec-layout folder per published split ``realiad_jsons_fuiad_<α>/<category>.json``:
    ``fuiad_<α>/<category>/{train,test}/<good | defect code>/`` with hard links to the extracted images (so
    the four splits cost the disk of one) and masks under ``ground_truth``. The jsons are kept in
    ``splits/``. Anomalous records without a mask get an all-normal mask (counted in the marker)."""
    json_dirs = {}                                                    # α text ("0.1") → folder of jsons
    for d in _dirs(raw, 4):
        match = _FUIAD_DIR.fullmatch(d.name)
        if match and any(d.glob("*.json")):
            json_dirs.setdefault(match.group(1), d)
    if not any(float(a) == 0 for a in json_dirs):
        raise PrepareError("no realiad_jsons_fuiad_0.0/<category>.json in the archives (the clean split is "
                           "needed; pass the realiad_jsons_fuiad_* archives with --archive)")
    roots = list(_dirs(raw, 3))
    counts, no_mask = {}, 0
    for alpha, jdir in sorted(json_dirs.items(), key=lambda item: float(item[0])):
        target = data / ("fuiad_0.0" if float(alpha) == 0 else f"fuiad_{alpha}")
        for jpath in sorted(jdir.glob("*.json")):
            doc = _read_split_json(jpath)
            normal = str((doc.get("meta") or {}).get("normal_class", "OK"))
            for split in ("train", "test"):
                for i, rec in enumerate(tqdm(doc[split], desc=f"{jdir.name}/{jpath.stem} {split}",
                                             disable=not progress, leave=False)):
                    no_mask += _place_record(rec, f"{jpath.name} {split}[{i}]", jpath.stem, normal, split,
                                             roots, target)
            (data / "splits" / jdir.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(jpath, data / "splits" / jdir.name / jpath.name)
        counts[target.name] = _counts(target)
    counts["anomalous_without_mask"] = no_mask
    return counts


def _read_split_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise PrepareError(f"{path.name} is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("train", "test")):
        raise PrepareError(f"{path.name}: expected an object with 'train' and 'test' lists")
    return doc


def _place_record(rec, where: str, default_category: str, normal: str, split: str, roots: list[Path],
                  target: Path) -> int:
    """Link one json record's image (and mask) into ``target``; returns 1 when an anomaly lacks a mask."""
    if not isinstance(rec, dict) or "image_path" not in rec or "anomaly_class" not in rec:
        raise PrepareError(f"{where}: a record needs 'image_path' and 'anomaly_class'")
    category = _safe_name(str(rec.get("category") or default_category), where)
    kind = GOOD if str(rec["anomaly_class"]) == normal else _safe_name(str(rec["anomaly_class"]), where)
    image = _find(roots, category, rec["image_path"], where)
    _place(image, target / category / split / kind / image.name, "link")
    if kind == GOOD:
        return 0
    mask_dst = target / category / "ground_truth" / kind / f"{image.stem}_mask.png"
    if rec.get("mask_path"):
        mask = _find(roots, category, rec["mask_path"], where + " mask")
        if mask.suffix.lower() == ".png":
            _place(mask, mask_dst, "link")
        else:
            _write_mask(mask, mask_dst, (0, 0))
        return 0
    with Image.open(image) as im:
        _write_mask(None, mask_dst, im.size)
    return 1


def _find(roots: list[Path], category: str, rel: str, where: str) -> Path:
    """A json path, relative to ``<image root>/<category>/`` (or to the image root), in the extracted tree.
    The root that answered moves to the front of ``roots``, so the search is short after the first record."""
    parts = _parts(rel, where)
    for k, root in enumerate(roots):
        for base in (root / category, root):
            path = base.joinpath(*parts)
            if path.is_file():
                roots.insert(0, roots.pop(k))
                return path
    raise PrepareError(f"{where}: image {rel!r} of category {category!r} is not in the archives")


CONVERTERS = {"mvtec_ad": convert_mvtec_ad, "visa": convert_visa, "realiad": convert_realiad}


# -- splits --------------------------------------------------------------------------------------
def write_softpatch_splits(data: Path, noise_levels=NOISE_LEVELS, seeds=SEEDS, progress: bool = True) -> list[str]:
    """Record the SoftPatch-protocol split of every (category, α, seed) as
    ``splits/softpatch/<category>/noise_<α>_seed_<s>.json``: the injected test ids (augmented re-samples
    as ``<id>#aug<k>``), their files, and the test ids that remain. ``lbnb`` draws exactly these splits
    (:func:`lbnb.contamination.softpatch_protocol` with the same seed), other code can read the files."""
    written = []
    cats = category_dirs(data)
    for cat in tqdm(cats, desc="splits", disable=not progress):
        train, test = split_files(cat, "train"), split_files(cat, "test")
        files = {sid: f"test/{kind}/{path.name}" for sid, kind, path in test}
        for alpha in noise_levels:
            for seed in seeds:
                split = softpatch_split([f[0] for f in test], [f[1] != GOOD for f in test], len(train), alpha,
                                        random_state=seed)
                doc = {"protocol": "softpatch", "category": cat.name, "noise": float(alpha), "seed": int(seed),
                       "resample": True, "overlap": False, "n_train_normal": len(train), **split,
                       "injected_files": [files[i.split("#aug")[0]] for i in split["injected"]]}
                path = data / "splits" / "softpatch" / cat.name / f"noise_{alpha:g}_seed_{seed}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, doc, indent=1)
                written.append(str(path.relative_to(data)))
    return written


def _realiad_splits(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in (data / "splits").rglob("*.json"))


# -- command line --------------------------------------------------------------------------------
def _size(folder: Path) -> int:
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file():
            st = path.stat()
            if (st.st_dev, st.st_ino) not in seen:                       # hard links count once
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def main(dataset: str, argv: list[str] | None = None) -> int:
    """The command line of ``data_scripts/prepare_<dataset>.py``; exit status 0, or 1 with a one-line reason."""
    source = SOURCES[dataset]
    parser = argparse.ArgumentParser(
        prog=f"prepare_{dataset}.py",
        description=f"Prepare {source.title} for lbnb: verify (SHA-256), extract safely, convert to the MVTec AD "
                    f"layout, record contamination splits. Idempotent. {source.note}")
    parser.add_argument("--archive", action="append", default=[], metavar="PATH",
                        help="a local archive to use instead of downloading" +
                             (" (repeat for several)" if dataset == "realiad" else f" ({source.filename})"))
    parser.add_argument("--out", default="data", metavar="DIR",
                        help=f"data root (default: data); the dataset goes to DIR/{dataset}")
    parser.add_argument("--sha256", action="append", default=[], metavar="HEX",
                        help="expected SHA-256 of each archive, in order (default: the official digest"
                             + (")" if source.sha256 else "; Real-IAD publishes none)"))
    parser.add_argument("--force", action="store_true", help="redo a completed preparation")
    if dataset != "realiad":
        parser.add_argument("--noise-levels", type=float, nargs="+", default=list(NOISE_LEVELS), metavar="A",
                            help="α of the recorded SoftPatch splits (default: 0 0.1 0.2 0.4)")
        parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds of those splits")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    name = f"prepare_{dataset}"
    try:
        options = ({} if dataset == "realiad" else {"noise_levels": args.noise_levels, "seeds": args.seeds})
        marker = prepare(dataset, args.out, args.archive, sha256=args.sha256, force=args.force,
                         progress=not args.quiet, log=lambda line: print(f"{name}: {line}"), **options)
    except (PrepareError, ArchiveError, OSError, ValueError) as err:
        print(f"{name}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    _summary(name, Path(args.out) / dataset, marker)
    return 0


def _summary(name: str, folder: Path, marker: dict) -> None:
    rows = []                                                # {cat: counts}, or Real-IAD's {split: {cat: counts}}
    for key, value in marker["categories"].items():
        if isinstance(value, dict) and "train" in value:
            rows.append((key, value))
        elif isinstance(value, dict):
            rows += [(f"{key}/{cat}", n) for cat, n in value.items()]
    print(f"{name}: done: {folder}")
    print(f"  {'category':<28}{'train':>7}{'+anom':>7}{'test ok':>9}{'test anom':>11}")
    for cat, n in rows:
        print(f"  {cat:<28}{n['train']:>7}{n['train_anomalous']:>7}{n['test_good']:>9}{n['test_anomalous']:>11}")
    if marker["categories"].get("anomalous_without_mask"):
        print(f"  {marker['categories']['anomalous_without_mask']} anomalous images had no mask (written all-normal)")
    checks = ", ".join(f"{a['name']} {a['sha256'][:12]}… {'verified' if a['verified'] else 'NOT verified'}"
                       for a in marker["archives"])
    print(f"  archives: {checks}")
    print(f"  {len(marker['splits'])} split files, {_size(folder) / 1e6:.1f} MB on disk, "
          f"{marker.get('seconds', 0):.0f} s; marker {folder / MARKER}")

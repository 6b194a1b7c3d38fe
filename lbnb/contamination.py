"""Noisy (contaminated) training sets for fully unsupervised anomaly detection.

Three ways to obtain a training set that contains anomalies, all returning :class:`Contaminated`:

- :func:`contaminate_softpatch`  SoftPatch protocol (MVTec AD / VisA): ``int(noise * n_normal)``
  anomalous *test* images are moved into the training set.
- :func:`contaminate_fixed_rate` the same, but ``contamination_rate`` is the share of anomalies in
  the final training set: ``n = round(rate * n_normal / (1 - rate))``.
- :func:`load_realiad_fuiad`     Real-IAD's published FUIAD splits (``realiad_jsons_fuiad_<a>``).

Trials take any :data:`Contaminate` callable ``(train, test, noise, random_state) -> Contaminated``;
the default is :func:`softpatch_protocol`, and :class:`lbnb.datasets.PublishedSplits` serves Real-IAD's
published splits. :func:`softpatch_split` gives the same split from ids alone (the data scripts record it).

Injected samples keep their ground truth (``labels == 1``, masks, defect types, ids), so a
filter can be scored on the training set. Inputs are never mutated; every array is copied.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from lbnb.image_io import read_image, read_mask, resize_image, resize_mask
from lbnb.imageset import GOOD, ImageSet
from lbnb.validation import check_ratio

MAX_ROTATION_DEG = 3.0    # re-sampling augmentation: rotation uniform in +-3 degrees
MAX_SHIFT_FRACTION = 0.03  # ... and translation uniform in +-3 % of each side
_EPS = 1e-9                # guards int()/round() against float error, e.g. 0.29 * 100 = 28.999...


@dataclass(frozen=True)
class Contaminated:
    """A contaminated training set and the test set that remains.

    ``train``: normal training images followed by the injected anomalies (labels stay 1).
    ``test``: the test set after injection (injected samples removed unless ``overlap``).
    ``nominal``: the noise / rate asked for (NaN when unknown); ``realised_rate`` =
    anomalies / len(train).
    """

    train: ImageSet
    test: ImageSet
    injected_ids: tuple[str, ...]
    protocol: str
    nominal: float
    realised_rate: float
    n_resampled: int = 0
    overlap: bool = False

    def report(self) -> dict:
        """Plain-python summary of the contamination, for logs and result tables."""
        return {"protocol": self.protocol, "nominal": float(self.nominal),
                "realised_rate": float(self.realised_rate), "n_train": len(self.train),
                "n_injected": len(self.injected_ids), "n_test": len(self.test),
                "n_test_anomalous": self.test.n_anomalous, "n_resampled": int(self.n_resampled),
                "overlap": bool(self.overlap)}


FUIAD_LEVEL = r"fuiad_(\d+(?:\.\d+)?)"
"""The α in a Real-IAD split name (``realiad_jsons_fuiad_0.1``, and lbnb's prepared ``fuiad_0.1``)."""

Contaminate = Callable[[ImageSet, ImageSet, float, int], Contaminated]
"""``(clean train, test, noise α, random_state) -> Contaminated``: how a trial obtains its noisy training set."""


# -- protocols ----------------------------------------------------------------------------------
def contaminate_softpatch(train: ImageSet, test: ImageSet, noise: float, *, overlap: bool = False,
                          resample: bool = False, random_state: int = 0) -> Contaminated:
    """SoftPatch protocol: inject ``int(noise * n_normal)`` anomalous test images into ``train``.

    Args:
        train: all-normal training set, images (N, H, W, 3).
        test: test set with the same (H, W); its anomalous images form the pool.
        noise: in [0, 1); number injected = floor(noise * len(train)).
        overlap: keep the injected images in the test set too (SoftPatch's "overlap" setting).
        resample: when more are requested than the pool holds, use the whole pool plus augmented
            copies (small rotation/translation) of randomly drawn pool images; else ValueError.
        random_state: seed for ``np.random.default_rng``; same seed, same result.
    """
    check_ratio(noise, "noise", low_open=False)
    _check_sets(train, test)
    n = int(math.floor(noise * len(train) + _EPS))
    return _inject(train, test, n, "softpatch", noise, overlap, resample, random_state)


def contaminate_fixed_rate(train: ImageSet, test: ImageSet, contamination_rate: float, *,
                           overlap: bool = False, resample: bool = False,
                           random_state: int = 0) -> Contaminated:
    """Inject anomalies so that they make up ``contamination_rate`` of the final training set.

    ``n = round(rate * n_normal / (1 - rate))`` (halves round up); the realised rate
    ``n / (n_normal + n)`` is the closest achievable. Other arguments as
    :func:`contaminate_softpatch`.
    """
    check_ratio(contamination_rate, "contamination_rate", low_open=False)
    _check_sets(train, test)
    n = int(math.floor(contamination_rate * len(train) / (1.0 - contamination_rate) + 0.5 + _EPS))
    return _inject(train, test, n, "fixed_rate", contamination_rate, overlap, resample,
                   random_state)


def _check_sets(train: ImageSet, test: ImageSet) -> None:
    if not isinstance(train, ImageSet) or not isinstance(test, ImageSet):
        raise TypeError("train and test must be ImageSet instances")
    if train.n_anomalous:
        raise ValueError(f"train must hold only normal images for this protocol; it has "
                         f"{train.n_anomalous} anomalous of {len(train)}")
    if len(train) and len(test) and train.image_size != test.image_size:
        raise ValueError(f"train and test image sizes differ: {train.image_size} vs "
                         f"{test.image_size}")
    shared = set(train.ids.tolist()) & set(test.ids.tolist())
    if shared:
        raise ValueError(f"train and test share {len(shared)} ids, e.g. {sorted(shared)[:3]}")


def _inject(train: ImageSet, test: ImageSet, n: int, protocol: str, nominal: float,
            overlap: bool, resample: bool, random_state) -> Contaminated:
    """Move ``n`` anomalous test samples (plus augmented re-samples if needed) into train."""
    rng = np.random.default_rng(random_state)
    chosen, sources = _draw(np.flatnonzero(test.labels == 1), n, resample, rng)
    injected = test.subset(chosen)
    if len(sources):
        injected = injected.concat(_resample(injected, sources, rng))
    new_train = train.subset(np.arange(len(train)))  # a copy: inputs are never shared
    if n:
        new_train = new_train.concat(injected)
    keep = np.ones(len(test), bool) if overlap else ~np.isin(np.arange(len(test)), chosen)
    ids = tuple(injected.ids.tolist())
    return Contaminated(new_train, test.subset(keep), ids, protocol, float(nominal),
                        new_train.contamination_rate, len(sources), bool(overlap))


def _draw(pool: np.ndarray, n: int, resample: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` draws from ``pool`` (test indices) → (chosen test indices, positions in chosen to re-sample)."""
    n_extra = max(n - len(pool), 0)
    if n_extra and not resample:
        raise ValueError(f"{n} anomalies requested but the test set holds only {len(pool)}; "
                         f"pass resample=True to add augmented re-samples")
    if n_extra and len(pool) == 0:
        raise ValueError(f"{n} anomalies requested but the test set holds none to re-sample")
    chosen = rng.permutation(pool) if n_extra else rng.choice(pool, size=n, replace=False)
    sources = rng.choice(len(pool), size=n_extra, replace=n_extra > len(pool)) if n_extra else np.zeros(0, int)
    return chosen, sources


def _resampled_ids(source_ids, index) -> list[str]:
    """Ids of augmented copies of ``source_ids[index]``: ``f"{id}#aug{k}"``, k counting per source."""
    ids, count = [], {}
    for i in np.asarray(index).tolist():
        sid = str(source_ids[i])
        count[sid] = count.get(sid, -1) + 1
        ids.append(f"{sid}#aug{count[sid]}")
    return ids


def softpatch_split(test_ids, test_labels, n_train: int, noise: float, *, overlap: bool = False,
                    resample: bool = True, random_state: int = 0) -> dict:
    """The ids :func:`contaminate_softpatch` would move, computed from ids and labels alone (no pixels).

    ``test_ids``/``test_labels``: (M,) in test-set order; ``n_train``: N normal training images.
    Returns ``{"injected": [...], "test": [...], "n_resampled": r}``: the injected ids (augmented
    re-samples last, named ``<id>#aug<k>``) and the test ids that remain; same seed, same split as
    ``contaminate_softpatch(..., resample=resample, random_state=random_state)`` on those sets.
    """
    check_ratio(noise, "noise", low_open=False)
    test_ids, labels = np.asarray(test_ids, dtype=str), np.asarray(test_labels)
    n = int(math.floor(noise * n_train + _EPS))
    chosen, sources = _draw(np.flatnonzero(labels == 1), n, resample, np.random.default_rng(random_state))
    injected = test_ids[chosen].tolist() + _resampled_ids(test_ids[chosen], sources)
    keep = np.ones(len(test_ids), bool) if overlap else ~np.isin(np.arange(len(test_ids)), chosen)
    return {"injected": injected, "test": test_ids[keep].tolist(), "n_resampled": len(sources)}


def softpatch_protocol(train: ImageSet, test: ImageSet, noise: float, random_state: int = 0) -> Contaminated:
    """The trials' contamination: SoftPatch protocol, topped up with augmented re-samples when a category has
    fewer anomalous test images than ``int(noise * N)`` (as the SoftPatch authors do on MVTec AD at α = 0.4)."""
    return contaminate_softpatch(train, test, noise, resample=True, random_state=random_state)


def _resample(source: ImageSet, index: np.ndarray, rng: np.random.Generator) -> ImageSet:
    """Augmented copies of ``source[index]``; ids from :func:`_resampled_ids`."""
    images, masks = [], []
    for i in index.tolist():
        image, mask = augment_pair(source.images[i], source.masks[i], rng)
        images.append(image)
        masks.append(mask)
    return ImageSet(np.stack(images), source.labels[index], np.stack(masks), _resampled_ids(source.ids, index),
                    source.defect_types[index], source.category, dict(source.meta))


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 max_tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One random small rigid motion applied identically to an image and its mask.

    Rotation uniform in +-3 deg about the centre, translation uniform in +-3 % of each side;
    bilinear, reflect padding for the image, False padding for the mask, mask re-binarised (>0.5).
    A draw that would push a non-empty mask out of the frame is redrawn (``max_tries`` times).

    Args: image (H, W, 3) uint8, mask (H, W) bool. Returns: the same shapes and dtypes.
    """
    h, w = mask.shape
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    for _ in range(max_tries):
        angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
        shift = np.array([h, w]) * rng.uniform(-MAX_SHIFT_FRACTION, MAX_SHIFT_FRACTION, size=2)
        cos, sin = np.cos(angle), np.sin(angle)
        inverse = np.array([[cos, sin], [-sin, cos]])  # output (row, col) -> input (row, col)
        offset = centre - inverse @ (centre + shift)
        out_mask = ndimage.affine_transform(mask.astype(np.float32), inverse, offset, order=1,
                                            mode="constant", cval=0.0) > 0.5
        if out_mask.any() or not mask.any():
            break
    else:
        warnings.warn("augmented mask is empty after every try; keeping the last draw",
                      stacklevel=3)
    channels = [ndimage.affine_transform(image[..., c].astype(np.float32), inverse, offset,
                                         order=1, mode="reflect") for c in range(3)]
    out_image = np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)
    return out_image, out_mask


# -- Real-IAD FUIAD splits ------------------------------------------------------------------------
def load_realiad_fuiad(json_path, data_root, *, image_size: int | tuple[int, int] | None = None
                       ) -> Contaminated:
    """Read one Real-IAD split json (e.g. ``realiad_jsons_fuiad_0.1/audiojack.json``).

    The json is ``{"meta": {..., "normal_class": "OK"}, "train": [rec, ...], "test": [rec, ...]}``
    with records ``{"category", "anomaly_class", "image_path", "mask_path"}``; paths are relative
    to ``<data_root>/<category>/`` (``data_root`` = e.g. ``Real-IAD/realiad_256``), with
    ``<data_root>/`` tried second. ``anomaly_class != normal_class`` gives label 1 and the class
    code as defect type; a null mask of an anomalous sample becomes all-False (with a warning).
    Ids are ``"<category>/<image_path>"``. Images of different sizes need ``image_size``
    (int or (H, W)), to which images and masks are resized.

    Returns: ``Contaminated`` with protocol ``"realiad_json"``, ``nominal`` parsed from a
    ``..._fuiad_<a>`` folder name (else NaN) and the measured ``realised_rate``.
    """
    json_path, data_root = Path(json_path), Path(data_root)
    if not json_path.is_file():
        raise FileNotFoundError(f"Real-IAD json not found: {json_path}")
    if not data_root.is_dir():
        raise FileNotFoundError(f"Real-IAD data root not found: {data_root}")
    with json_path.open(encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("train", "test")):
        raise ValueError(f"{json_path}: expected an object with 'train' and 'test' lists")
    normal_class = str((doc.get("meta") or {}).get("normal_class", "OK"))
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    loaded = {split: [_load_record(rec, i, f"{json_path.name} {split}", json_path.stem,
                                   data_root, normal_class, size)
                      for i, rec in enumerate(doc[split])] for split in ("train", "test")}
    no_mask = [r[0] for recs in loaded.values() for r in recs if r[6]]
    if no_mask:
        warnings.warn(f"{json_path}: {len(no_mask)} anomalous samples without mask_path get an "
                      f"all-False mask, e.g. {no_mask[:3]}", stacklevel=2)
    shapes = {r[1].shape[:2] for recs in loaded.values() for r in recs}
    if len(shapes) > 1:
        raise ValueError(f"{json_path}: images have different sizes {sorted(shapes)}; "
                         f"pass image_size=(H, W) to resize them")
    if not shapes:
        raise ValueError(f"{json_path}: no records in 'train' or 'test'")
    h, w = shapes.pop()
    sets = {}
    for split, recs in loaded.items():
        dup = sorted(k for k, c in Counter(r[0] for r in recs).items() if c > 1)
        if dup:
            raise ValueError(f"{json_path}: duplicated image_path in '{split}': {dup[:3]}")
        cats = sorted({r[5] for r in recs}) or [json_path.stem]
        sets[split] = ImageSet(np.stack([r[1] for r in recs]) if recs else
                               np.zeros((0, h, w, 3), np.uint8),
                               np.array([r[3] for r in recs], np.int8),
                               np.stack([r[2] for r in recs]) if recs else np.zeros((0, h, w), bool),
                               np.array([r[0] for r in recs], dtype=str),
                               np.array([r[4] for r in recs], dtype=str), "+".join(cats),
                               {"source": str(json_path)})
    train, test = sets["train"], sets["test"]
    injected = tuple(train.ids[train.labels == 1].tolist())
    match = re.search(FUIAD_LEVEL, json_path.parent.name)
    return Contaminated(train, test, injected, "realiad_json",
                        float(match.group(1)) if match else float("nan"),
                        train.contamination_rate, 0, bool(set(injected) & set(test.ids.tolist())))


def _load_record(rec, index: int, where: str, default_category: str, data_root: Path,
                 normal_class: str, size):
    """One json record -> (id, image (H,W,3) uint8, mask (H,W) bool, label, defect type,
    category, anomalous-without-mask flag)."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}[{index}]: record is not an object: {rec!r}")
    for key in ("image_path", "anomaly_class"):
        if key not in rec:
            raise ValueError(f"{where}[{index}]: record is missing the key '{key}'")
    category = str(rec.get("category") or default_category)
    rel = str(rec["image_path"]).replace("\\", "/")
    image = read_image(_resolve(data_root, category, rel, f"{where}[{index}]"))
    if size is not None:
        image = resize_image(image, tuple(size))
    label = int(str(rec["anomaly_class"]) != normal_class)
    mask_rel = rec.get("mask_path")
    if mask_rel:
        mask = read_mask(_resolve(data_root, category, str(mask_rel).replace("\\", "/"),
                                  f"{where}[{index}] mask"))
        mask = resize_mask(mask, image.shape[:2])
    else:
        mask = np.zeros(image.shape[:2], bool)
    defect = str(rec["anomaly_class"]) if label else GOOD
    return (f"{category}/{rel.lstrip('/')}", image, mask, label, defect, category,
            bool(label and not mask_rel))


def _resolve(data_root: Path, category: str, rel: str, where: str) -> Path:
    candidates = [data_root / category / rel, data_root / rel]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{where}: file {rel!r} not found (tried "
                            f"{', '.join(str(p) for p in candidates)})")

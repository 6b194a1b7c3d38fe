"""The MVTec AD folder layout: read a category into (train, test), write one back.

Layout::

    <root>/<category>/train/good/<name>.png        normal training images
    <root>/<category>/train/<type>/<name>.png      (optional) anomalous training images, e.g. a
                                                   contaminated split; masks as for test
    <root>/<category>/test/<type>/<name>.png       type "good" = normal
    <root>/<category>/ground_truth/<type>/<name>_mask.png

Sample ids are ``"<category>/<split>/<type>/<name>"``: stable across runs and machines.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .image_io import IMAGE_SUFFIXES, read_image, read_mask, resize_image, resize_mask
from .imageset import GOOD, ImageSet


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _find_mask(gt_dir: Path, name: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (gt_dir / f"{name}_mask{suffix}", gt_dir / f"{name}{suffix}"):
            if candidate.is_file():
                return candidate
    return None


def category_dirs(root) -> list[Path]:
    """The category folders under ``root``: those with ``train/`` and ``test/``, sorted by name."""
    return sorted(p for p in Path(root).iterdir() if (p / "train").is_dir() and (p / "test").is_dir())


def split_files(cat_dir: Path, split: str) -> list[tuple[str, str, Path]]:
    """The images of ``<cat_dir>/<split>`` as ``(id, type, path)`` in load order (types, then files, sorted)."""
    split_dir, category = Path(cat_dir) / split, Path(cat_dir).name
    return [(f"{category}/{split}/{type_dir.name}/{path.stem}", type_dir.name, path)
            for type_dir in sorted(p for p in split_dir.iterdir() if p.is_dir())
            for path in _image_files(type_dir)]


def subsample(files: list[tuple[str, str, Path]], n_good: int | None, n_per_type: int | None,
              rng: np.random.Generator) -> list[tuple[str, str, Path]]:
    """At most ``n_good`` normal and ``n_per_type`` anomalous files of each type, drawn with ``rng``, in load
    order; ``None`` keeps all of that kind."""
    keep = []
    for kind in sorted({f[1] for f in files}):
        index = [i for i, f in enumerate(files) if f[1] == kind]
        limit = n_good if kind == GOOD else n_per_type
        if limit is not None and len(index) > limit:
            index = rng.choice(index, size=int(limit), replace=False).tolist()
        keep += index
    return [files[i] for i in sorted(keep)]


def _load_split(cat_dir: Path, split: str, files: list[tuple[str, str, Path]], image_size,
                allow_missing_masks: bool, default_size=None):
    split_dir = cat_dir / split
    records = []  # (id, type, image, mask)
    for sid, kind, path in files:
        image = read_image(path)
        if kind == GOOD:
            mask = np.zeros(image.shape[:2], bool)
        else:
            mask_path = _find_mask(cat_dir / "ground_truth" / kind, path.stem)
            if mask_path is None:
                if not allow_missing_masks:
                    raise ValueError(f"no mask for anomalous image {path}: expected "
                                     f"{cat_dir / 'ground_truth' / kind / (path.stem + '_mask.png')} "
                                     "(pass allow_missing_masks=True to use empty masks)")
                warnings.warn(f"no mask for {path}; using an empty mask", stacklevel=3)
                mask = np.zeros(image.shape[:2], bool)
            else:
                mask = read_mask(mask_path)
                if mask.shape != image.shape[:2]:
                    raise ValueError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                                     f"{path} is {image.shape[1]}x{image.shape[0]}")
        records.append((sid, kind, image, mask))
    if not records:
        raise ValueError(f"no images found under {split_dir} (expected {split_dir}/<type>/*.png)")
    sizes = {r[2].shape[:2] for r in records}
    if image_size is None and len(sizes) > 1:
        raise ValueError(f"images under {split_dir} have {len(sizes)} different sizes, e.g. "
                         f"{sorted(sizes)[:3]}; pass image_size=(H, W) to resize them")
    if image_size is not None:
        size = tuple(image_size)
    else:
        size = tuple(default_size) if default_size else sizes.pop()
    return ImageSet(
        images=np.stack([resize_image(r[2], size) for r in records]),
        labels=np.array([r[1] != GOOD for r in records], np.int8),
        masks=np.stack([resize_mask(r[3], size) for r in records]),
        ids=np.array([r[0] for r in records]),
        defect_types=np.array([r[1] for r in records]),
        category=cat_dir.name,
    )


def load_folder(root: str | os.PathLike, category: str, *, image_size: int | tuple[int, int] | None = None,
                allow_missing_masks: bool = False, n_train: int | None = None, n_test_good: int | None = None,
                n_test_per_type: int | None = None, random_state: int = 0) -> tuple[ImageSet, ImageSet]:
    """Load ``<root>/<category>`` in the MVTec AD layout as ``(train, test)``.

    ``image_size`` (int or (H, W)) resizes every image (bilinear) and mask (bilinear, > 0.5);
    without it all images of a split must share one size. ``n_train`` / ``n_test_good`` /
    ``n_test_per_type`` read a random subset (seeded by ``random_state``; ``n_train`` bounds the
    normal *and* each anomalous training type, so a contaminated split keeps anomalies). Raises
    ``FileNotFoundError`` or ``ValueError`` naming the offending folder or file: a missing
    ``train``/``test`` folder, an unreadable image, a mask whose size differs from its image, an
    anomalous image without mask.
    """
    cat_dir = Path(root) / category
    if not cat_dir.is_dir():
        found = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        raise FileNotFoundError(f"category folder {cat_dir} does not exist"
                                + (f"; categories under {root}: {found}" if found else ""))
    for split in ("train", "test"):
        if not (cat_dir / split).is_dir():
            raise FileNotFoundError(f"{cat_dir} does not follow the MVTec AD layout: missing folder "
                                    f"{cat_dir / split} (expected train/good, test/<type>, ground_truth/<type>)")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    rng = np.random.default_rng(random_state)
    train_files = subsample(split_files(cat_dir, "train"), n_train, n_train, rng)
    test_files = subsample(split_files(cat_dir, "test"), n_test_good, n_test_per_type, rng)
    train = _load_split(cat_dir, "train", train_files, image_size, allow_missing_masks)
    test = _load_split(cat_dir, "test", test_files, image_size, allow_missing_masks,
                       default_size=train.image_size)  # a uniform test size is resized to train's
    return train, test


def _file_stem(sample_id: str) -> str:
    """File name (without suffix) for a sample id: its last path part, with '#' made safe."""
    return sample_id.rsplit("/", 1)[-1].replace("#", "_")


def write_folder(root: str | os.PathLike, train: ImageSet, test: ImageSet, *, category: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``train`` and ``test`` as ``<root>/<category>`` in the MVTec AD layout (PNG files).

    Anomalous training samples (a contaminated split) go to ``train/<type>/``. The category is
    written into a temporary folder beside the target and renamed into place at the end, so an
    interrupted write never leaves a half-written category. Returns the category folder.
    """
    category = category or train.category or test.category
    if not category:
        raise ValueError("pass category=... (the image sets carry no category name)")
    root = Path(root)
    target = root / category
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{category}.partial-", dir=root))
    masks_written: dict[tuple[str, str], np.ndarray] = {}  # ground_truth/ is shared by train and test
    try:
        for split, data in (("train", train), ("test", test)):
            written: set[tuple[str, str]] = set()
            for image, mask, sid, kind in zip(data.images, data.masks, data.ids, data.defect_types):
                stem = _file_stem(str(sid))
                if (kind, stem) in written:
                    raise ValueError(f"two {split} samples of type {kind!r} map to the file name {stem!r}")
                written.add((kind, stem))
                (staging / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(staging / split / kind / f"{stem}.png")
                if kind != GOOD:
                    previous = masks_written.setdefault((kind, stem), mask)
                    if previous is not mask and not np.array_equal(previous, mask):
                        raise ValueError(f"train and test samples of type {kind!r} named {stem!r} have different "
                                         f"masks but would share ground_truth/{kind}/{stem}_mask.png")
                    (staging / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(
                        staging / "ground_truth" / kind / f"{stem}_mask.png")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target

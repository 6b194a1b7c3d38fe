"""The image-set container shared by every part of lbnb.

An :class:`ImageSet` is the one container every part of lbnb passes around:

- ``images``  (N, H, W, 3) uint8 RGB
- ``labels``  (N,) int8, 0 = normal, 1 = anomalous (ground truth, kept even when a
  sample is injected into a training set as "good")
- ``masks``   (N, H, W) bool, True on defective pixels
- ``ids``     (N,) str, stable and unique, e.g. ``"brick/test/scratch/007"``
- ``defect_types`` (N,) str, ``"good"`` for normal samples
- ``category`` str
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

GOOD = "good"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images with labels, masks and stable ids (see module docstring for shapes)."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    ids: np.ndarray
    defect_types: np.ndarray
    category: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 of shape (N, H, W, 3), got {images.dtype} {images.shape}")
        n, h, w = images.shape[:3]
        raw_labels = np.asarray(self.labels).reshape(-1)
        if not np.isin(raw_labels, (0, 1)).all():  # check before the int8 cast (256 -> 0, 0.5 -> 0)
            raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
        labels = raw_labels.astype(np.int8)
        masks = np.asarray(self.masks).astype(bool, copy=False)
        ids = np.asarray(self.ids, dtype=str).reshape(-1)
        types = np.asarray(self.defect_types, dtype=str).reshape(-1)
        if masks.shape != (n, h, w):
            raise ValueError(f"masks must have shape {(n, h, w)}, got {masks.shape}")
        for name, arr in (("labels", labels), ("ids", ids), ("defect_types", types)):
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries for {n} images")
        if len(set(ids.tolist())) != n:
            dup = sorted({i for i in ids.tolist() if (ids == i).sum() > 1})[:5]
            raise ValueError(f"ids must be unique; duplicated: {dup}")
        for name, arr in (("images", images), ("labels", labels), ("masks", masks), ("ids", ids),
                          ("defect_types", types)):
            object.__setattr__(self, name, arr)

    # -- basic protocol ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"ImageSet(category={self.category!r}, n={len(self)}, size={h}x{w}, "
                f"anomalous={self.n_anomalous}, types={sorted(set(self.defect_types.tolist()))})")

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return tuple(self.images.shape[1:3])

    @property
    def n_anomalous(self) -> int:
        return int(self.labels.sum())

    @property
    def contamination_rate(self) -> float:
        """Realised share of anomalous samples, anomalies / len(self) (0.0 when empty)."""
        return float(self.labels.mean()) if len(self) else 0.0

    def subset(self, index: Sequence[int] | np.ndarray) -> "ImageSet":
        """A new set holding the samples at ``index`` (integer positions or a bool mask), copied."""
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"boolean index has shape {index.shape} for a set of {len(self)} samples")
            index = np.flatnonzero(index)
        index = index.astype(np.intp)
        return ImageSet(self.images[index], self.labels[index], self.masks[index], self.ids[index],
                        self.defect_types[index], self.category, dict(self.meta))

    def select_ids(self, ids: Iterable[str]) -> "ImageSet":
        """The samples whose ids are listed, in the order given; unknown ids raise KeyError."""
        position = {sid: i for i, sid in enumerate(self.ids.tolist())}
        wanted = list(ids)
        missing = [sid for sid in wanted if sid not in position]
        if missing:
            raise KeyError(f"{len(missing)} unknown ids, e.g. {missing[:3]}")
        return self.subset([position[sid] for sid in wanted])

    def concat(self, other: "ImageSet") -> "ImageSet":
        """This set followed by ``other`` (same image size; ids must stay unique)."""
        if other.image_size != self.image_size:
            raise ValueError(f"image sizes differ: {self.image_size} vs {other.image_size}")
        return ImageSet(np.concatenate([self.images, other.images]),
                        np.concatenate([self.labels, other.labels]),
                        np.concatenate([self.masks, other.masks]),
                        np.concatenate([self.ids, other.ids]),
                        np.concatenate([self.defect_types, other.defect_types]),
                        self.category or other.category, {**other.meta, **self.meta})

    def summary(self) -> dict[str, int]:
        """Count of samples per defect type (``"good"`` included)."""
        kinds, counts = np.unique(self.defect_types, return_counts=True)
        return {str(k): int(c) for k, c in zip(kinds, counts)}


def describe(data: ImageSet):
    """Per defect type: count and mask area as a share of the image (mean, min, max); a DataFrame."""
    import pandas as pd

    area = data.masks.mean(axis=(1, 2)) if len(data) else np.zeros(0)
    rows = []
    for kind in sorted(set(data.defect_types.tolist()), key=lambda k: (k != GOOD, k)):
        sel = data.defect_types == kind
        rows.append({"defect_type": kind, "count": int(sel.sum()), "mask_area_mean": float(area[sel].mean()),
                     "mask_area_min": float(area[sel].min()), "mask_area_max": float(area[sel].max())})
    columns = ["defect_type", "count", "mask_area_mean", "mask_area_min", "mask_area_max"]
    return pd.DataFrame(rows, columns=columns).set_index("defect_type")

"""Exact image- and pixel-level anomaly-detection metrics.

Everywhere a higher score means "more anomalous". Every metric is computed exactly,
with tied scores grouped into one threshold (no threshold grids, no histogram bins),
from one sort of each class: the positives (anomalous images / pixels) by descending
score and the negatives ascending, so that for every distinct positive score the
counts of negatives above and at it come from a binary search (see ``_Curve``):

- AUROC: trapezoidal area under the ROC curve (ties as in ``sklearn.metrics.roc_auc_score``).
- AP: ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds, no interpolation
  (as ``sklearn.metrics.average_precision_score``).
- F1max: the largest F1 over the precision-recall curve at every distinct threshold.
- AUPRO: area under the per-region-overlap (PRO) vs. false-positive-rate curve up to
  ``max_fpr``, normalised by ``max_fpr`` (MVTec AD definition, 8-connected regions).

Shapes: image labels/scores are (N,), pixel masks/maps are (N, H, W).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from lbnb.imageset import ImageSet

__all__ = ["METRIC_LABELS", "image_metrics", "pixel_metrics", "evaluate"]

METRIC_LABELS = {
    "i_auroc": "I-AUROC", "i_ap": "I-AP", "i_f1max": "I-F1max",
    "p_auroc": "P-AUROC", "p_ap": "P-AP", "p_f1max": "P-F1max", "aupro": "AUPRO@0.3",
}

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# -- shared machinery ---------------------------------------------------------------
def _check_finite(name: str, values: np.ndarray) -> None:
    if values.dtype != bool and (not np.issubdtype(values.dtype, np.number)
                                 or np.issubdtype(values.dtype, np.complexfloating)):
        raise ValueError(f"{name} must be real numbers, got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")


class _Curve:
    """Exact ROC / precision-recall points of a scored two-class sample.

    Built from ``positive`` (P,) and ``negative`` (M,) scores (``negative`` is sorted in
    place). Only thresholds at the K distinct positive scores ``u_0 > ... > u_{K-1}`` are
    kept: a threshold between two of them flags no new positive, so the ROC / PRO curves
    are flat there (exactly described by their end points), it adds nothing to AP and
    cannot hold the F1 maximum. Memory is O(M) for one sorted copy, time O(M log M).

    Attributes, all (K,): ``tp`` positives with score >= u_k (int64), ``fp_ge`` / ``fp_gt``
    negatives with score >= u_k / > u_k (int64); ``order`` (P,) sorts the positives by
    descending score; ``n_pos``, ``n_neg`` the class sizes.
    """

    def __init__(self, positive: np.ndarray, negative: np.ndarray) -> None:
        self.order = np.argsort(positive, kind="stable")[::-1]
        ranked = positive[self.order]
        ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
        thresholds = ranked[ends]
        negative.sort()  # ascending, in place: callers pass a fresh copy (boolean indexing)
        self.n_pos, self.n_neg = positive.size, negative.size
        self.tp = ends.astype(np.int64) + 1
        self.fp_ge = self.n_neg - np.searchsorted(negative, thresholds, side="left").astype(np.int64)
        self.fp_gt = self.n_neg - np.searchsorted(negative, thresholds, side="right").astype(np.int64)

    def staircase(self, y_ge: np.ndarray, y_end: float) -> tuple[np.ndarray, np.ndarray]:
        """Curve points (2K+2,) in FPR order: (0,0), then per k the point just above u_k
        (FP = fp_gt[k], y = y_ge[k-1]) and the point at u_k (fp_ge[k], y_ge[k]), then
        (1, y_end). Returns (fpr, y)."""
        k = self.tp.size
        fpr, y = np.zeros(2 * k + 2), np.zeros(2 * k + 2)
        fpr[1:-1:2], fpr[2:-1:2], fpr[-1] = self.fp_gt / self.n_neg, self.fp_ge / self.n_neg, 1.0
        y[3:-1:2], y[2:-1:2], y[-1] = y_ge[:-1], y_ge, y_end
        return fpr, y

    def auroc(self) -> float:
        fpr, tpr = self.staircase(self.tp / self.n_pos, 1.0)
        return _trapezoid(fpr, tpr)

    def average_precision(self) -> float:
        """Step-wise ``sum (R_n - R_{n-1}) P_n`` (no interpolation)."""
        recall_gain = np.diff(self.tp, prepend=0) / self.n_pos
        return float(np.sum(recall_gain * self.tp / (self.tp + self.fp_ge)))

    def f1max(self) -> float:
        """Largest F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P) over all thresholds."""
        return float(np.max(2.0 * self.tp / (self.tp + self.fp_ge + self.n_pos)))


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def _integrate_to(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> float:
    """Trapezoidal area under the curve (fpr, pro) (K,) for fpr in [0, max_fpr].

    ``fpr`` must be non-decreasing, start at 0 and end at 1 >= ``max_fpr``; the curve is
    linearly interpolated at exactly ``fpr == max_fpr``.
    """
    k = int(np.searchsorted(fpr, max_fpr, side="right"))  # points fpr[:k] are <= max_fpr
    x, y = fpr[:k], pro[:k]
    if x[-1] < max_fpr:  # fpr[k] > max_fpr exists since fpr ends at 1
        frac = (max_fpr - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        x = np.append(x, max_fpr)
        y = np.append(y, pro[k - 1] + frac * (pro[k] - pro[k - 1]))
    return _trapezoid(x, y)


def _region_weights(masks: np.ndarray) -> np.ndarray:
    """Per-pixel PRO weights for the anomalous pixels of ``masks`` (N, H, W) bool.

    Returns (A,) float64 in the raster order of ``masks[masks]``: a pixel of the
    8-connected ground-truth region r gets ``1 / (|r| * R)``, with R the number of
    regions over all images, so that summing the weights of the pixels flagged at a
    threshold gives the mean per-region overlap.
    """
    region_ids, sizes, offset = [], [], 0
    for mask in masks:
        if not mask.any():
            continue
        labelled, n_regions = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        ids = labelled[mask]  # 1..n_regions, raster order
        sizes.append(np.bincount(ids, minlength=n_regions + 1)[1:])
        region_ids.append(ids.astype(np.int64) - 1 + offset)
        offset += n_regions
    sizes = np.concatenate(sizes).astype(np.float64)
    return (1.0 / (sizes * sizes.size))[np.concatenate(region_ids)]


# -- public API ---------------------------------------------------------------------
def image_metrics(labels, scores) -> dict[str, float]:
    """Image-level metrics.

    labels: (N,) 0/1 (or bool), 1 = anomalous; scores: (N,) real, higher = more anomalous.
    Returns ``{"i_auroc", "i_ap", "i_f1max"}`` as floats. Raises ValueError on shape
    mismatch, non-finite scores, labels other than 0/1, or a single class.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"labels and scores must both have shape (N,), got {labels.shape} and {scores.shape}")
    _check_finite("image scores", scores)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    positive = labels.astype(bool)
    n_pos = int(positive.sum())
    if n_pos in (0, positive.size):
        kind = "normal" if n_pos == 0 else "anomalous"
        raise ValueError(f"image metrics need both classes, but all {positive.size} images are {kind}")
    curve = _Curve(scores[positive], scores[~positive])
    return {"i_auroc": curve.auroc(), "i_ap": curve.average_precision(), "i_f1max": curve.f1max()}


def pixel_metrics(masks, maps, max_fpr: float = 0.3) -> dict[str, float]:
    """Pixel-level metrics pooled over all pixels of all images.

    masks: (N, H, W) bool, True on defective pixels; maps: (N, H, W) real anomaly maps.
    Returns ``{"p_auroc", "p_ap", "p_f1max", "aupro"}`` as floats, where ``aupro`` is the
    normalised area under the PRO curve for FPR in [0, max_fpr] (1.0 = perfect). The
    FPR denominator counts every normal pixel, anomaly-free images included.
    Raises ValueError on shape mismatch, non-finite maps, or when the masks hold no
    anomalous (or no normal) pixel.
    """
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"masks and maps must both have shape (N, H, W), got {masks.shape} and {maps.shape}")
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must lie in (0, 1], got {max_fpr}")
    _check_finite("pixel maps", maps)
    masks = masks.astype(bool, copy=False)
    n_pos, n_pix = int(np.count_nonzero(masks)), masks.size
    if n_pos == 0:
        raise ValueError("pixel metrics need anomalous pixels, but the ground-truth masks are all empty")
    if n_pos == n_pix:
        raise ValueError("pixel metrics need normal pixels, but the ground-truth masks cover every pixel")
    curve = _Curve(maps[masks], maps[~masks])  # (A,) and (M - A,) in raster order
    out = {"p_auroc": curve.auroc(), "p_ap": curve.average_precision(), "p_f1max": curve.f1max()}
    # AUPRO: PRO at a threshold is the summed weight of the flagged anomalous pixels.
    pro = np.cumsum(_region_weights(masks)[curve.order])[curve.tp - 1]
    fpr, pro = curve.staircase(pro, 1.0)
    out["aupro"] = _integrate_to(fpr, pro, float(max_fpr)) / float(max_fpr)
    return out


def evaluate(test: ImageSet, image_scores, pixel_maps) -> dict[str, float]:
    """All seven metrics of a method on a test set.

    test: ImageSet with N images of size H x W (labels and masks are the ground truth);
    image_scores: (N,) real; pixel_maps: (N, H, W) real (same shape as ``test.masks``).
    Returns a dict with the keys of :data:`METRIC_LABELS`, all floats.
    Raises ValueError with the problem named on bad shapes, NaN/inf scores, a test set
    holding a single class of image, or masks without anomalous pixels.
    """
    image_scores, pixel_maps = np.asarray(image_scores), np.asarray(pixel_maps)
    n = len(test)
    if image_scores.shape != (n,):
        raise ValueError(f"image_scores must have shape ({n},) for {n} test images, got {image_scores.shape}")
    if pixel_maps.shape != test.masks.shape:
        raise ValueError(f"pixel_maps must have shape {test.masks.shape} (test.masks), got {pixel_maps.shape}")
    _check_finite("image scores", image_scores)
    _check_finite("pixel maps", pixel_maps)
    n_anom = test.n_anomalous
    if n_anom in (0, n):
        kind = "normal" if n_anom == 0 else "anomalous"
        raise ValueError(f"test set {test.category!r} has only one class: all {n} images are {kind}")
    if not test.masks.any():
        raise ValueError(f"test set {test.category!r} has no anomalous pixels in its masks")
    result = image_metrics(test.labels, image_scores)
    result.update(pixel_metrics(test.masks, pixel_maps))
    return {key: float(result[key]) for key in METRIC_LABELS}

"""Tests for lbnb.metrics: agreement with scikit-learn, hand-derived AUPRO values,
invariance under monotone transforms, input validation and ``evaluate``."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from lbnb.imageset import ImageSet
from lbnb.metrics import METRIC_LABELS, evaluate, image_metrics, pixel_metrics

KEYS = ("i_auroc", "i_ap", "i_f1max", "p_auroc", "p_ap", "p_f1max", "aupro")


def sk_f1max(labels, scores):
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return float(np.nanmax(f1))


def blob_masks(rng, n, h, w, p_anomalous=0.5):
    """(n, h, w) bool masks holding 0-3 random discs each, about half of them empty."""
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        if rng.random() < p_anomalous:
            for _ in range(rng.integers(1, 4)):
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 5)
                masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    masks[0, 3:6, 3:6] = True  # at least one anomalous image
    masks[-1] = False  # at least one normal image
    return masks


def tied_maps(rng, masks, decimals=1):
    """Noisy maps, higher on the masks, rounded so that many scores tie."""
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    return np.round(maps, decimals)


def reference_aupro(masks, maps, max_fpr=0.3):
    """Slow, direct definition: loop over every distinct threshold and every region."""
    regions = []
    for mask, amap in zip(masks, maps):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[labelled == k] for k in range(1, n + 1)]
    normal = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fprs.append(np.mean(normal >= t))
        pros.append(np.mean([np.mean(r >= t) for r in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= max_fpr
    x = np.append(fprs[keep], max_fpr)
    y = np.append(pros[keep], np.interp(max_fpr, fprs, pros))  # interp is fine: fpr rises past max_fpr
    return np.trapezoid(x=x, y=y) / max_fpr


# -- agreement with scikit-learn -----------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_metrics_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=200)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=200) + 0.8 * labels, 1)  # ~60 distinct values: many ties
    assert len(np.unique(scores)) < 150
    got = image_metrics(labels, scores)
    assert got["i_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert got["i_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert got["i_f1max"] == pytest.approx(sk_f1max(labels, scores), abs=1e-12)


def test_image_metrics_small_hand_case():
    # scores 0.9(a) 0.5(a) 0.5(n) 0.1(n): pairs a>n: (0.9,*)=2, (0.5a,0.5n)=tie 0.5, (0.5a,0.1)=1 -> 3.5/4
    # AP: thresholds 0.9 -> R=.5,P=1 ; 0.5 -> R=1,P=2/3 -> .5*1 + .5*2/3 = 5/6
    # F1: at 0.9: 2*1/(1+1+2)=.5 ; at 0.5: 2*2/(2+1+2)=.8
    got = image_metrics([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1])
    assert got == pytest.approx({"i_auroc": 3.5 / 4, "i_ap": 5 / 6, "i_f1max": 0.8})


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_metrics_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, 12, 24, 20)
    maps = tied_maps(rng, masks).astype(np.float32)
    got = pixel_metrics(masks, maps)
    y, s = masks.ravel(), maps.ravel()
    assert got["p_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-10)
    assert got["p_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-10)
    assert got["p_f1max"] == pytest.approx(sk_f1max(y, s), abs=1e-10)


@pytest.mark.parametrize("seed,max_fpr", [(0, 0.3), (3, 0.3), (4, 0.05), (5, 1.0)])
def test_aupro_matches_slow_reference(seed, max_fpr):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, 6, 16, 16)
    maps = tied_maps(rng, masks)
    got = pixel_metrics(masks, maps, max_fpr=max_fpr)["aupro"]
    assert got == pytest.approx(reference_aupro(masks, maps, max_fpr), abs=1e-12)


# -- AUPRO on hand-built cases -----------------------------------------------------------
def case_three_images():
    """3 images of 2x4 (24 px). img0: region A = (0,0),(0,1),(1,2), one 8-connected region
    of 3 px ((1,2) touches (0,1) diagonally only); img1: region B = (1,3), 1 px; img2 anomaly-free.
    R = 2 regions -> each A pixel adds 1/6 to PRO, the B pixel 1/2. Normal px = 24 - 4 = 20,
    all three images included, so each normal pixel adds 0.05 to FPR."""
    masks = np.zeros((3, 2, 4), bool)
    masks[0, 0, 0] = masks[0, 0, 1] = masks[0, 1, 2] = True
    masks[1, 1, 3] = True
    maps = np.zeros((3, 2, 4))
    maps[1, 1, 3] = 0.9  # B        -> (FPR, PRO) = (0, 1/2)
    maps[0, 0, 0] = 0.8  # A px 1   -> (0, 2/3)
    maps[2, 0, 0] = 0.7  # normal, in the anomaly-free image -> (0.05, 2/3)
    maps[0, 0, 1] = 0.6  # A px 2   -> (0.05, 5/6)
    maps[2, 1, :] = 0.5  # 4 normal px tied with ...
    maps[0, 1, 0] = 0.5  # ... a 5th normal px in img0 -> (0.30, 5/6)
    maps[0, 1, 2] = 0.4  # A px 3   -> (0.30, 1)
    # the 14 remaining normal px score 0 -> (1, 1)
    return masks, maps


def test_aupro_hand_case_several_regions_and_normal_images():
    masks, maps = case_three_images()
    # area on [0, 0.3]: 0.05 * 2/3 + 0.25 * 5/6 = 1/30 + 5/24 = 29/120; / 0.3 -> 29/36
    assert pixel_metrics(masks, maps)["aupro"] == pytest.approx(29 / 36, abs=1e-12)
    # With 4-connectivity A would be 2 regions ({(0,0),(0,1)} and {(1,2)}), R = 3, giving
    # 0.05 * 1/2 + 0.25 * 2/3 = 23/120 -> 23/36; excluding the anomaly-free image from the FPR
    # denominator (12 normal px) would also change the value (see the next test).


def test_aupro_anomaly_free_image_changes_fpr_denominator():
    masks, maps = case_three_images()
    # drop img2 (anomaly-free, 8 normal px incl. the 0.7 and four 0.5 ones): 12 normal px remain.
    # curve: (0,1/2) (0,2/3) (0,5/6) [0.6] (1/12, 5/6) [0.5, the img0 px] (1/12, 1) [0.4] -> PRO = 1
    # area on [0, 0.3]: (1/12) * 5/6 + (0.3 - 1/12) * 1 = 5/72 + 13/60 ; / 0.3
    expected = (5 / 72 + 13 / 60) / 0.3
    assert pixel_metrics(masks[:2], maps[:2])["aupro"] == pytest.approx(expected, abs=1e-12)


def test_aupro_interpolates_at_max_fpr_and_groups_ties():
    # 2 images of 2x3 (12 px); img0 region of 2 px (PRO weight 1/2 each), img1 anomaly-free.
    # 10 normal px -> 0.1 FPR each.
    masks = np.zeros((2, 2, 3), bool)
    masks[0, 0, :2] = True
    maps = np.zeros((2, 2, 3))
    maps[0, 0, 0] = 0.9              # -> (0, 0.5)
    maps[1, 0, :2] = 0.8             # 2 normal px -> (0.2, 0.5)
    maps[0, 0, 1] = 0.5              # anomalous px tied with ...
    maps[1, 1, :2] = 0.5             # ... 2 normal px: one step (0.2, 0.5) -> (0.4, 1.0)
    # The step crosses FPR 0.3: PRO(0.3) = 0.5 + (0.1 / 0.2) * 0.5 = 0.75.
    # area = 0.2 * 0.5 + 0.1 * (0.5 + 0.75) / 2 = 0.1625 ; / 0.3 = 13/24.
    # (Splitting the tie anomaly-first would give 2/3, normal-first 1/2, no interpolation 1/3.)
    assert pixel_metrics(masks, maps)["aupro"] == pytest.approx(13 / 24, abs=1e-12)
    # max_fpr = 0.2 lands exactly on a point: area 0.2 * 0.5 = 0.1 ; / 0.2 = 0.5
    assert pixel_metrics(masks, maps, max_fpr=0.2)["aupro"] == pytest.approx(0.5, abs=1e-12)


def test_aupro_worst_case_is_zero_and_perfect_is_one():
    rng = np.random.default_rng(7)
    masks = blob_masks(rng, 8, 20, 20)
    perfect = np.where(masks, 1.0 + rng.random(masks.shape), rng.random(masks.shape))
    got = pixel_metrics(masks, perfect)
    assert got == pytest.approx({"p_auroc": 1.0, "p_ap": 1.0, "p_f1max": 1.0, "aupro": 1.0}, abs=1e-12)
    worst = -perfect  # every normal px first: PRO stays 0 until FPR = 1
    assert pixel_metrics(masks, worst)["aupro"] == pytest.approx(0.0, abs=1e-12)
    assert pixel_metrics(masks, worst)["p_auroc"] == pytest.approx(0.0, abs=1e-12)


def test_aupro_constant_map_is_half_the_max_fpr_triangle():
    # one threshold: the curve jumps from (0,0) straight to (1,1); PRO(0.3) = 0.3,
    # area = 0.3 * 0.3 / 2 = 0.045 ; / 0.3 = 0.15
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1:3, 1:3] = True
    assert pixel_metrics(masks, np.ones(masks.shape))["aupro"] == pytest.approx(0.15, abs=1e-12)


# -- invariance -------------------------------------------------------------------------
@pytest.mark.parametrize("transform", [np.exp, lambda s: 3.0 * s - 7.0, lambda s: np.arctan(s) + 5.0])
def test_all_metrics_invariant_under_monotone_transform(transform):
    rng = np.random.default_rng(11)
    masks = blob_masks(rng, 10, 16, 16)
    maps = tied_maps(rng, masks)
    labels = masks.reshape(len(masks), -1).any(1).astype(np.int8)
    scores = np.round(maps.reshape(len(maps), -1).max(1), 1)
    base = {**image_metrics(labels, scores), **pixel_metrics(masks, maps)}
    moved = {**image_metrics(labels, transform(scores)), **pixel_metrics(masks, transform(maps))}
    assert moved == pytest.approx(base, abs=1e-12)
    # sanity: a non-monotone transform does change the metrics
    flipped = {**image_metrics(labels, -scores), **pixel_metrics(masks, -maps)}
    assert flipped["p_auroc"] != pytest.approx(base["p_auroc"], abs=1e-3)


# -- validation -------------------------------------------------------------------------
def test_image_metrics_errors():
    with pytest.raises(ValueError, match="shape"):
        image_metrics([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="both classes"):
        image_metrics([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        image_metrics([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_metrics([0, 1, 1], [0.1, np.inf, 0.3])
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        image_metrics([0, 2, 1], [0.1, 0.2, 0.3])


def test_pixel_metrics_errors():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True
    with pytest.raises(ValueError, match="shape"):
        pixel_metrics(masks, np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="shape"):
        pixel_metrics(masks[0], np.zeros((4, 4)))
    with pytest.raises(ValueError, match="no anomalous|all empty"):
        pixel_metrics(np.zeros_like(masks), np.zeros(masks.shape))
    bad = np.zeros(masks.shape)
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pixel_metrics(masks, bad)
    with pytest.raises(ValueError, match="max_fpr"):
        pixel_metrics(masks, np.zeros(masks.shape), max_fpr=0.0)


def make_set(rng, n=8, h=16, w=16):
    masks = blob_masks(rng, n, h, w)
    return ImageSet(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
                    masks.reshape(n, -1).any(1).astype(np.int8), masks,
                    [f"cat/test/{i:03d}" for i in range(n)],
                    ["blob" if m.any() else "good" for m in masks], "cat")


def test_evaluate_returns_seven_floats_in_unit_interval():
    rng = np.random.default_rng(5)
    test = make_set(rng)
    maps = tied_maps(rng, test.masks).astype(np.float32)
    result = evaluate(test, maps.reshape(len(test), -1).max(1), maps)
    assert set(result) == set(KEYS) == set(METRIC_LABELS)
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in result.values())
    assert result["p_auroc"] == pytest.approx(roc_auc_score(test.masks.ravel(), maps.ravel()), abs=1e-10)


def test_evaluate_errors():
    rng = np.random.default_rng(6)
    test = make_set(rng)
    n, (h, w) = len(test), test.image_size
    scores, maps = rng.random(n), rng.random((n, h, w))
    with pytest.raises(ValueError, match="image_scores must have shape"):
        evaluate(test, scores[:-1], maps)
    with pytest.raises(ValueError, match="image_scores must have shape"):
        evaluate(test, scores[:, None], maps)
    with pytest.raises(ValueError, match="pixel_maps must have shape"):
        evaluate(test, scores, maps[:, :-1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate(test, np.where(np.arange(n) == 2, np.nan, scores), maps)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(test, scores, np.where(test.masks, np.inf, maps))
    anomalous = test.subset(test.labels == 1)
    with pytest.raises(ValueError, match="only one class"):
        evaluate(anomalous, scores[: len(anomalous)], maps[: len(anomalous)])
    # labelled anomalous but the masks are empty
    no_pixels = ImageSet(test.images, test.labels, np.zeros_like(test.masks), test.ids, test.defect_types)
    with pytest.raises(ValueError, match="no anomalous pixels"):
        evaluate(no_pixels, scores, maps)


def test_inputs_are_not_modified():
    # the implementation sorts copies of the scores in place; the caller's arrays must survive
    rng = np.random.default_rng(9)
    masks = blob_masks(rng, 4, 12, 12)
    maps = tied_maps(rng, masks).astype(np.float32)
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.3, 0.9, 0.1, 0.2])
    maps_before, scores_before = maps.copy(), scores.copy()
    pixel_metrics(masks, maps)
    image_metrics(labels, scores)
    np.testing.assert_array_equal(maps, maps_before)
    np.testing.assert_array_equal(scores, scores_before)


def test_pixel_metrics_rejects_masks_without_normal_pixels():
    masks = np.ones((2, 3, 3), bool)
    with pytest.raises(ValueError, match="no normal|every pixel"):
        pixel_metrics(masks, np.zeros(masks.shape))

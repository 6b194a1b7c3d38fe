"""Measurements behind the paper's two learning biases (notebook 02).

1. *Statistical dominance*: normal images are the majority, so a model trained on contaminated data fits
   them first. :func:`loss_trajectories` turns a reconstruction model's recorded per-image losses
   (``loss_history_``, (n_records, N)) into a tidy table, and :func:`loss_separation` gives, per recorded
   iteration, the AUROC of the loss at telling contaminated from normal images and the loss gap.
2. *Feature-space divergence*: normal images look alike, anomalies are diverse.
   :func:`patch_set_distances` measures, for every pair of images, how far the least-matched part of one
   is from anything in the other; :func:`pair_distances` splits those into normal–normal,
   anomaly–anomaly and normal–anomaly pairs; :func:`nearest_image_distances` gives each image's distance
   to its nearest neighbour; :func:`disagreement` reads the K sub-models' spread from a stage-1
   :class:`~lbnb.filtering.ScoreMatrix`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .filtering import ScoreMatrix, aggregate
from .metrics import image_metrics

KINDS = {0: "normal", 1: "contaminated"}


def loss_trajectories(loss_history: np.ndarray, record_iterations: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Tidy (iteration, image, kind, loss) rows from a loss history (n_records, N) and labels (N,)."""
    history = np.asarray(loss_history)
    n_records, n = history.shape
    if len(record_iterations) != n_records or len(labels) != n:
        raise ValueError(f"history {history.shape}, {len(record_iterations)} iterations and {len(labels)} labels disagree")
    return pd.DataFrame({"iteration": np.repeat(np.asarray(record_iterations), n),
                         "image": np.tile(np.arange(n), n_records),
                         "kind": np.tile([KINDS[int(v)] for v in labels], n_records),
                         "loss": history.ravel()})


def loss_separation(loss_history: np.ndarray, record_iterations: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Per recorded iteration: ``auroc`` of the per-image loss at finding contaminated images, the mean
    losses of both kinds and their ratio ``gap`` = contaminated / normal (rows: one per record)."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("loss_separation needs both normal and contaminated images")
    rows = []
    for it, losses in zip(record_iterations, np.asarray(loss_history)):
        normal, bad = losses[~labels].mean(), losses[labels].mean()
        rows.append({"iteration": int(it), "auroc": image_metrics(labels, losses)["i_auroc"],
                     "normal_loss": float(normal), "contaminated_loss": float(bad),
                     "gap": float(bad / normal) if normal > 0 else float("nan")})
    return pd.DataFrame(rows)


@torch.no_grad()
def patch_set_distances(features: torch.Tensor, stride: int = 2, images_per_chunk: int = 4) -> np.ndarray:
    """Directed patch-set distances D (N, N): D[i, j] = max over patches p of image i of the distance from
    p to its nearest patch of image j (the directed Hausdorff distance); the diagonal is 0.

    D[i, j] is small when every part of image i has a look-alike in image j. Features (N, C, h, w); every
    ``stride``-th grid position in each direction is used (stride 2: a quarter of the patches, 16× less
    work). Symmetrise with ``np.maximum(D, D.T)``.
    """
    f = torch.as_tensor(features).float()[:, :, ::stride, ::stride]
    n, c, h, w = f.shape
    p = h * w
    bank = f.permute(0, 2, 3, 1).reshape(n * p, c)                          # (N·p, C)
    bank_sq = bank.square().sum(1)
    out = np.zeros((n, n))
    for start in range(0, n, images_per_chunk):
        stop = min(n, start + images_per_chunk)
        q = bank[start * p:stop * p]                                       # (q·p, C)
        d2 = q.square().sum(1, keepdim=True) + bank_sq[None] - 2.0 * q @ bank.T    # (q·p, N·p)
        nearest_in_j = d2.view(stop - start, p, n, p).amin(3).clamp_min(0).sqrt()  # (q, p, N)
        out[start:stop] = nearest_in_j.amax(1).numpy()
    np.fill_diagonal(out, 0.0)
    return out


def nearest_image_distances(directed: np.ndarray) -> np.ndarray:
    """Nearest-neighbour distance per image (N,): min over other images j of D[i, j] (from
    :func:`patch_set_distances`) — how far the least-matched part of image i is from the single other image
    that resembles it best. Normal images have close neighbours; a defect has none, unless it recurs."""
    d = np.array(directed, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    return d.min(1)


def pair_distances(directed: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Symmetric patch-set distance max(D[i, j], D[j, i]) of every unordered pair, labelled
    normal–normal / anomaly–anomaly / normal–anomaly (column ``pair``)."""
    labels = np.asarray(labels).astype(int)
    sym = np.maximum(directed, directed.T)
    i, j = np.triu_indices(len(labels), k=1)
    names = np.array([["normal–normal", "normal–anomaly"], ["normal–anomaly", "anomaly–anomaly"]])
    return pd.DataFrame({"pair": names[labels[i], labels[j]], "distance": sym[i, j]})


def disagreement(matrix: ScoreMatrix, scope: str = "cross") -> pd.DataFrame:
    """Per image: variance and mean of the sub-models' scores (``scope`` as in
    :func:`~lbnb.filtering.aggregate`), with its kind — the cross-model disagreement the paper relies on."""
    return pd.DataFrame({"kind": [KINDS[int(v)] for v in matrix.labels],
                         "variance": aggregate(matrix, "variance", scope),
                         "mean": aggregate(matrix, "mean", scope)})

"""Figures shared by the notebooks: image grids with mask outlines, contamination composition."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .imageset import ImageSet

MASK_COLOR = "#ff2d55"


def image_grid(images: np.ndarray, masks: np.ndarray | None = None, titles: Sequence[str] | None = None,
               ncols: int = 6, size: float = 1.9, title: str | None = None):
    """Show images (N, H, W, 3) in a grid, outlining masks (N, H, W) when given. Returns the figure."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(images[i])
        if masks is not None and masks[i].any():
            ax.contour(masks[i].astype(float), levels=[0.5], colors=MASK_COLOR, linewidths=0.9)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def one_per_type(data: ImageSet, per_type: int = 1) -> np.ndarray:
    """Positions of the first ``per_type`` samples of every defect type ("good" first)."""
    kinds = sorted(set(data.defect_types.tolist()), key=lambda k: (k != "good", k))
    return np.concatenate([np.flatnonzero(data.defect_types == k)[:per_type] for k in kinds])


def show_types(data: ImageSet, per_type: int = 1, **kwargs):
    """A grid with ``per_type`` example(s) of each defect type of ``data``, masks outlined."""
    idx = one_per_type(data, per_type)
    return image_grid(data.images[idx], data.masks[idx], [data.defect_types[i] for i in idx], **kwargs)


def plot_composition(reports: pd.DataFrame, x: str = "nominal"):
    """Stacked bars of train (normal / injected) and test (normal / anomalous) sizes per contamination level.

    ``reports``: one row per level with columns ``n_train``, ``n_injected``, ``n_test``,
    ``n_test_anomalous`` and ``realised_rate`` (see :meth:`lbnb.contamination.Contaminated.report`).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    labels = [f"{v:g}" for v in reports[x]]
    pos = np.arange(len(reports))
    train_normal = reports["n_train"] - reports["n_injected"]
    axes[0].bar(pos, train_normal, color="#4c72b0", label="normal")
    axes[0].bar(pos, reports["n_injected"], bottom=train_normal, color=MASK_COLOR, label="injected anomalies")
    for p, rate, top in zip(pos, reports["realised_rate"], reports["n_train"]):
        axes[0].text(p, top, f"{rate:.1%}", ha="center", va="bottom", fontsize=8)
    test_normal = reports["n_test"] - reports["n_test_anomalous"]
    axes[1].bar(pos, test_normal, color="#4c72b0", label="normal")
    axes[1].bar(pos, reports["n_test_anomalous"], bottom=test_normal, color="#dd8452", label="anomalous")
    for ax, name in zip(axes, ("training set (labelled 'good')", "test set")):
        ax.set_xticks(pos, labels)
        ax.set_xlabel(f"noise ({x})")
        ax.set_ylabel("images")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_metric_vs_noise(results: pd.DataFrame, metrics=("i_auroc", "aupro"), hue: str = "detector"):
    """Metric vs contamination α, one line per ``hue``: mean over categories, band = ± std over seeds.

    ``results``: tidy rows with columns ``noise``, ``seed``, ``hue`` and the metric columns
    (see :func:`lbnb.experiments.sweep`).
    """
    import seaborn as sns

    from .metrics import METRIC_LABELS

    per_seed = results.groupby([hue, "noise", "seed"], as_index=False)[list(metrics)].mean()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(per_seed, x="noise", y=metric, hue=hue, marker="o", errorbar="sd", ax=ax)
        ax.set_xlabel("contamination α (SoftPatch noise)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

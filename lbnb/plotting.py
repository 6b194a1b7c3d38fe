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


def plot_distributions(frame: pd.DataFrame, value: str, group: str, title: str = "", ax=None, log: bool = False,
                       bins: int = 40):
    """Density histograms of ``value`` per ``group`` (each normalised on its own, so a small group stays
    visible). Returns the axes."""
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    sns.histplot(frame, x=value, hue=group, stat="density", common_norm=False, bins=bins, element="step",
                 log_scale=log, ax=ax)
    ax.set_title(title, fontsize=10)
    return ax


def plot_loss_trajectories(trajectories: pd.DataFrame, separation: pd.DataFrame, n_lines: int = 25,
                           random_state: int = 0):
    """Left: per-image training loss vs iteration (thin lines: a sample of images; thick: mean per kind).
    Right: AUROC of the loss at finding the contaminated images vs iteration. Inputs from
    :func:`lbnb.learning_bias.loss_trajectories` and :func:`~lbnb.learning_bias.loss_separation`."""
    colors = {"normal": "#4c72b0", "contaminated": MASK_COLOR}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    rng = np.random.default_rng(random_state)
    for kind, rows in trajectories.groupby("kind"):
        images = rows.image.unique()
        for image in rng.choice(images, min(n_lines, len(images)), replace=False):
            line = rows[rows.image == image]
            axes[0].plot(line.iteration, line.loss, color=colors.get(kind), alpha=0.15, lw=0.7)
        mean = rows.groupby("iteration").loss.mean()
        axes[0].plot(mean.index, mean.values, color=colors.get(kind), lw=2.5, label=f"{kind} (mean)")
    axes[0].set(xlabel="training iteration", ylabel="per-image loss", yscale="log")
    axes[0].legend(fontsize=8)
    axes[1].plot(separation.iteration, separation.auroc, marker="o", ms=3)
    axes[1].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[1].set(xlabel="training iteration", ylabel="AUROC (loss flags contaminated)", ylim=(0.4, 1.02))
    fig.tight_layout()
    return fig


def overlay(image: np.ndarray, amap: np.ndarray, vmax: float, ax) -> None:
    """An image with its anomaly map (H, W) blended on top (colour scale 0..vmax)."""
    ax.imshow(image)
    ax.imshow(amap, cmap="inferno", alpha=0.55, vmin=0, vmax=vmax)
    ax.axis("off")


def suspects_gallery(data: ImageSet, index: Sequence[int], maps: np.ndarray, scores: np.ndarray,
                     ncols: int = 6, size: float = 1.9):
    """The most suspicious training images: top row of each pair the image (true defects outlined),
    bottom row its out-of-fold anomaly map; titles give rank, stage-1 score and the ground truth."""
    index = list(index)
    ncols = max(1, min(ncols, len(index)))
    nrows = 2 * int(np.ceil(len(index) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    vmax = float(np.quantile(maps, 0.999))
    for r, i in enumerate(index):
        top, bottom = axes[2 * (r // ncols), r % ncols], axes[2 * (r // ncols) + 1, r % ncols]
        top.imshow(data.images[i])
        if data.masks[i].any():
            top.contour(data.masks[i].astype(float), levels=[0.5], colors=MASK_COLOR, linewidths=0.9)
        truth = data.defect_types[i] if data.labels[i] else "normal"
        top.set_title(f"#{r + 1} {scores[i]:.1f} · {truth}", fontsize=7, color=MASK_COLOR if data.labels[i] else "k")
        overlay(data.images[i], maps[r], vmax, bottom)
    fig.tight_layout()
    return fig


def compare_maps(test: ImageSet, index: Sequence[int], maps: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                 size: float = 1.9):
    """One row per test image: the image (mask outlined), then each method's anomaly map, titled with the
    image score's rank among the test set's normal images (e.g. "above 40% of normals")."""
    names = list(maps)
    index = list(index)
    fig, axes = plt.subplots(len(index), 1 + len(names), figsize=(size * (1 + len(names)), size * len(index)),
                             squeeze=False)
    normal = test.labels == 0
    for row, i in zip(axes, index):
        row[0].imshow(test.images[i])
        row[0].contour(test.masks[i].astype(float), levels=[0.5], colors=MASK_COLOR, linewidths=0.9)
        row[0].set_title(test.defect_types[i], fontsize=8)
        row[0].axis("off")
        for ax, name in zip(row[1:], names):
            above = float((scores[name][normal] < scores[name][i]).mean())
            overlay(test.images[i], maps[name][i], float(np.quantile(maps[name], 0.999)), ax)
            ax.set_title(f"{name}\nabove {above:.0%} of normals", fontsize=7)
    fig.tight_layout()
    return fig


def plot_rounds(rows: list[dict], title: str = "", ax=None):
    """Purification rounds (rows of :func:`lbnb.filtering.round_report`): bars of contaminated and normal
    images removed per round; the label over each bar pair gives the contaminated images still left."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    rounds = np.array([r["round"] for r in rows])
    bad = np.array([r["contaminated_removed"] for r in rows])
    good = np.array([r["normal_removed"] for r in rows])
    ax.bar(rounds - 0.2, bad, 0.4, color=MASK_COLOR, label="contaminated removed")
    ax.bar(rounds + 0.2, good, 0.4, color="#4c72b0", label="normal removed")
    for r, left, top in zip(rounds, (r["contaminated_left"] for r in rows), np.maximum(bad, good)):
        ax.annotate(f"{left} left", (r, top), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.set_ylabel("images")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    ax.figure.tight_layout()
    return ax

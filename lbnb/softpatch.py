"""SoftPatch (Jiang et al., "SoftPatch: Unsupervised Anomaly Detection with Noisy Data", NeurIPS 2022).

PatchCore with a patch-level noise discriminator in front of the memory bank. Training features
(N, C, h, w) are looked at *position by position*: the N training images' patches at one grid position
p ∈ {1..h·w} should look alike, so a patch that is an outlier among them is likely a defect in a noisy
(contaminated) training image. Per position, each patch x_i^p gets an outlier score ω_i^p from

- ``"lof"``: local outlier factor with k = ``n_neighbors_lof`` (Breunig et al. 2000, as scikit-learn);
- ``"knn"``: mean distance to its k = ``n_neighbors_lof`` nearest patches of *other* images;
- ``"gaussian"``: Mahalanobis distance to the position's mean under a Ledoit–Wolf shrunk covariance.

Scores are normalised by their per-position median, so inliers get ω ≈ 1. Then

1. denoise: the ⌊``denoise_ratio``·N⌋ most outlying patches at every position are dropped
   (``denoise_scope="global"`` instead drops the same total number, the highest ω over all positions,
   as the official code thresholds one global quantile);
2. a greedy coreset of ⌊``coreset_ratio``·|kept|⌋ patches of the rest becomes the memory bank;
3. with ``soft_weight``, a test patch scores s = ‖m^test − m*‖ · ω(m*), m* its nearest bank patch.

Everything is batched in torch over chunks of positions: a chunk holds (P_chunk, N, N) distance blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .coreset import greedy_coreset
from .detector_base import one_cpu_thread
from .patchcore import PatchCore, coreset_size, patches
from .validation import check_ratio

DISCRIMINATORS = ("lof", "knn", "gaussian")
_BLOCK_BYTES = 64 * 2**20


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (P, N, N) within each of P sets of N points x (P, N, C); diagonal = +inf."""
    x = x - x.mean(1, keepdim=True)                                        # centring: less cancellation
    gram = torch.bmm(x, x.transpose(1, 2))                                 # (P, N, N)
    sq = gram.diagonal(dim1=1, dim2=2)                                     # ‖x_i‖², (P, N)
    d = (sq[:, :, None] + sq[:, None, :] - 2.0 * gram).clamp_(min=0.0).sqrt_()
    d.diagonal(dim1=1, dim2=2).fill_(float("inf"))                         # a patch is not its own neighbour
    return d


def knn_scores(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Mean distance to the k nearest others, (P, N), from distances (P, N, N) with an infinite diagonal."""
    return torch.topk(dist, k, dim=2, largest=False).values.mean(2)


def lof_scores(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Local outlier factor (P, N) from distances (P, N, N) with an infinite diagonal.

    k-distance(b) = distance of b to its k-th nearest neighbour; reach(a, b) = max(k-distance(b), d(a, b));
    lrd(a) = 1 / mean_{b∈N_k(a)} reach(a, b); LOF(a) = mean_{b∈N_k(a)} lrd(b) / lrd(a).
    """
    n_pos, n = dist.shape[:2]
    knn_d, knn_i = torch.topk(dist, k, dim=2, largest=False)               # (P, N, k) ascending
    k_distance = knn_d[:, :, -1]                                           # (P, N)
    flat_i = knn_i.reshape(n_pos, n * k)
    reach = torch.maximum(knn_d, torch.gather(k_distance, 1, flat_i).view(n_pos, n, k))
    lrd = 1.0 / (reach.mean(2) + 1e-10)                                    # (P, N)
    return torch.gather(lrd, 1, flat_i).view(n_pos, n, k).mean(2) / lrd


def gaussian_scores(x: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distances (P, N) of each point to its set's mean, shrunk covariance, x (P, N, C).

    With centred X (N, C) and S = XᵀX / N, the Ledoit–Wolf estimate Σ = (1 − λ)S + λμI (μ = tr S / C) is
    computed from the Gram matrix G = XXᵀ alone, and by Woodbury x_iᵀ Σ⁻¹ x_i = N/(1−λ) · [G (G + cI)⁻¹]_ii
    with c = Nλμ / (1 − λ) — an (N, N) solve, independent of C.
    """
    n, c_dim = x.shape[1], x.shape[2]
    x = (x - x.mean(1, keepdim=True)).double()
    gram = torch.bmm(x, x.transpose(1, 2))                                 # G, (P, N, N)
    g_diag = gram.diagonal(dim1=1, dim2=2)                                 # ‖x_i‖², (P, N)
    mu = g_diag.sum(1) / (n * c_dim)                                       # tr S / C
    s_fro2 = (gram ** 2).sum((1, 2)) / n ** 2                              # ‖S‖²_F (= ‖G‖²_F / N²)
    delta2 = (s_fro2 - c_dim * mu ** 2).clamp(min=0.0) / c_dim             # ‖S − μI‖²_F / C
    beta2 = ((g_diag ** 2).sum(1) - n * s_fro2).clamp(min=0.0) / (n ** 2 * c_dim)
    lam = torch.where(delta2 > 0, torch.minimum(beta2, delta2) / delta2.clamp(min=1e-300), torch.ones_like(mu))
    a = (1.0 - lam).clamp(min=1e-12)                                       # weight of S
    b = (lam * mu).clamp(min=1e-300)                                       # weight of I
    c = (n * b / a)[:, None, None]
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    hat = torch.linalg.solve(gram + c * eye, gram)                         # (G + cI)⁻¹ G = G (G + cI)⁻¹ᵀ
    d2 = (n / a)[:, None] * hat.diagonal(dim1=1, dim2=2)
    return d2.clamp(min=0.0).sqrt().float()


def outlier_scores(features: torch.Tensor, discriminator: str = "lof", n_neighbors: int = 6,
                   progress: bool = False) -> torch.Tensor:
    """Per-position outlier scores ω (N, h, w) of training features (N, C, h, w), normalised so that the
    median at every position is 1 (inliers ≈ 1, outliers ≫ 1). k = min(``n_neighbors``, N − 1); with a
    single image every ω is 1."""
    if discriminator not in DISCRIMINATORS:
        raise ValueError(f"discriminator must be one of {DISCRIMINATORS}, got {discriminator!r}")
    n, c, h, w = features.shape
    if n < 2:                                                              # nothing to compare against
        return torch.ones(n, h, w, device=features.device)
    k = max(1, min(int(n_neighbors), n - 1))
    by_position = features.permute(2, 3, 0, 1).reshape(h * w, n, c)        # (P, N, C)
    per_chunk = max(1, _BLOCK_BYTES // (8 * n * max(n, c)))               # float64 in "gaussian"
    scores = []
    starts = range(0, h * w, per_chunk)
    # batched (N, N) blocks are small: one CPU thread is ~100× faster than two on a busy 2-core machine
    with one_cpu_thread(features.device):
        for s in tqdm(starts, desc=f"outlier scores ({discriminator})", unit="chunk", leave=False,
                      disable=not progress or len(starts) < 2):
            x = by_position[s:s + per_chunk].float()
            if discriminator == "gaussian":
                scores.append(gaussian_scores(x))
            elif discriminator == "lof":
                scores.append(lof_scores(pairwise_distances(x), k))
            else:
                scores.append(knn_scores(pairwise_distances(x), k))
    omega = torch.cat(scores)                                              # (P, N)
    median = omega.median(dim=1, keepdim=True).values
    omega = torch.where(median > 0, omega / median.clamp(min=1e-12), torch.ones_like(omega))
    return omega.T.reshape(n, h, w).contiguous()


def denoise_mask(omega: torch.Tensor, denoise_ratio: float, scope: str = "position") -> torch.Tensor:
    """Keep-mask (N, h, w) bool: drop the ⌊ratio·N⌋ highest ω at each position (``"position"``), or the
    h·w·⌊ratio·N⌋ highest overall (``"global"``). Ties go to the lower image index (stable order)."""
    n, h, w = omega.shape
    n_drop = int(denoise_ratio * n + 1e-9)
    keep = torch.ones(n * h * w, dtype=torch.bool, device=omega.device)
    if n_drop == 0:
        return keep.view(n, h, w)
    if scope == "position":
        order = torch.argsort(omega.reshape(n, h * w), dim=0, descending=True, stable=True)  # (N, P)
        keep = keep.view(n, h * w)
        keep.scatter_(0, order[:n_drop], False)
    elif scope == "global":
        order = torch.argsort(omega.reshape(-1), descending=True, stable=True)
        keep[order[:n_drop * h * w]] = False
    else:
        raise ValueError(f"denoise_scope must be 'position' or 'global', got {scope!r}")
    return keep.view(n, h, w)


@dataclass
class SoftPatch(PatchCore):
    """SoftPatch: PatchCore on a denoised, outlier-weighted memory bank (see module docstring).

    Extra hyperparameters: ``denoise_ratio`` ∈ [0, 1), ``discriminator`` ∈ {"lof", "knn", "gaussian"},
    ``n_neighbors_lof`` (k of "lof" and "knn"), ``soft_weight``, ``denoise_scope`` ∈ {"position", "global"}.

    Learned state (besides PatchCore's): ``outlier_scores_`` (N, h, w) float32 ω of every training patch
    (CPU), ``kept_mask_`` (N, h, w) bool, ``bank_weights_`` (M,) ω of each bank patch;
    ``coreset_index_`` indexes the training patches (N·h·w).
    """

    denoise_ratio: float = 0.1
    discriminator: str = "lof"
    n_neighbors_lof: int = 6
    soft_weight: bool = True
    denoise_scope: str = "position"

    def _check_params(self) -> None:
        super()._check_params()
        check_ratio(self.denoise_ratio, "denoise_ratio", low_open=False)
        if self.discriminator not in DISCRIMINATORS:
            raise ValueError(f"discriminator must be one of {DISCRIMINATORS}, got {self.discriminator!r}")
        if int(self.n_neighbors_lof) < 1:
            raise ValueError(f"n_neighbors_lof must be ≥ 1, got {self.n_neighbors_lof}")
        if self.denoise_scope not in ("position", "global"):
            raise ValueError(f"denoise_scope must be 'position' or 'global', got {self.denoise_scope!r}")

    def _fit_features(self, features: torch.Tensor) -> None:
        omega = outlier_scores(features, self.discriminator, self.n_neighbors_lof, self.progress)  # (N, h, w)
        keep = denoise_mask(omega, self.denoise_ratio, self.denoise_scope)
        kept = torch.nonzero(keep.reshape(-1)).squeeze(1)                  # indices into 𝓜 (N·h·w)
        bank = patches(features)[kept]                                     # denoised 𝓜, (|kept|, C)
        index = greedy_coreset(bank, coreset_size(len(bank), self.coreset_ratio), self.projection_dim,
                               self.random_state, progress=self.progress)
        self.outlier_scores_ = omega.float().cpu()
        self.kept_mask_ = keep.cpu()
        self.coreset_index_ = kept[index].cpu()
        self.memory_bank_ = bank[index].contiguous()                       # 𝓜_C, (M, C)
        self.bank_weights_ = omega.reshape(-1)[kept[index]].float()        # ω(m) per bank patch, (M,)

    def _bank_weights(self) -> torch.Tensor | None:
        return self.bank_weights_ if self.soft_weight else None

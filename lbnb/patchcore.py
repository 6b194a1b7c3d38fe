"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

fit: every training image's locally aware patch features (from the extractor, (N, C, h, w)) are pooled
into 𝓜 (N·h·w, C); a greedy k-center coreset 𝓜_C ⊂ 𝓜 of size ⌊coreset_ratio·|𝓜|⌋ becomes the memory
bank ``memory_bank_`` (M, C).

score: each test patch m^test gets s(m^test) = mean of its ``n_neighbors`` nearest distances to 𝓜_C
(k = 1 is PatchCore's min_{m∈𝓜_C} ‖m^test − m‖). The image score s* is the largest patch score; with
``reweight=True`` it is scaled as in eq. 7 of the paper,

    s = (1 − exp‖m^test,* − m*‖ / Σ_{m∈𝒩_b(m*)} exp‖m^test,* − m‖) · s*,

where m^test,* is the highest-scoring test patch, m* its nearest bank patch and 𝒩_b(m*) the b =
``reweight_neighbors`` nearest bank patches of m* (m* itself included, so the weight lies in [0, 1)). It
is evaluated as 1 − softmax, i.e. with a log-sum-exp, so large distances cannot overflow. Pixel maps are
the patch-score grids upsampled bilinearly and smoothed with a Gaussian of ``sigma`` pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .coreset import greedy_coreset
from .detector_base import (Scores, anomaly_maps, as_imageset, check_fitted, check_training_set, match_size,
                            resolve_device)
from .features import FeatureExtractor
from .neighbors import nearest
from .validation import check_ratio


def patches(features: torch.Tensor) -> torch.Tensor:
    """Feature maps (N, C, h, w) → patch features (N·h·w, C), image-major then row-major."""
    n, c, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(n * h * w, c)


def coreset_size(n_patches: int, coreset_ratio: float) -> int:
    """|𝓜_C| = ⌊ratio·|𝓜|⌋, at least 1 (ratio 1 keeps everything)."""
    return max(1, int(n_patches * coreset_ratio + 1e-9))


def reweight_scores(top_queries: torch.Tensor, top_index: torch.Tensor, bank: torch.Tensor,
                    n_support: int) -> torch.Tensor:
    """PatchCore eq. 7 weights (N,) in [0, 1) for each image's top test patch.

    Args:
        top_queries: m^test,* per image (N, C); top_index: index of m* (its nearest bank patch) in
        ``bank`` (N,); bank: 𝓜_C (M, C); n_support: b = |𝒩_b(m*)|, m* itself counted.
    """
    b = min(int(n_support), bank.shape[0])
    _, support = nearest(bank[top_index], bank, k=b)                       # 𝒩_b(m*), (N, b)
    d_star = (bank[top_index] - top_queries).norm(dim=1)                   # ‖m^test,* − m*‖, (N,)
    d_support = (bank[support] - top_queries[:, None, :]).norm(dim=2)      # ‖m^test,* − m‖, (N, b)
    # m* is its own nearest neighbour; count it exactly once even when duplicates tie with it
    d_support[support == top_index[:, None]] = -float("inf")
    d_all = torch.cat([d_star[:, None], d_support], 1)
    log_softmax = d_star - torch.logsumexp(d_all, dim=1)                   # log(exp d* / Σ exp d)
    return 1.0 - log_softmax.exp()


@dataclass
class PatchCore:
    """PatchCore memory-bank detector.

    Hyperparameters: ``coreset_ratio`` ∈ (0, 1] (|𝓜_C| / |𝓜|); ``n_neighbors`` k for the patch score
    (mean of the k nearest bank distances); ``reweight`` (eq. 7 image score) with
    ``reweight_neighbors`` b; ``sigma`` of the map smoothing in pixels; ``projection_dim`` d of the
    coreset's random projection (None: raw features).

    Learned state: ``memory_bank_`` (M, C) float32 on the device, ``image_size_`` (H, W), ``grid_`` (h, w),
    ``coreset_index_`` (M,) indices into the training patches (N·h·w).
    """

    coreset_ratio: float = 0.1
    n_neighbors: int = 1
    reweight: bool = False
    reweight_neighbors: int = 9
    sigma: float = 4.0
    projection_dim: int | None = 64
    random_state: int = 0
    device: str = "auto"
    extractor: FeatureExtractor = field(default_factory=FeatureExtractor)
    progress: bool = True

    def __post_init__(self):
        self.memory_bank_ = None

    # -- parameters ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        check_ratio(self.coreset_ratio, "coreset_ratio")
        if int(self.n_neighbors) < 1:
            raise ValueError(f"n_neighbors must be ≥ 1, got {self.n_neighbors}")
        if int(self.reweight_neighbors) < 1:
            raise ValueError(f"reweight_neighbors must be ≥ 1, got {self.reweight_neighbors}")
        if self.sigma < 0:
            raise ValueError(f"sigma must be ≥ 0, got {self.sigma}")

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, images) -> "PatchCore":
        """Build the memory bank from training images (ImageSet or uint8 (N, H, W, 3)); returns self."""
        self._check_params()
        data = as_imageset(images)
        check_training_set(data)
        features = self.extractor.extract(data)                             # (N, C, h, w), CPU
        self.image_size_ = tuple(data.image_size)
        self.grid_ = tuple(features.shape[-2:])
        self._fit_features(features.to(resolve_device(self.device)))
        return self

    def _fit_features(self, features: torch.Tensor) -> None:
        """Training features (N, C, h, w) on the device → ``memory_bank_``, ``coreset_index_``."""
        bank = patches(features)                                            # 𝓜, (N·h·w, C)
        index = greedy_coreset(bank, coreset_size(len(bank), self.coreset_ratio), self.projection_dim,
                               self.random_state, progress=self.progress)
        self.coreset_index_ = index.cpu()
        self.memory_bank_ = bank[index].contiguous()                        # 𝓜_C, (M, C)

    def _bank_weights(self) -> torch.Tensor | None:
        """Per-bank-patch multipliers (M,) for the patch scores; None in plain PatchCore."""
        return None

    # -- score --------------------------------------------------------------------------------
    def score(self, images) -> Scores:
        """Image scores (N,) and pixel maps (N, H, W) at the given images' size, float32, higher = more
        anomalous. Images of another size than the training images are resized (with a warning)."""
        check_fitted(self, "memory_bank_")
        data = as_imageset(images)
        size = data.image_size
        data = match_size(data, self.image_size_, type(self).__name__)
        patch_scores, image_scores = self.score_features(self.extractor.extract(data))  # (N, h, w), (N,)
        maps = anomaly_maps(patch_scores.cpu(), size, self.sigma)
        return Scores(image_scores.cpu().numpy().astype(np.float32), maps)

    @torch.no_grad()
    def score_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, C, h, w) → patch scores (N, h, w) and image scores (N,), on the bank's device."""
        check_fitted(self, "memory_bank_")
        features = features.to(self.memory_bank_.device)
        n, c, h, w = features.shape
        if c != self.memory_bank_.shape[1]:
            raise ValueError(f"features have {c} channels but the memory bank has {self.memory_bank_.shape[1]}")
        queries = patches(features.float())                                 # (N·h·w, C)
        k = min(int(self.n_neighbors), len(self.memory_bank_))
        dist, index = nearest(queries, self.memory_bank_, k=k, progress=self.progress)  # (N·h·w, k)
        weights = self._bank_weights()
        if weights is not None:                                             # SoftPatch: × w(m)
            dist = dist * weights[index]
        patch_scores = dist.mean(1).view(n, h * w)                          # s(m^test), (N, h·w)
        image_scores, top = patch_scores.max(1)                             # s*, (N,)
        if self.reweight:
            rows = torch.arange(n, device=queries.device) * (h * w) + top
            image_scores = image_scores * reweight_scores(queries[rows], index[rows, 0], self.memory_bank_,
                                                          self.reweight_neighbors)
        return patch_scores.view(n, h, w), image_scores

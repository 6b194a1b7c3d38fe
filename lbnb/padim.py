"""PaDiM: one multivariate Gaussian per patch position (Defard et al., 2020).

For features f (N, C, h, w) of N normal images:

1. keep a seeded random subset of d = ``n_features`` channels (PaDiM's random dimensionality
   reduction) → x_n,ij ∈ R^d;
2. per position (i, j): mean μ_ij = mean_n x_n,ij and covariance
   Σ_ij = 1/(N−1) Σ_n (x_n,ij − μ_ij)(x_n,ij − μ_ij)^T;
3. regularise. **Choice made here**: the ridge is relative to the position's average variance,
   Σ̃_ij = Σ_ij + ε · (tr Σ_ij / d) · I with ε = ``shrinkage``, so the regulariser is scale-free
   (multiplying all features by a constant leaves every distance unchanged, whatever backbone
   produced them). ``relative_shrinkage=False`` gives the original PaDiM rule Σ + ε I;
4. Cholesky factor L_ij with L L^T = Σ̃_ij and its inverse W_ij = L_ij^{-1} (W^T W = Σ̃^{-1}; the
   precision itself is never formed, and scoring is a batched matrix product);
5. test: Mahalanobis distance M_ij = sqrt((x − μ)^T Σ̃^{-1} (x − μ)) = ‖W_ij (x − μ_ij)‖ per position
   → (N, h, w), upsampled and Gaussian-smoothed (σ = ``sigma``) → pixel maps; image score = max.

Everything is batched over positions and computed in chunks of positions whose size is chosen so that
the temporary tensors stay under ``memory_mb``; covariances are accumulated in float64.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .detector_base import (Scores, anomaly_maps, as_imageset, check_fitted, check_training_set, match_size,
                            one_cpu_thread, resolve_device)
from .features import FeatureExtractor


def _chunk_size(n: int, d: int, n_positions: int, memory_mb: float) -> int:
    """Positions per chunk so that (n·d + 3·d·d) float64 values per position fit in ``memory_mb``."""
    per_position = 8 * (n * d + 3 * d * d)
    return int(max(1, min(n_positions, memory_mb * 2 ** 20 // per_position)))




def fit_gaussians(x: torch.Tensor, shrinkage: float = 0.01, relative: bool = True,
                  memory_mb: float = 256.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position Gaussians from x (N, P, d) (N samples, P positions, d features).

    Returns μ (P, d) float32 and whitening matrices W (P, d, d) float32, W = L^{-1} for the Cholesky
    factor L (L L^T = Σ̃) of Σ̃ = Σ + ε·(tr Σ / d)·I (``relative``) or Σ + ε·I, so that
    W^T W = Σ̃^{-1}. Covariances and factorisations are computed in float64. Needs N ≥ 2 or ε > 0
    for Σ̃ to be positive definite (else ``numpy.linalg.LinAlgError``).
    """
    if x.ndim != 3 or len(x) < 1:
        raise ValueError(f"x must be (N, P, d) with N >= 1, got {tuple(x.shape)}")
    n, p, d = x.shape
    mean = x.double().mean(dim=0)  # (P, d)
    whiten = torch.empty((p, d, d), dtype=torch.float32, device=x.device)
    eye = torch.eye(d, dtype=torch.float64, device=x.device)
    step = _chunk_size(n, d, p, memory_mb)
    for start in range(0, p, step):
        xc = x[:, start:start + step].double() - mean[start:start + step]  # (N, p', d)
        cov = torch.einsum("npi,npj->pij", xc, xc) / max(n - 1, 1)  # Σ (p', d, d)
        scale = cov.diagonal(dim1=-2, dim2=-1).mean(dim=-1) if relative else torch.ones_like(cov[:, 0, 0])
        ridge = shrinkage * scale.clamp_min(1e-12)[:, None, None] * eye
        with one_cpu_thread(cov.device):
            factor, info = torch.linalg.cholesky_ex(cov + ridge)  # L (p', d, d)
            if bool((info > 0).any()):
                raise np.linalg.LinAlgError("a covariance is not positive definite: raise `shrinkage` "
                                            "(needed when there are fewer images than features)")
            inverse = torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False)
        whiten[start:start + step] = inverse.float()
    return mean.float(), whiten


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, whiten: torch.Tensor, memory_mb: float = 256.0) -> torch.Tensor:
    """Mahalanobis distances (N, P) float32 of x (N, P, d) to per-position Gaussians μ (P, d),
    W (P, d, d) from :func:`fit_gaussians`: M_np = ‖W_p (x_np − μ_p)‖₂."""
    n, p, d = x.shape
    if mean.shape != (p, d) or whiten.shape != (p, d, d):
        raise ValueError(f"x {tuple(x.shape)} does not match mean {tuple(mean.shape)} / W {tuple(whiten.shape)}")
    out = torch.empty((n, p), dtype=torch.float32)
    step = _chunk_size(n, d, p, memory_mb)
    for start in range(0, p, step):
        sl = slice(start, start + step)
        diff = (x[:, sl].to(whiten) - mean[sl]).permute(1, 2, 0)  # (p', d, N)
        z = torch.bmm(whiten[sl], diff)  # (p', d, N)
        out[:, sl] = z.square().sum(dim=1).sqrt().T.cpu()
    return out


@dataclass
class PaDiM:
    """Per-position Gaussian detector on a random channel subset (see module docstring).

    Hyperparameters: ``n_features`` d (capped at the extractor's C), ``shrinkage`` ε,
    ``relative_shrinkage``, ``sigma`` of the map smoothing (pixels), ``memory_mb`` chunk budget.

    Learned state: ``channels_`` (d,) sorted channel indices, ``mean_`` μ (P, d) and ``whiten_``
    W = L^{-1} (P, d, d), float32, with P = h·w, ``grid_`` (h, w), ``image_size_`` (H, W), ``fit_seconds_``.
    """

    n_features: int = 100
    shrinkage: float = 0.01
    relative_shrinkage: bool = True
    sigma: float = 4.0
    memory_mb: float = 256.0
    random_state: int = 0
    device: str = "auto"
    extractor: FeatureExtractor = field(default_factory=FeatureExtractor)

    def __post_init__(self):
        self._check_params()
        self.mean_ = None

    def _check_params(self) -> None:
        if int(self.n_features) != self.n_features or self.n_features < 1:
            raise ValueError(f"n_features must be an integer >= 1, got {self.n_features}")
        if self.shrinkage < 0 or self.sigma < 0 or not self.memory_mb > 0:
            raise ValueError("shrinkage and sigma must be >= 0 and memory_mb > 0")

    def _positions(self, feats: torch.Tensor) -> torch.Tensor:
        """Features (N, C, h, w) → chosen channels per position (N, P, d)."""
        x = feats[:, torch.as_tensor(self.channels_)]
        return x.flatten(2).transpose(1, 2)

    def fit(self, images) -> "PaDiM":
        """Estimate μ_ij, Σ_ij from ``images`` (ImageSet or uint8 (N, H, W, 3), assumed normal) → self."""
        t0 = time.perf_counter()
        self._check_params()
        data = as_imageset(images)
        check_training_set(data, minimum=2)  # a covariance needs two samples
        feats = self.extractor.extract(data)  # (N, C, h, w)
        c = feats.shape[1]
        d = min(int(self.n_features), c)
        rng = np.random.default_rng(self.random_state)
        self.channels_ = np.sort(rng.choice(c, size=d, replace=False))
        x = self._positions(feats).to(resolve_device(self.device))
        self.mean_, self.whiten_ = fit_gaussians(x, self.shrinkage, self.relative_shrinkage, self.memory_mb)
        self.grid_ = tuple(feats.shape[-2:])
        self.image_size_ = data.image_size
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def patch_scores(self, images) -> torch.Tensor:
        """Mahalanobis distance grids (N, h, w) float32 on the CPU."""
        check_fitted(self, "mean_")
        data = match_size(as_imageset(images), self.image_size_, type(self).__name__)
        feats = self.extractor.extract(data)
        x = self._positions(feats).to(self.mean_.device)
        return mahalanobis(x, self.mean_, self.whiten_, self.memory_mb).view(len(data), *self.grid_)

    def score(self, images) -> Scores:
        """Image scores (N,) = max of each pixel map, pixel maps (N, H, W); higher = more anomalous."""
        check_fitted(self, "mean_")
        data = match_size(as_imageset(images), self.image_size_, type(self).__name__)
        maps = anomaly_maps(self.patch_scores(data), data.image_size, self.sigma)
        return Scores(maps.reshape(len(maps), -1).max(axis=1).astype(np.float32), maps)

"""Small torch modules trained by lbnb (always through :func:`lbnb.training.train`).

:class:`ReconstructionNet` reconstructs frozen encoder features through a noisy, narrow bottleneck,
in the spirit of reverse distillation's one-class bottleneck (compress, optionally down-sample, decode
back to the encoder's channels) and Dinomaly's "noisy bottleneck" (dropout on the way in, so the
network cannot simply learn the identity and has to predict a position from what normal data look
like around it).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (batch-size independent, so train and eval behave alike)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ReconstructionNet(nn.Module):
    """Encoder features f (B, C, h, w) → reconstruction f̂ (B, C, h, w).

    Encoder side E (compression):  dropout(p) → 1×1 conv C→``hidden_dim`` → GELU →
    3×3 conv (stride 2 when ``downsample``) → ``bottleneck_dim`` channels z (B, d, h', w').
    Decoder side D:  up-sample z back to (h, w) (bilinear) → 3×3 conv d→``hidden_dim`` → norm →
    GELU → 3×3 conv → GELU → 1×1 conv →C.

    ``dropout`` zeroes input feature elements with probability p during training only (the noisy
    bottleneck); ``feature_noise`` adds Gaussian noise of that standard deviation to the inputs
    during training (0 disables).
    """

    def __init__(self, in_channels: int, hidden_dim: int = 128, bottleneck_dim: int = 16,
                 dropout: float = 0.2, downsample: bool = True, feature_noise: float = 0.0):
        super().__init__()
        if min(in_channels, hidden_dim, bottleneck_dim) < 1:
            raise ValueError("in_channels, hidden_dim and bottleneck_dim must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if feature_noise < 0:
            raise ValueError(f"feature_noise must be >= 0, got {feature_noise}")
        self.feature_noise = float(feature_noise)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, 1), nn.GELU(),
            nn.Conv2d(hidden_dim, bottleneck_dim, 3, stride=2 if downsample else 1, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(bottleneck_dim, hidden_dim, 3, padding=1), _norm(hidden_dim), nn.GELU(),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.GELU(),
            nn.Conv2d(hidden_dim, in_channels, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """f (B, C, h, w) → f̂ (B, C, h, w)."""
        x = f
        if self.training and self.feature_noise > 0:
            x = x + self.feature_noise * torch.randn_like(x)
        z = self.encoder(self.dropout(x))
        if z.shape[-2:] != f.shape[-2:]:
            z = F.interpolate(z, size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.decoder(z)


def cosine_distance_map(f: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
    """1 − cos(f_ij, f̂_ij) per position: (B, C, h, w) × 2 → (B, h, w), in [0, 2]."""
    return 1.0 - F.cosine_similarity(f, f_hat, dim=1, eps=1e-6)


def global_cosine_distance(f: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
    """1 − cos(vec(f), vec(f̂)) of each sample's whole flattened map: (B, C, h, w) × 2 → (B,)
    (reverse distillation++ / Dinomaly's global cosine term)."""
    return 1.0 - F.cosine_similarity(f.flatten(1), f_hat.flatten(1), dim=1, eps=1e-6)

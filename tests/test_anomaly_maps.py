"""anomaly_maps (separable matrix form) against the direct computation: upsample full-size, then blur."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lbnb.detector_base import anomaly_maps, gaussian_kernel1d, map_operator


def direct_maps(grids: torch.Tensor, size, sigma: float) -> np.ndarray:
    maps = F.interpolate(grids[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    if sigma > 0:
        k = gaussian_kernel1d(sigma)
        r = len(k) // 2
        maps = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        maps = F.conv2d(F.pad(maps, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return maps[:, 0].numpy()


@pytest.mark.parametrize("grid,size,sigma", [((20, 20), (160, 160), 4.0), ((7, 11), (56, 90), 2.5),
                                             ((14, 14), (224, 224), 0.0), ((5, 5), (40, 33), 1.0)])
def test_matches_upsample_then_blur(grid, size, sigma):
    grids = torch.rand((3,) + grid, generator=torch.Generator().manual_seed(0)) * 10
    fast = anomaly_maps(grids, size, sigma)
    assert fast.shape == (3,) + size and fast.dtype == np.float32
    np.testing.assert_allclose(fast, direct_maps(grids, size, sigma), rtol=1e-5, atol=1e-5)


def test_operator_rows_are_weights_summing_to_one():
    op = map_operator(20, 160, 4.0)
    assert op.shape == (160, 20) and (op >= 0).all()
    np.testing.assert_allclose(op.sum(1).numpy(), 1.0, atol=1e-5)          # a constant grid stays constant

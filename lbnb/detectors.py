"""Every detector behind one protocol (DESIGN §4): ``fit(images) -> self``, ``score(images) -> Scores``.

- :class:`PatchCore` — memory bank of locally aware patch features, greedy coreset, kNN distance.
- :class:`SoftPatch` — PatchCore with patch-level noise discrimination across training images
  (the strongest peer for noisy training data).
- :class:`PaDiM` — a Gaussian per patch position, Mahalanobis distance.
- :class:`FeatureReconstruction` — a small bottleneck/decoder trained from scratch to reconstruct
  frozen encoder features (Dinomaly / reverse-distillation spirit); records per-image losses.

All take an ``extractor`` (:class:`~lbnb.features.FeatureExtractor`) whose per-image feature cache
they share, so K sub-models, folds, contamination levels and seeds extract each image once.
"""
from .detector_base import NotFittedError, Scores
from .features import FeatureExtractor
from .padim import PaDiM
from .patchcore import PatchCore
from .reconstruction import FeatureReconstruction
from .softpatch import SoftPatch

__all__ = ["FeatureExtractor", "FeatureReconstruction", "NotFittedError", "PaDiM", "PatchCore", "Scores",
           "SoftPatch"]

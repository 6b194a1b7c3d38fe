"""lbnb — Leveraging Learning Bias for Noisy (fully unsupervised) image Anomaly detection.

Modules: :mod:`lbnb.data` (image sets, folder layout, embedded benchmark),
:mod:`lbnb.contamination` (FUIAD protocols), :mod:`lbnb.metrics` (exact metrics),
:mod:`lbnb.features` (frozen backbones + feature cache), :mod:`lbnb.detectors` (PatchCore, SoftPatch,
PaDiM, FeatureReconstruction), :mod:`lbnb.training` (the one training loop),
:mod:`lbnb.experiments` (trials and sweeps), :mod:`lbnb.series` (the notebook series).
"""
__version__ = "0.1.0"

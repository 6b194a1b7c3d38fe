"""lbnb — Leveraging Learning Bias for Noisy (fully unsupervised) image Anomaly detection.

Modules: :mod:`lbnb.data` (image sets, folder layout, embedded benchmark),
:mod:`lbnb.contamination` (FUIAD protocols), :mod:`lbnb.metrics` (exact metrics).
"""
__version__ = "0.1.0"

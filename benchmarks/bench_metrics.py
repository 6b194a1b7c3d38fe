"""Time lbnb.metrics.pixel_metrics on 200 anomaly maps of 256x256 (13.1 M pixels).

Run from the repository root: ``python benchmarks/bench_metrics.py``.
Prints the best of 3 wall-clock times and the peak memory traced during one call.
"""
from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lbnb.metrics import pixel_metrics  # noqa: E402

N, H, W, SEED, REPEATS = 200, 256, 256, 0, 3


def make_data(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool blob masks (about half the images anomalous) and float32 maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    masks = np.zeros((N, H, W), bool)
    for i in range(N // 2):
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(0, H), rng.integers(0, W), rng.integers(4, 30)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    maps = rng.standard_normal((N, H, W), dtype=np.float32)
    maps += 2.0 * masks
    return masks, maps


def main() -> None:
    masks, maps = make_data()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = pixel_metrics(masks, maps)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    pixel_metrics(masks, maps)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"pixel metrics for {N} maps of {H}x{W}: {min(times):.2f} s "
          f"(best of {REPEATS}; inputs {(masks.nbytes + maps.nbytes) / 2**20:.0f} MiB)")
    print(f"peak extra memory during one call (tracemalloc): {peak / 2**20:.0f} MiB")
    print("  " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))


if __name__ == "__main__":
    main()

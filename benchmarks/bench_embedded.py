"""Time lbnb.embedded.load_embedded for every category at its defaults (160 px, 200 train, 60 good +
30 per defect type in test).

Run from the repository root: ``python benchmarks/bench_embedded.py``.
Prints the best of 2 wall-clock times per category, their total, and the in-memory size of one category.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lbnb.embedded import embedded_categories, load_embedded  # noqa: E402

REPEATS = 2


def nbytes(s) -> int:
    """Bytes held by an ImageSet's arrays."""
    return sum(a.nbytes for a in (s.images, s.labels, s.masks, s.ids, s.defect_types))


def main() -> None:
    load_embedded("brick", n_train=1, n_test_good=1, n_test_per_type=1)  # import scikit-image data once
    total, sizes = 0.0, {}
    for category in embedded_categories():
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            train, test = load_embedded(category)
            times.append(time.perf_counter() - start)
        best = min(times)
        total += best
        sizes[category] = nbytes(train) + nbytes(test)
        print(f"{category}: {best:.2f} s ({len(train)} train + {len(test)} test at {train.image_size[0]} px)",
              flush=True)
    print(f"total: {total:.2f} s for {len(sizes)} categories (best of {REPEATS} each)")
    name, size = next(iter(sizes.items()))
    print(f"memory: {size / 2 ** 20:.1f} MiB for one category ({name}: images, masks, labels, ids, types)")


if __name__ == "__main__":
    main()

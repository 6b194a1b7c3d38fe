"""Feature-extraction throughput and PatchCore fit/score time and peak memory for one category.

    python benchmarks/bench_patchcore.py [--category brick] [--image-size 160]

Cold = an empty feature cache (the backbone runs); warm = the same run again (features from the
cache). Targets (issue 3): fit + score of one category < 60 s warm and < 120 s cold on 2 CPU cores.
Peak memory is the process's maximum resident set size.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="brick")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    args = parser.parse_args()
    os.environ["LBNB_CACHE_DIR"] = tempfile.mkdtemp(prefix="lbnb-bench-cache-")

    from lbnb import data, metrics
    from lbnb.features import FeatureExtractor
    from lbnb.patchcore import PatchCore

    train, test = data.load_embedded(args.category, image_size=args.image_size)
    print(f"{args.category}: {len(train)} train + {len(test)} test images at {args.image_size} px, "
          f"{torch.get_num_threads()} torch threads")

    fx = FeatureExtractor(progress=False, cache=False)
    fx.extract(train.subset(range(8)))  # load the backbone once
    start = time.perf_counter()
    fx.extract(train)
    seconds = time.perf_counter() - start
    print(f"feature extraction: {len(train) / seconds:.1f} images/s ({seconds:.2f} s for {len(train)})")

    for run in ("cold", "warm"):
        detector = PatchCore(coreset_ratio=args.coreset_ratio, progress=False,
                             extractor=FeatureExtractor(progress=False))
        start = time.perf_counter()
        detector.fit(train)
        fitted = time.perf_counter()
        scores, maps = detector.score(test)
        done = time.perf_counter()
        result = metrics.evaluate(test, scores, maps)
        print(f"PatchCore {run}: fit {fitted - start:.2f} s + score {done - fitted:.2f} s = {done - start:.2f} s "
              f"(bank {tuple(detector.memory_bank_.shape)}); I-AUROC {result['i_auroc']:.3f}, "
              f"AUPRO {result['aupro']:.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak:.0f} MiB")


if __name__ == "__main__":
    main()

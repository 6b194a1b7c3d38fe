"""`lbnb audit` on a 1,000-image folder at 224 px, cold: the time a user waits, and how well it finds planted
defects.

    python benchmarks/bench_audit.py [--images 1000] [--defect-share 0.05] [--image-size 224] [--subsets 5]

Builds a folder of PNGs from the five embedded categories (200 normal crops each, defective test crops planted
at ``--defect-share``), empties the feature cache (a fresh ``LBNB_CACHE_DIR``), then times
``lbnb.audit.audit(folder, out)`` end to end — reading, feature extraction, the K sub-models, scoring and the
HTML report — in this process on all CPU threads. Prints the seconds per phase, the detection AUROC of the
ranking for the planted images (over the whole folder, and within each category's subfolder), and how many
planted images the purified list still holds. The folder mixes the five categories (one subfolder each).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def build(folder: Path, categories: list[str], n_per: int, share: float, size: int, seed: int) -> set[str]:
    from lbnb.data import load_embedded

    planted = set()
    for k, cat in enumerate(categories):
        n_bad = int(round(share * n_per))
        train, test = load_embedded(cat, seed + k, image_size=size, n_train=n_per - n_bad, n_test_good=0,
                                    n_test_per_type=(n_bad + 3) // 4 if n_bad else 0)
        for i, image in enumerate(train.images):
            (folder / cat).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / cat / f"{i:04d}.png")
        for j, i in enumerate(np.flatnonzero(test.labels == 1)[:n_bad]):
            name = f"{cat}/{n_per + j:04d}.png"                       # named like the rest: nothing gives it away
            Image.fromarray(test.images[i]).save(folder / name)
            planted.add(name)
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--defect-share", type=float, default=0.05)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--subsets", type=int, default=5)
    parser.add_argument("--coreset", type=float, default=0.01, help="PatchCore memory-bank share")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_audit_"))
    os.environ["LBNB_CACHE_DIR"] = str(work / "cache")                # cold: an empty feature cache
    import torch

    from lbnb.audit import audit
    from lbnb.data import embedded_categories
    from lbnb.metrics import image_metrics

    categories = embedded_categories()
    n_per = args.images // len(categories)
    planted = build(work / "images", categories, n_per, args.defect_share, args.image_size, args.seed)
    print(f"{n_per * len(categories)} images at {args.image_size} px ({len(planted)} planted defects) in "
          f"{work / 'images'}; {torch.get_num_threads()} CPU threads; K = {args.subsets}, coreset {args.coreset}")
    start = time.perf_counter()
    result = audit(work / "images", work / "report", n_subsets=args.subsets, image_size=args.image_size,
                   coreset_ratio=args.coreset, random_state=args.seed, progress=False)
    total = time.perf_counter() - start
    table = result.table
    found = image_metrics(table.path.isin(planted).to_numpy(), table.score.to_numpy())["i_auroc"]
    left = len(set(result.kept) & planted)
    per_category = {c: image_metrics(rows.path.isin(planted).to_numpy(), rows.score.to_numpy())["i_auroc"]
                    for c, rows in table.groupby(table.path.str.split("/").str[0])}
    print(f"read {result.seconds['read']:.1f} s · stage 1 {result.seconds['stage1']:.1f} s · "
          f"report {total - result.seconds['read'] - result.seconds['stage1']:.1f} s")
    print(f"planted-defect AUROC {found:.3f}; flagged {len(result.suspects)}; planted left in the purified list "
          f"{left} of {len(planted)}")
    print("AUROC within each category: " + ", ".join(f"{c} {v:.3f}" for c, v in per_category.items()))
    print(f"audit of {len(table)} images at {args.image_size} px, cold: {total:.1f} s ({total / 60:.2f} min)")


if __name__ == "__main__":
    main()

"""Clean-data quality of every detector on the embedded benchmark: I-AUROC and AUPRO per category.

    python benchmarks/bench_detectors.py [--categories brick grass] [--noise 0.2]

With ``--noise`` the training set is contaminated (SoftPatch protocol, seed 0) first. Prints one row
per (detector, category) with fit/score seconds, then the mean per detector.
"""
from __future__ import annotations

import argparse

import pandas as pd


def main() -> None:
    from lbnb import data
    from lbnb.detectors import FeatureReconstruction, PaDiM, PatchCore, SoftPatch
    from lbnb.experiments import run_trial

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="*", default=data.embedded_categories())
    parser.add_argument("--noise", type=float, default=0.0)
    args = parser.parse_args()
    makers = {"PatchCore": lambda s: PatchCore(random_state=s, progress=False),
              "SoftPatch": lambda s: SoftPatch(random_state=s, progress=False),
              "PaDiM": lambda s: PaDiM(random_state=s),
              "FeatureReconstruction": lambda s: FeatureReconstruction(random_state=s, progress=False)}
    rows = []
    for category in args.categories:
        train, test = data.load_embedded(category)
        for name, make in makers.items():
            row = run_trial(train, test, make, args.noise, seed=0)
            rows.append({"detector": name, "category": category, **row})
            print(f"{name:22s} {category:8s} I-AUROC {row['i_auroc']:.3f}  AUPRO {row['aupro']:.3f}  "
                  f"P-AUROC {row['p_auroc']:.3f}  fit {row['fit_seconds']:.1f} s  score {row['score_seconds']:.1f} s",
                  flush=True)
    table = pd.DataFrame(rows).groupby("detector")[["i_auroc", "aupro", "p_auroc", "fit_seconds"]].mean()
    print(f"\nmean over {len(args.categories)} categories (noise {args.noise:g}):")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()

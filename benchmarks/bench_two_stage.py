"""Two-stage PatchCore on the embedded benchmark: filter quality, gap recovery and cost, per α.

    python benchmarks/bench_two_stage.py [--categories ...] [--seeds 0 1 2] [--noise 0 0.1 0.2 0.4]
                                         [--n-subsets 5] [--keep auto 0.7] [--rounds 5]
                                         [--out results/bench_two_stage.csv]

For every (category, seed, α): the baseline (PatchCore on the contaminated set), the clean oracle (on
the uncontaminated training set, same test set) and, for each ``--keep`` rule, two-stage PatchCore
(stage 1 computed once, then one stage-2 fit per rule); with ``--rounds R`` > 1 also iterative stage 1
(up to R rounds of auto selection, :func:`lbnb.filtering.stage1`), as the row "two-stage auto xR". Prints per α: the stage-1 filter AUROC, the mean
I-AUROC of each method, the share of the baseline→oracle gap that two-stage recovers
((two-stage − baseline) / (oracle − baseline), on the means), and the cost ratio stage-1 seconds /
baseline fit seconds (features cached, so both read the same cache). Trials run in ``--jobs`` processes.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from joblib import Parallel, delayed


def _keep_rule(text: str):
    return text if text == "auto" else float(text)


def one_setting(category: str, seed: int, noise: float, n_subsets: int, keeps: list, coreset_ratio: float,
                aggregation: str, scope: str, n_rounds: int = 1) -> list[dict]:
    import torch

    from lbnb import data
    from lbnb.contamination import contaminate_softpatch
    from lbnb.detectors import PatchCore
    from lbnb.filtering import Stage1Result, stage1
    from lbnb.metrics import evaluate

    torch.set_num_threads(1)
    train, test = data.load_embedded(category)
    noisy = contaminate_softpatch(train, test, noise, random_state=seed)

    def make(s):
        return PatchCore(coreset_ratio=coreset_ratio, random_state=s, progress=False)

    def fit_eval(training) -> tuple[dict, float]:
        start = time.perf_counter()
        detector = make(seed).fit(training)
        seconds = time.perf_counter() - start
        return evaluate(noisy.test, *detector.score(noisy.test)), seconds

    base = {"category": category, "seed": seed, "noise": noise, "realised_rate": noisy.realised_rate}
    make(seed).extractor.extract(noisy.train)                              # warm the cache for fair timings
    rows = []
    for method, training in (("baseline", noisy.train), ("oracle", train)):
        metrics, seconds = fit_eval(training)
        rows.append({**base, "method": method, **metrics, "fit_seconds": seconds})
    result = stage1(noisy.train, make, n_subsets, keep_fraction="auto", aggregation=aggregation, scope=scope,
                    random_state=seed, progress=False, n_rounds=n_rounds)
    first = result.rounds[0].matrix                                        # round 1 = the paper's stage 1
    selections = [(f"two-stage t={keep}", Stage1Result(first, aggregation, scope, keep), first.seconds)
                  for keep in keeps]
    if n_rounds > 1:
        selections.append((f"two-stage auto x{n_rounds}", result, result.seconds))
    for method, chosen, stage1_seconds in selections:
        metrics, seconds = fit_eval(noisy.train.subset(np.flatnonzero(chosen.keep)))
        rows.append({**base, "method": method, **metrics, **chosen.report,
                     "stage1_seconds": stage1_seconds, "fit_seconds": stage1_seconds + seconds})
    return rows


def main() -> None:
    from lbnb import data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="*", default=data.embedded_categories())
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--noise", nargs="*", type=float, default=[0.0, 0.1, 0.2, 0.4])
    parser.add_argument("--n-subsets", type=int, default=5)
    parser.add_argument("--keep", nargs="*", type=_keep_rule, default=["auto"])
    parser.add_argument("--rounds", type=int, default=1,
                        help="also run iterative stage 1 with up to this many rounds (auto selection)")
    parser.add_argument("--aggregation", default="mean")
    parser.add_argument("--scope", default="cross")
    parser.add_argument("--coreset-ratio", type=float, default=0.05)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", default="results/bench_two_stage.csv")
    args = parser.parse_args()

    # warm the feature cache serially, so parallel workers never extract the same image twice
    from lbnb.detectors import FeatureExtractor
    for category in args.categories:
        for part in data.load_embedded(category):
            FeatureExtractor(progress=False).extract(part)
    grid = [(c, s, a) for c in args.categories for s in args.seeds for a in args.noise]
    start = time.perf_counter()
    jobs = Parallel(n_jobs=args.jobs, return_as="generator")(
        delayed(one_setting)(c, s, a, args.n_subsets, args.keep, args.coreset_ratio, args.aggregation, args.scope,
                              args.rounds)
        for c, s, a in grid)
    rows = []
    for done, setting in enumerate(jobs, 1):                               # one line per finished setting
        rows += setting
        first = setting[0]
        line = " ".join(f"{r['method']}={r['i_auroc']:.3f}" for r in setting)
        print(f"[{done}/{len(grid)}] {first['category']} seed {first['seed']} α={first['noise']:g}: {line}",
              flush=True)
    table = pd.DataFrame(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"{len(grid)} settings in {time.perf_counter() - start:.0f} s; table: {args.out}")
    print(f"K={args.n_subsets}, aggregation={args.aggregation}, scope={args.scope}, coreset {args.coreset_ratio}, "
          f"{len(args.categories)} categories x {len(args.seeds)} seeds")
    means = table.pivot_table(index="noise", columns="method", values="i_auroc", aggfunc="mean")
    print("\nmean I-AUROC\n" + means.round(3).to_string())
    two = table[table.method.str.startswith("two-stage")]
    summary = two.groupby(["noise", "method"]).agg(filter_auroc=("filter_auroc", "mean"),
                                                   removed=("removed_share", "mean"),
                                                   kept_rate=("kept_rate", "mean"), n_kept=("n_kept", "mean"),
                                                   stage1_s=("stage1_seconds", "mean"),
                                                   rounds=("n_rounds", "mean"))
    base_fit = table[table.method == "baseline"].groupby("noise").fit_seconds.mean()
    summary["cost_ratio"] = summary.stage1_s / base_fit.reindex(summary.index.get_level_values(0)).to_numpy()
    gap = (means["oracle"] - means["baseline"])
    summary["gap_recovered"] = [(means.loc[a, m] - means.loc[a, "baseline"]) / gap[a] if gap[a] > 1e-9 else np.nan
                                for a, m in summary.index]
    summary["delta_vs_base"] = [means.loc[a, m] - means.loc[a, "baseline"] for a, m in summary.index]
    print("\ntwo-stage (means over categories and seeds)\n" + summary.round(3).to_string())
    seed_sd = table.groupby(["noise", "method", "seed"]).i_auroc.mean().groupby(["noise", "method"]).std()
    print("\nseed std of the category-mean I-AUROC\n" + seed_sd.unstack().round(4).to_string())


if __name__ == "__main__":
    main()

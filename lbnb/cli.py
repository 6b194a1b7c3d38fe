"""Command line: ``lbnb run`` (the notebook series), ``lbnb audit`` (find the defects hidden in a folder of
"good" images) and ``lbnb bands`` (regression bands) — also ``python -m lbnb ...``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebook series with papermill")
    run.add_argument("--out", default="results", help="results folder (default: results)")
    run.add_argument("--smoke", action="store_true", help="run the fast SMOKE variant of every notebook")
    run.add_argument("--only", nargs="*", help="notebook stems or number prefixes, e.g. 01")
    run.add_argument("--dataset", default="embedded", choices=["embedded", "mvtec_ad", "visa", "realiad"],
                     help="DATASET of every notebook (real datasets: prepare them with data_scripts/ first)")
    run.add_argument("--data-root", default="data", help="DATA_ROOT: the --out folder of the data scripts")
    run.add_argument("--categories", help="comma-separated categories for every notebook (the first is shown in detail "
                                           "and used by single-category analyses; default: the notebooks' own)")
    run.add_argument("--image-size", type=int, help="IMAGE_SIZE of every notebook (default: the notebooks' 160)")
    audit = sub.add_parser("audit", help="rank the images of a presumed-clean folder by how suspicious they are")
    audit.add_argument("path", help="folder of presumed-normal images (any nesting; png/jpg/bmp/tif)")
    audit.add_argument("--out", required=True, help="where suspects.csv, purified.txt, skipped.csv, report.html go")
    audit.add_argument("-k", "--subsets", type=int, default=5, help="K sub-models (default 5)")
    audit.add_argument("-t", "--keep", default="auto",
                       help='share of images to keep, e.g. 0.9, or "auto" (default: a robust threshold)')
    audit.add_argument("--detector", default="patchcore", choices=["patchcore", "padim"])
    audit.add_argument("--image-size", type=int, default=224, help="images are resized to S x S (default 224)")
    audit.add_argument("--device", default="auto", help='"auto" (CUDA when available), "cpu" or "cuda"')
    audit.add_argument("--rounds", type=int, default=1, help="purification rounds (default 1)")
    audit.add_argument("--coreset", type=float, default=0.01, help="PatchCore memory-bank share (default 0.01)")
    audit.add_argument("--top", type=int, default=24, help="suspects shown with anomaly maps (default 24)")
    audit.add_argument("--seed", type=int, default=0)
    bands = sub.add_parser("bands", help="check a series summary against regression bands, or write new bands")
    bands.add_argument("summary", help="the combined summary.json of a SMOKE run")
    bands.add_argument("--against", default="tests/expected_smoke.json", help="bands file to check against")
    bands.add_argument("--write", metavar="PATH", help="write bands made from this summary to PATH instead")
    args = parser.parse_args(argv)

    if args.command == "audit":
        from .audit import audit as run_audit

        try:
            keep = args.keep if args.keep == "auto" else float(args.keep)
            result = run_audit(args.path, args.out, n_subsets=args.subsets, keep_fraction=keep,
                               detector=args.detector, image_size=args.image_size, device=args.device,
                               n_rounds=args.rounds, coreset_ratio=args.coreset, top=args.top,
                               random_state=args.seed)
        except (ValueError, FileNotFoundError, TypeError) as err:
            print(f"lbnb audit: error: {err}", file=sys.stderr)
            return 1
        out = Path(args.out)
        print(f"lbnb audit: {len(result.suspects)} of {len(result.table)} images flagged, {len(result.kept)} kept, "
              f"{len(result.skipped)} unreadable skipped, in {result.seconds['total']:.0f} s")
        for row in result.suspects.head(10).itertuples():
            print(f"  #{row.rank:<4} {row.score:10.4g}  {row.path}")
        print(f"lbnb audit: report {out / 'report.html'}; ranking {out / 'suspects.csv'}; "
              f"train on {out / 'purified.txt'}")
        return 0

    if args.command == "bands":
        import json

        from . import regression

        combined = json.loads(open(args.summary).read())
        if args.write:
            path = regression.write_bands(combined, args.write)
            print(f"lbnb bands: wrote {len(regression.load_bands(path))} bands to {path}")
            return 0
        problems = regression.check(combined, regression.load_bands(args.against))
        for line in problems:
            print(f"lbnb bands: {line}", file=sys.stderr)
        print(f"lbnb bands: {'FAILED, ' + str(len(problems)) + ' numbers out of band' if problems else 'all within bands'}")
        return 1 if problems else 0

    if args.command == "run":
        from .series import NotebookFailed, run_series

        try:
            parameters = {}
            if args.dataset != "embedded":
                from .datasets import prepared_folder

                prepared_folder(args.dataset, args.data_root)                     # fail now, not in notebook 01
                parameters = {"DATASET": args.dataset, "DATA_ROOT": str(Path(args.data_root).resolve())}
            if args.image_size:
                parameters["IMAGE_SIZE"] = args.image_size
            if args.categories:
                names = [c.strip() for c in args.categories.split(",") if c.strip()]
                parameters.update(CATEGORIES=names, SWEEP_CATEGORIES=names, ABLATION_CATEGORIES=names[:1],
                                  CATEGORY=names[0], SHOW_CATEGORY=names[0])
            summary = run_series(args.out, smoke=args.smoke, only=args.only, parameters=parameters)
        except FileNotFoundError as err:
            print(f"lbnb run: {err}", file=sys.stderr)
            return 1
        except NotebookFailed as err:
            print(f"lbnb run: FAILED: {err}", file=sys.stderr)
            return 1
        total = sum(v["seconds"] for v in summary["notebooks"].values())
        print(f"lbnb run: {len(summary['notebooks'])} notebooks in {total:.0f} s; results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

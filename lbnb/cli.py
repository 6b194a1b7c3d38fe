"""Command line: ``lbnb run`` (the notebook series) and ``lbnb bands`` (regression bands) — also
``python -m lbnb ...``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbnb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebook series with papermill")
    run.add_argument("--out", default="results", help="results folder (default: results)")
    run.add_argument("--smoke", action="store_true", help="run the fast SMOKE variant of every notebook")
    run.add_argument("--only", nargs="*", help="notebook stems or number prefixes, e.g. 01")
    bands = sub.add_parser("bands", help="check a series summary against regression bands, or write new bands")
    bands.add_argument("summary", help="the combined summary.json of a SMOKE run")
    bands.add_argument("--against", default="tests/expected_smoke.json", help="bands file to check against")
    bands.add_argument("--write", metavar="PATH", help="write bands made from this summary to PATH instead")
    args = parser.parse_args(argv)

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
            summary = run_series(args.out, smoke=args.smoke, only=args.only)
        except NotebookFailed as err:
            print(f"lbnb run: FAILED: {err}", file=sys.stderr)
            return 1
        total = sum(v["seconds"] for v in summary["notebooks"].values())
        print(f"lbnb run: {len(summary['notebooks'])} notebooks in {total:.0f} s; results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``lbnb run`` (the notebook series) — also ``python -m lbnb run``."""
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
    args = parser.parse_args(argv)

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

#!/usr/bin/env python3
"""Prepare VisA (downloads the official archive, 1.8 GiB, unless --archive is given) for lbnb.

Verifies the SHA-256, extracts safely, converts to the MVTec AD layout under OUT/visa, records the
contamination splits and writes a completion marker last. Idempotent; exits 1 with a one-line reason on
failure. All logic lives in lbnb.converters. Usage::

    .venv/bin/python data_scripts/prepare_visa.py [--archive PATH] [--out DIR] [--sha256 HEX] [--force]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))     # runs from a checkout, installed or not
from lbnb.converters import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("visa"))

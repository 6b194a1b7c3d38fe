"""Shared test set-up: a private feature cache per test session (warm within it, never the user's).

Under pytest-xdist each worker uses one OpenMP thread: two workers with two spinning threads each on
two cores run the torch-heavy tests 3-5x slower.
"""
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_feature_cache(tmp_path_factory):
    old = os.environ.get("LBNB_CACHE_DIR")
    os.environ["LBNB_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield
    if old is None:
        os.environ.pop("LBNB_CACHE_DIR", None)
    else:
        os.environ["LBNB_CACHE_DIR"] = old

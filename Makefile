# lbnb: `make run` executes the notebook series, `make test` runs the tests.
# Both create the virtual environment first when it is missing (or pyproject.toml changed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lbnb-installed
RESULTS ?= results

.PHONY: setup run smoke test bench bench-anomalib clean-results lab

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "lbnb needs Python 3.11 (torch 2.14.1 wheels); set PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing lbnb and its dependencies into $(VENV) (first time: a few minutes)..."
	@$(PY) -m pip install --disable-pip-version-check -e ".[dev]" > $(VENV)/pip-install.log 2>&1 \
		|| { tail -n 40 $(VENV)/pip-install.log; echo "pip install failed (full log: $(VENV)/pip-install.log)" >&2; exit 1; }
	@$(PY) -c "import lbnb, torch, torchvision, timm, papermill" || { echo "environment set-up failed" >&2; exit 1; }
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m lbnb run --out $(RESULTS)

smoke: $(STAMP)
	$(PY) -m lbnb run --smoke --out $(RESULTS)/smoke

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_embedded.py
	$(PY) benchmarks/bench_patchcore.py
	$(PY) benchmarks/bench_detectors.py

# lbnb vs anomalib (issue 8): anomalib lives in its own environment, never in .venv or CI.
BENCH_VENV ?= .venv-anomalib
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): benchmarks/requirements-anomalib.txt pyproject.toml
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	@echo "Installing anomalib and lbnb into $(BENCH_VENV) (first time: several minutes)..."
	@$(BENCH_VENV)/bin/python -m pip install --disable-pip-version-check -r benchmarks/requirements-anomalib.txt -e . \
		> $(BENCH_VENV)/pip-install.log 2>&1 \
		|| { tail -n 40 $(BENCH_VENV)/pip-install.log; echo "pip install failed (full log: $(BENCH_VENV)/pip-install.log)" >&2; exit 1; }
	@touch $(BENCH_STAMP)

bench-anomalib: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(BENCH_VENV)/bin/python benchmarks/bench_vs_anomalib.py $(ARGS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean-results:
	rm -rf $(RESULTS)

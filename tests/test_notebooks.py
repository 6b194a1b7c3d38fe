"""The notebook series: committed clean, and executed in SMOKE mode with papermill."""
import json
from pathlib import Path

import nbformat
import pytest

from lbnb import series

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = series.notebooks(ROOT / "notebooks")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "SMOKE = False" in params[0].source and "RESULTS_DIR" in params[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "sys.path" not in "".join(c.source for c in code)


def test_01_contamination_smoke(tmp_path):
    summary = series.run_series(tmp_path, smoke=True, only=["01"], log=lambda *_: None)
    nb = summary["notebooks"]["01_contamination"]
    assert nb["n_categories"] >= 5 and nb["n_defect_types"] >= 15
    for alpha, rate in nb["realised_rate_by_noise"].items():
        a = float(alpha)
        assert rate == pytest.approx(a / (1 + a), abs=0.02)  # int(α·n) injected into n normals
    left = [nb["test_anomalous_left_by_noise"][k] for k in sorted(nb["test_anomalous_left_by_noise"], key=float)]
    assert left == sorted(left, reverse=True) and left[-1] < left[0]
    i_auroc = nb["i_auroc_by_detector_noise"]
    assert set(i_auroc) == {f"{d}@{a}" for d in ("PatchCore", "SoftPatch", "PaDiM", "FeatureReconstruction")
                            for a in ("0", "0.2")}
    assert i_auroc["PatchCore@0"] > 0.85 and i_auroc["PatchCore@0.2"] < i_auroc["PatchCore@0"] - 0.05
    assert all(v > 0.6 for v in i_auroc.values())
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["smoke"] is True
    for figure in ("composition.png", "injected.png", "defects_brick.png", "detectors_vs_noise.png"):
        assert (tmp_path / "01_contamination" / figure).stat().st_size > 1000
    assert (tmp_path / "01_contamination" / "01_contamination.ipynb").exists()

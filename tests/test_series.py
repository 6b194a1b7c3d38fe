"""The series runner: ordering, summaries, and failures that name the notebook and the cell."""
import json

import nbformat
import pytest

from lbnb import cli, series


def _write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('SMOKE = False\nRESULTS_DIR = "."')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_failure_names_notebook_and_cell(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_ok.ipynb",
                    "from lbnb.series import save_summary\nsave_summary(RESULTS_DIR, '01_ok', {'x': 1.5, 'smoke': SMOKE})")
    _write_notebook(nbs / "02_bad.ipynb", "x = 1", "raise ValueError('boom here')")
    _write_notebook(nbs / "03_never.ipynb", "open('never-ran', 'w')")
    with pytest.raises(series.NotebookFailed, match=r"02_bad\.ipynb failed at cell 3/3 .*ValueError: boom here"):
        series.run_series(tmp_path / "out", smoke=True, notebook_dir=nbs, log=lambda *_: None)
    assert json.loads((tmp_path / "out" / "01_ok" / "summary.json").read_text()) == {"x": 1.5, "smoke": True}
    assert not (nbs / "never-ran").exists()


def test_cli_run_reports_failure_with_exit_code(tmp_path, monkeypatch, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_bad.ipynb", "1/0")
    monkeypatch.setattr(series, "NOTEBOOK_DIR", nbs)
    monkeypatch.setattr(series.run_series, "__kwdefaults__", {**series.run_series.__kwdefaults__, "notebook_dir": nbs})
    assert cli.main(["run", "--out", str(tmp_path / "out")]) == 1
    assert "01_bad.ipynb failed at cell 2/2" in capsys.readouterr().err


def test_summary_values_are_json_safe(tmp_path):
    import numpy as np

    path = series.save_summary(tmp_path, "nb", {"a": np.float32(0.5), "b": float("nan"), "c": (1, np.int64(2))})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": None, "c": [1, 2]}


def test_no_matching_notebook_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no notebook matches"):
        series.run_series(tmp_path, only=["99"], log=lambda *_: None)

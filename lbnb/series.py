"""Run the notebook series with papermill and collect each notebook's headline numbers.

Each notebook takes the parameters ``SMOKE`` and ``RESULTS_DIR`` (cell tagged ``parameters``),
writes its tables and figures under ``RESULTS_DIR/<notebook stem>/`` and its headline numbers with
:func:`save_summary`. :func:`run_series` executes the notebooks in order, writes the executed copies
next to their results and one combined ``RESULTS_DIR/summary.json``, and stops at the first failure
with a message naming the notebook and the cell.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def notebooks(notebook_dir: str | os.PathLike = NOTEBOOK_DIR) -> list[Path]:
    """The series in order: ``notebooks/NN_name.ipynb`` sorted by number."""
    found = sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks named NN_name.ipynb in {notebook_dir}")
    return found


def _clean(value):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_summary(results_dir: str | os.PathLike, notebook: str, summary: dict) -> Path:
    """Write ``results_dir/<notebook>/summary.json`` atomically; returns its path."""
    folder = Path(results_dir) / notebook
    folder.mkdir(parents=True, exist_ok=True)
    return write_json(folder / "summary.json", summary, indent=2, sort_keys=True)


def write_json(path: str | os.PathLike, value, **dumps_options) -> Path:
    """Write ``value`` (made JSON-safe) to ``path`` atomically: a reader sees the old file or the new one,
    never half of it. ``dumps_options`` go to ``json.dumps``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(value), **dumps_options))
    os.replace(tmp, path)
    return path


class NotebookFailed(RuntimeError):
    """A notebook of the series raised; the message names the notebook and the cell."""


def _failing_cell(executed: Path) -> str:
    """'cell K/N (first line): Error: message', K counted 1-based in the source notebook."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    added = {"injected-parameters", "papermill-error-cell-tag"}
    cells = [c for c in nb.cells if not added & set(c.metadata.get("tags", []))]
    for i, cell in enumerate(cells, 1):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return f"cell {i}/{len(cells)} ({first[:70]!r}): {out.get('ename')}: {out.get('evalue')}"
    return "an unknown cell"


def run_series(results_dir: str | os.PathLike = "results", *, smoke: bool = False,
               only: list[str] | None = None, parameters: dict | None = None,
               notebook_dir: str | os.PathLike = NOTEBOOK_DIR, log=print) -> dict:
    """Execute the series with papermill; returns the combined summary (also written to disk).

    ``only``: notebook stems or number prefixes to run (default all); ``parameters``: extra
    papermill parameters passed to every notebook.
    """
    import papermill as pm

    results_dir = Path(results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in notebooks(notebook_dir)
              if not only or any(p.stem == o or p.stem.startswith(o) for o in only)]
    if not chosen:
        raise ValueError(f"no notebook matches {only}")
    combined: dict = {"smoke": smoke, "notebooks": {}}
    for k, path in enumerate(chosen, 1):
        out_dir = results_dir / path.stem
        out_dir.mkdir(parents=True, exist_ok=True)
        executed = out_dir / path.name
        log(f"[{k}/{len(chosen)}] {path.stem} ({'smoke' if smoke else 'full'}) ...")
        start = time.perf_counter()
        params = {"SMOKE": smoke, "RESULTS_DIR": str(results_dir), **(parameters or {})}
        try:
            pm.execute_notebook(str(path), str(executed), parameters=params, cwd=str(path.parent),
                                progress_bar=False, kernel_name="python3")
        except pm.PapermillExecutionError as err:
            raise NotebookFailed(f"{path.name} failed at {_failing_cell(executed)} "
                                 f"(executed copy: {executed})") from err
        seconds = time.perf_counter() - start
        summary_path = out_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        combined["notebooks"][path.stem] = {"seconds": round(seconds, 1), **summary}
        log(f"[{k}/{len(chosen)}] {path.stem} done in {seconds:.0f} s")
    (results_dir / "summary.json").write_text(json.dumps(_clean(combined), indent=2, sort_keys=True))
    return combined

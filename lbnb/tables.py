"""Tables from a tidy results table (one row per trial, see :func:`lbnb.grid.run_grid`).

:func:`method_label` names a row the way the paper's table does ("PatchCore · two-stage ×5");
:func:`seed_stats` averages over categories within each seed, then takes mean and std over seeds (the seed
std is the spread a reader should compare differences with); :func:`paper_table` formats that as
"0.912 ± 0.010" per method and α; :func:`ablation` gives the same statistics along one stage-1 setting.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METHOD_NAMES = {"baseline": "baseline", "two_stage": "two-stage", "oracle": "clean oracle", "softpatch": "SoftPatch",
                "two_stage_1round": "two-stage (1 round)"}


def keep_fraction_value(value):
    """A kept fraction t as read back from a CSV: "0.8" → 0.8, "auto" stays, missing → None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str) and value != "auto":
        return float(value)
    return value


def read_results(*paths) -> pd.DataFrame:
    """Concatenated results tables (CSV files written from :func:`lbnb.grid.run_grid` tables), with the
    kept fraction t restored to numbers and "auto"."""
    frames = [pd.read_csv(p) for p in paths]
    table = pd.concat(frames, ignore_index=True)
    if "keep_fraction" in table:
        table["keep_fraction"] = pd.Series([keep_fraction_value(v) for v in table.keep_fraction], dtype=object)
    return table


def method_label(row) -> str:
    """'<detector> · <method>', with '×R' for two-stage rows run with up to R > 1 purification rounds."""
    name = METHOD_NAMES.get(row["method"], row["method"])
    rounds = row.get("n_rounds")
    if row["method"] == "two_stage" and rounds is not None and not pd.isna(rounds) and int(rounds) > 1:
        name += f" ×{int(rounds)}"
    return f"{row['detector']} · {name}"


def with_labels(results: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``results`` with a ``row`` column of :func:`method_label`."""
    out = results.copy()
    out["row"] = [method_label(r) for _, r in out.iterrows()] if len(out) else []
    return out


def seed_stats(results: pd.DataFrame, metric: str, by=("row", "noise")) -> pd.DataFrame:
    """Per ``by`` group: ``mean`` and ``std`` over seeds of the category-mean ``metric``, and ``n_seeds``
    (std is NaN with one seed)."""
    by = list(by)
    per_seed = results.groupby(by + ["seed"])[metric].mean()
    stats = per_seed.groupby(level=by).agg(["mean", "std", "count"])
    return stats.rename(columns={"count": "n_seeds"})


def paper_table(results: pd.DataFrame, metrics=("i_auroc", "aupro"), by: str = "row",
                columns: str = "noise", digits: int = 3) -> pd.DataFrame:
    """Rows ``by`` × columns (metric, α): "mean ± std" over seeds of the category means (just the mean with
    one seed). Rows keep their first-appearance order."""
    order = list(dict.fromkeys(results[by]))
    cells = {}
    for metric in metrics:
        stats = seed_stats(results, metric, (by, columns))
        for (row, col), s in stats.iterrows():
            text = f"{s['mean']:.{digits}f}"
            if s["n_seeds"] > 1 and np.isfinite(s["std"]):
                text += f" ± {s['std']:.{digits}f}"
            cells.setdefault(row, {})[(metric, col)] = text
    table = pd.DataFrame.from_dict(cells, orient="index").reindex(order)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["metric", columns])
    return table.sort_index(axis=1, level=[0, 1], sort_remaining=False)


def setting_text(value) -> str:
    """A setting as text: 5.0 → "5", 0.8 → "0.8", "auto" → "auto", None/NaN → "—"."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def ablation(results: pd.DataFrame, factor: str, metrics=("i_auroc", "filter_auroc")) -> pd.DataFrame:
    """Mean and seed std of ``metrics`` per value of one stage-1 setting (``factor``: a column such as
    "n_subsets", "keep_fraction", "aggregation", "scope", "n_rounds" or "stage1_iterations")."""
    frame = results.assign(**{factor: [setting_text(v) for v in results[factor]]})
    parts = [seed_stats(frame, m, (factor,)).add_prefix(f"{m}_") for m in metrics]
    table = pd.concat(parts, axis=1)
    return table.loc[sorted(table.index, key=_setting_order)]


def _setting_order(text: str):
    """Numbers ascending (3 < 5 < 10), then text ("auto")."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)

"""The regression-band machinery: flattening, which numbers are banded, checks that name the number."""
import json

from lbnb import regression
from lbnb.cli import main

SUMMARY = {"smoke": True, "notebooks": {
    "04_x": {"seconds": 12.0, "i_auroc": {"PC · baseline@0.2": 0.80, "PC · oracle@0.2": 0.95},
             "fit_seconds": {"PC": 3.0}, "categories": ["brick"], "ok": True, "n_kept": 180},
    "06_y": {"settings": {"n_subsets": 3}, "n_rows": 64, "missing": None}}}


def test_headline_numbers_skip_timings_and_bookkeeping():
    numbers = regression.headline_numbers(SUMMARY)
    assert numbers == {"04_x/i_auroc/PC · baseline@0.2": 0.80, "04_x/i_auroc/PC · oracle@0.2": 0.95,
                       "04_x/n_kept": 180.0}


def test_bands_and_check_name_the_number_that_moved():
    bands = regression.make_bands(SUMMARY)
    assert bands["04_x/i_auroc/PC · baseline@0.2"] == [0.77, 0.83]            # ± 0.03
    assert bands["04_x/n_kept"] == [171.0, 189.0]                              # ± 5 %
    assert regression.check(SUMMARY, bands) == []
    moved = json.loads(json.dumps(SUMMARY))
    moved["notebooks"]["04_x"]["i_auroc"]["PC · baseline@0.2"] = 0.70
    del moved["notebooks"]["04_x"]["n_kept"]
    problems = regression.check(moved, bands)
    assert len(problems) == 2
    assert "04_x/i_auroc/PC · baseline@0.2 = 0.7 is outside its band [0.77, 0.83]" in problems
    assert any(p.startswith("04_x/n_kept: missing") for p in problems)


def test_cli_writes_and_checks_bands(tmp_path, capsys):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(SUMMARY))
    bands = tmp_path / "bands.json"
    assert main(["bands", str(summary), "--write", str(bands)]) == 0
    assert main(["bands", str(summary), "--against", str(bands)]) == 0
    SUMMARY["notebooks"]["04_x"]["i_auroc"]["PC · oracle@0.2"] = 0.5
    summary.write_text(json.dumps(SUMMARY))
    assert main(["bands", str(summary), "--against", str(bands)]) == 1
    assert "PC · oracle@0.2 = 0.5 is outside" in capsys.readouterr().err

"""lbnb audit: defects planted among normal images rank at the top, unreadable files are reported and skipped,
the outputs are complete and the HTML report is self-contained; same seed, same ranking."""
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lbnb.audit import audit
from lbnb.data import load_embedded
from lbnb.metrics import image_metrics


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """60 normal brick crops and 8 planted defective ones, nested, in mixed formats, modes and sizes, plus a
    truncated PNG, a garbage JPEG and a text file."""
    root = tmp_path_factory.mktemp("good_folder")
    train, test = load_embedded("brick", 3, image_size=112, n_train=60, n_test_good=0, n_test_per_type=2)
    planted = set()
    for i, image in enumerate(train.images):
        sub = root / ("line_a" if i % 2 else "line_b") / f"batch{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(image)
        if i % 7 == 0:
            im.convert("L").save(sub / f"img_{i:03d}.bmp")                   # grayscale
        elif i % 5 == 0:
            im.resize((140, 120)).save(sub / f"img_{i:03d}.JPG", quality=95)   # another size, upper-case suffix
        else:
            im.save(sub / f"img_{i:03d}.png")
    for j, image in enumerate(test.images[test.labels == 1]):
        name = f"line_a/batch{j % 3}/img_{100 + j:03d}.png"
        Image.fromarray(image).save(root / name)
        planted.add(name)
    good = (root / "line_b" / "batch0" / "img_000.bmp").read_bytes()
    (root / "line_b" / "truncated.png").write_bytes((root / sorted(planted)[0]).read_bytes()[:300])
    (root / "garbage.jpg").write_bytes(b"not a jpeg" * 50)
    (root / "notes.txt").write_text("not an image")
    assert good
    return root, planted


def test_planted_defects_rank_at_the_top_and_corrupt_files_are_skipped(folder, tmp_path):
    root, planted = folder
    result = audit(root, tmp_path / "out", n_subsets=3, image_size=96, top=6, progress=False)
    table = result.table
    assert len(table) == 68 and sorted(p for p, _ in result.skipped) == ["garbage.jpg", "line_b/truncated.png"]
    labels = table.path.isin(planted)
    auroc = image_metrics(labels.to_numpy(), table.score.to_numpy())["i_auroc"]
    assert auroc >= 0.9, auroc                                                # planted defects score high
    assert labels.head(8).sum() >= 5                                          # ... and fill the top of the ranking
    assert list(table["rank"]) == list(range(1, 69)) and table.score.is_monotonic_decreasing
    per_model = table[[f"score_k{k}" for k in range(3)]]
    assert (per_model.notna().sum(axis=1) == 2).all()                         # cross scope: 2 of 3 sub-models
    assert np.allclose(per_model.mean(axis=1), table.score)
    out = tmp_path / "out"
    assert pd.read_csv(out / "suspects.csv").path.tolist() == table.path.tolist()
    kept = (out / "purified.txt").read_text().split()
    assert kept == result.kept and set(kept) == set(table.path[table.kept]) and len(kept) < 68
    removed = set(table.path) - set(kept)
    assert len(removed & planted) / len(removed) >= 0.5                       # what it removes is mostly planted
    assert len(set(kept) & planted) / len(kept) < len(planted) / 68           # so the kept set is purer
    assert pd.read_csv(out / "skipped.csv").path.tolist() == ["garbage.jpg", "line_b/truncated.png"]


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "link", "input", "hr"}

    def __init__(self):
        super().__init__()
        self.stack, self.sources, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.sources.append(attrs[key])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_the_report_is_valid_and_self_contained(folder, tmp_path):
    root, planted = folder
    audit(root, tmp_path, n_subsets=3, image_size=96, top=4, progress=False)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(page)
    assert not checker.errors and not checker.stack                           # every tag closed, in order
    assert len(checker.sources) == 1 + 2 * 4                                  # histogram + image and map per suspect
    assert all(s.startswith("data:image/png;base64,") for s in checker.sources)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"(https?:)?//[a-z0-9]|url\(", text, re.I)          # no network or file reference
    assert "<script" not in page and "truncated.png" in page and "garbage.jpg" in page


def test_same_seed_same_ranking_and_the_command_line(folder, tmp_path):
    root, _ = folder
    a = audit(root, None, n_subsets=3, image_size=64, keep_fraction=0.9, progress=False).table
    b = audit(root, None, n_subsets=3, image_size=64, keep_fraction=0.9, progress=False).table
    pd.testing.assert_frame_equal(a, b)
    assert (~a.kept).sum() == 68 - int(68 * 0.9)
    run = subprocess.run([sys.executable, "-m", "lbnb", "audit", str(root), "--out", str(tmp_path / "cli"), "-k", "3",
                          "--image-size", "64", "--detector", "padim", "--top", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "flagged" in run.stdout and (tmp_path / "cli" / "report.html").is_file()
    bad = subprocess.run([sys.executable, "-m", "lbnb", "audit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "not a folder" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

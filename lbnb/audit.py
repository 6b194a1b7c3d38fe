"""Audit a folder of presumed-normal images: stage 1 as a data-cleaning tool, before anyone trains on it.

:func:`audit` reads every image under a folder (any nesting; png/jpg/bmp/tif; any size and mode; unreadable
or truncated files are listed and skipped), runs stage 1 — K sub-models on disjoint subsets, each image
scored by the sub-models that did not train on it, scores aggregated by their mean — and writes to ``out``:

- ``suspects.csv``  every image ranked by its stage-1 score (rank 1 = most suspicious), with the score of
  each sub-model (``score_k<k>``, NaN where that sub-model trained on the image), whether it is kept and
  the round that removed it;
- ``purified.txt``  the kept images, one relative path per line: the folder to train on;
- ``skipped.csv``   the files that could not be read, with the reason;
- ``report.html``   one self-contained page (images embedded, no network references): the score histogram
  with the threshold, thumbnails and anomaly maps of the top suspects, the skipped files.
"""
from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .filtering import AUTO, Stage1Result, aggregate, check_keep_fraction, cross_maps, stage1
from .image_io import IMAGE_SUFFIXES, read_image, resize_image
from .imageset import GOOD, ImageSet

DETECTORS = ("patchcore", "padim")
MIN_BANK = 1000   # PatchCore sub-models keep at least this many patches, whatever the coreset ratio


@dataclass
class AuditResult:
    """What :func:`audit` found. ``table``: one row per readable image, ranked (see the module docstring);
    ``kept``: relative paths of the purified set; ``skipped``: (relative path, reason) of unreadable files."""

    table: pd.DataFrame
    kept: list[str]
    skipped: list[tuple[str, str]]
    settings: dict
    seconds: dict = field(default_factory=dict)
    threshold: float = float("nan")

    @property
    def suspects(self) -> pd.DataFrame:
        """The images stage 1 removed, most suspicious first."""
        return self.table[~self.table.kept]


def find_images(folder) -> list[Path]:
    """Every image file under ``folder`` (any nesting; suffixes in any case), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    return sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.relative_to(folder).as_posix())


def read_folder(folder, image_size: int = 224, progress: bool = True) -> tuple[ImageSet, list[tuple[str, str]]]:
    """The readable images under ``folder`` resized to S×S as an ImageSet (ids = relative paths, all labelled
    normal), and the unreadable ones as (relative path, reason)."""
    folder = Path(folder)
    images, ids, skipped = [], [], []
    for path in tqdm(find_images(folder), desc="reading", disable=not progress):
        rel = path.relative_to(folder).as_posix()
        try:
            images.append(resize_image(read_image(path), (image_size, image_size)))
            ids.append(rel)
        except (ValueError, OSError) as err:
            skipped.append((rel, str(err).replace(str(path), rel)))
    if not images:
        raise ValueError(f"no readable image under {folder} (looked for {', '.join(IMAGE_SUFFIXES)})"
                         + (f"; {len(skipped)} unreadable" if skipped else ""))
    n = len(images)
    data = ImageSet(np.stack(images), np.zeros(n, np.int8), np.zeros((n, image_size, image_size), bool),
                    np.array(ids), np.array([GOOD] * n), folder.name)
    return data, skipped


def make_factory(detector: str, device: str = "auto", coreset_ratio: float = 0.01):
    """random_state → unfitted sub-model: ``"patchcore"`` (memory bank, default) or ``"padim"`` (Gaussians)."""
    if detector == "patchcore":
        from .patchcore import PatchCore

        return lambda seed: PatchCore(coreset_ratio=coreset_ratio, random_state=seed, device=device, progress=False)
    if detector == "padim":
        from .padim import PaDiM

        return lambda seed: PaDiM(random_state=seed, device=device)
    raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")


def bank_ratio(data: ImageSet, n_subsets: int, coreset_ratio: float) -> float:
    """The coreset ratio, raised where needed so that a sub-model's bank holds ≥ :data:`MIN_BANK` patches
    (small folders or small images: a 1 % bank of a few thousand patches would be too sparse to score by)."""
    from .features import FeatureExtractor

    h, w = FeatureExtractor(progress=False).extract(data.subset([0])).shape[-2:]
    patches = (len(data) // n_subsets) * h * w                          # patches a sub-model trains on
    return float(min(1.0, max(coreset_ratio, MIN_BANK / max(patches, 1))))


def audit(folder, out=None, *, n_subsets: int = 5, keep_fraction=AUTO, detector: str = "patchcore",
          image_size: int = 224, device: str = "auto", n_rounds: int = 1, coreset_ratio: float = 0.01,
          top: int = 24, random_state: int = 0, progress: bool = True) -> AuditResult:
    """Rank the images under ``folder`` by how suspicious stage 1 finds them; write the outputs to ``out``.

    Args:
        n_subsets: K sub-models (each trains on N/K images). keep_fraction: t, the share kept, or
            ``"auto"`` (a robust threshold on the scores: for an unknown amount of contamination).
        detector: ``"patchcore"`` or ``"padim"``. image_size: S, images are resized to S×S.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``. n_rounds: purification rounds
            (stage 1 again on the kept images; the ranking is the first round's).
        coreset_ratio: PatchCore memory-bank share; 1 % (PatchCore's own MVTec setting) keeps the audit of
            1,000 images at 224 px within minutes on 2 CPU cores (``benchmarks/bench_audit.py``); raised
            for small folders so that every bank keeps ≥ :data:`MIN_BANK` patches (see :func:`bank_ratio`).
        top: suspects shown with anomaly maps in the report. random_state: same seed, same result.
    """
    check_keep_fraction(keep_fraction)
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if not 32 <= int(image_size) <= 1024:
        raise ValueError(f"image_size must be between 32 and 1024 pixels, got {image_size}")
    start = time.perf_counter()
    data, skipped = read_folder(folder, int(image_size), progress)
    if len(data) < 2 * n_subsets:
        raise ValueError(f"{len(data)} readable images are too few for K = {n_subsets} sub-models "
                         f"(need at least {2 * n_subsets})")
    read_s = time.perf_counter() - start
    if detector == "patchcore":
        coreset_ratio = bank_ratio(data, n_subsets, coreset_ratio)
    result = stage1(data, make_factory(detector, device, coreset_ratio), n_subsets, keep_fraction,
                    random_state=random_state, progress=progress, n_rounds=n_rounds)
    stage1_s = time.perf_counter() - start - read_s
    table = _ranking(result)
    settings = {"folder": str(Path(folder).resolve()), "n_images": len(data), "n_skipped": len(skipped),
                "n_subsets": n_subsets, "keep_fraction": keep_fraction, "detector": detector,
                "image_size": int(image_size), "device": device, "n_rounds": n_rounds,
                "coreset_ratio": coreset_ratio if detector == "patchcore" else None, "random_state": random_state}
    first = result.rounds[0]
    audit_result = AuditResult(table, table.path[table.kept].tolist(), skipped, settings,
                               {"read": read_s, "stage1": stage1_s},
                               float(first.aggregated[first.keep].max()))
    if out is not None:
        write_outputs(audit_result, out, data, result, top, progress)
    audit_result.seconds["total"] = time.perf_counter() - start
    return audit_result


def _ranking(result: Stage1Result) -> pd.DataFrame:
    """One row per image of the first round: score, rank, per-sub-model scores, kept, round removed."""
    first = result.rounds[0]
    matrix = first.matrix
    removed_in = np.zeros(len(matrix.ids), int)
    position = {sid: i for i, sid in enumerate(matrix.ids)}
    for r, rnd in enumerate(result.rounds, 1):
        for sid in rnd.matrix.ids[~rnd.keep]:
            removed_in[position[sid]] = r
    scores = aggregate(matrix, first.aggregation, first.scope)
    table = pd.DataFrame({"path": matrix.ids, "score": scores})
    for k in range(matrix.n_subsets):
        table[f"score_k{k}"] = np.where(matrix.trained_on[k], np.nan, matrix.scores[k])
    table["kept"] = removed_in == 0
    table["removed_in_round"] = removed_in
    table = table.sort_values(["score", "path"], ascending=[False, True], kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def write_outputs(result: AuditResult, out, data: ImageSet, stage: Stage1Result, top: int = 24,
                  progress: bool = True) -> Path:
    """Write suspects.csv, purified.txt, skipped.csv and report.html into ``out``; returns the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "suspects.csv", index=False)
    (out / "purified.txt").write_text("".join(f"{p}\n" for p in result.kept))
    pd.DataFrame(result.skipped, columns=["path", "reason"]).to_csv(out / "skipped.csv", index=False)
    shown = result.table.head(max(0, int(top)))
    index = [int(np.flatnonzero(data.ids == p)[0]) for p in shown.path]
    maps = (cross_maps(stage.rounds[0].matrix, data, index) if index
            else np.zeros((0, *data.image_size), np.float32))
    page = report_html(result, data, shown, index, maps, progress)
    (out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"


# -- the report ----------------------------------------------------------------------------------
def _png(figure_or_array) -> str:
    """A data: URI of a PNG, from a matplotlib figure or a uint8 image array."""
    buf = io.BytesIO()
    if isinstance(figure_or_array, np.ndarray):
        from PIL import Image

        Image.fromarray(figure_or_array).save(buf, format="PNG")
    else:
        import matplotlib.pyplot as plt

        figure_or_array.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(figure_or_array)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _histogram(table: pd.DataFrame, threshold: float) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6))
    bins = np.histogram_bin_edges(table.score, bins=min(60, max(10, len(table) // 10)))
    ax.hist(table.score[table.kept], bins=bins, color="tab:blue", alpha=0.8, label="kept")
    ax.hist(table.score[~table.kept], bins=bins, color="tab:red", alpha=0.8, label="removed")
    ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold (round 1)")
    ax.set_xlabel("stage-1 score (mean over the sub-models that did not train on the image)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return _png(fig)


def _overlay(image: np.ndarray, amap: np.ndarray, vmax: float) -> np.ndarray:
    """The image with its anomaly map blended in (jet colour map, 0..vmax), (H, W, 3) uint8."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(amap / max(vmax, 1e-12), 0, 1))[..., :3]
    return (np.clip(0.55 * image / 255.0 + 0.45 * heat, 0, 1) * 255).astype(np.uint8)


def _thumb(image: np.ndarray, size: int = 160) -> np.ndarray:
    return resize_image(image, (size, size)) if image.shape[0] > size else image


def report_html(result: AuditResult, data: ImageSet, shown: pd.DataFrame, index: list[int], maps: np.ndarray,
                progress: bool = True) -> str:
    """The self-contained HTML report (every image a data: URI; no scripts, no external references)."""
    s = result.settings
    n_removed = int((~result.table.kept).sum())
    vmax = float(np.quantile(maps, 0.999)) if len(maps) else 1.0
    cards = []
    for (_, row), i, amap in tqdm(list(zip(shown.iterrows(), index, maps)), desc="report", disable=not progress):
        image = data.images[i]
        verdict = "kept" if row.kept else f"removed (round {row.removed_in_round})"
        cards.append(f'<figure><img src="{_png(_thumb(image))}" alt="image"><img src="{_png(_thumb(_overlay(image, amap, vmax)))}" '
                     f'alt="anomaly map"><figcaption>#{row["rank"]} · score {row.score:.4g} · {verdict}<br>'
                     f'<code>{html.escape(row.path)}</code></figcaption></figure>')
    skipped = "".join(f"<tr><td><code>{html.escape(p)}</code></td><td>{html.escape(r)}</td></tr>"
                      for p, r in result.skipped) or '<tr><td colspan="2">none</td></tr>'
    t = s["keep_fraction"]
    rule = "automatic threshold (robust z-score of the stage-1 scores)" if t == AUTO else f"keep the lowest {t:.0%}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lbnb audit: {html.escape(Path(s['folder']).name)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }} code {{ font-size: 0.85em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }} figure {{ margin: 0; width: 330px; }}
figure img {{ width: 160px; height: 160px; margin-right: 4px; image-rendering: pixelated; }}
figcaption {{ font-size: 0.8em; word-break: break-all; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 0.9em; }}
</style></head><body>
<h1>Audit of <code>{html.escape(s['folder'])}</code></h1>
<p><b>{n_removed}</b> of {s['n_images']} images look anomalous and were removed; {len(result.kept)} are kept
(<code>purified.txt</code>). {s['n_skipped']} files could not be read. Stage 1: K = {s['n_subsets']} {s['detector']}
sub-models on disjoint subsets, images at {s['image_size']} px, each image scored by the sub-models that did not
train on it, scores averaged; selection: {rule}; {s['n_rounds']} round(s); seed {s['random_state']}.
The full ranking with every sub-model's score is in <code>suspects.csv</code>.</p>
<h2>Scores</h2><img src="{_histogram(result.table, result.threshold)}" alt="score histogram">
<h2>The {len(cards)} most suspicious images</h2>
<p>Left: the image; right: its anomaly map (mean of the sub-models that did not train on it; one colour scale
for all). Look where the map is hot.</p>
<div class="grid">{''.join(cards)}</div>
<h2>Skipped files</h2><table><tr><th>file</th><th>reason</th></tr>{skipped}</table>
</body></html>
"""

"""Named datasets for the notebook series: the embedded benchmark, or a public dataset prepared by
``data_scripts/`` (see :mod:`lbnb.converters`) under ``DATA_ROOT``.

=============  ===================================  =============================================
``DATASET``    clean (train, test) of a category    noisy training set of a trial at α
=============  ===================================  =============================================
``embedded``   generated (no files)                 SoftPatch protocol, seeded
``mvtec_ad``   ``DATA_ROOT/mvtec_ad/<category>``    SoftPatch protocol, seeded (recorded splits:
``visa``       ``DATA_ROOT/visa/<category>``        ``<folder>/splits/softpatch/``)
``realiad``    ``DATA_ROOT/realiad/fuiad_0.0/<c>``  the published FUIAD split: ``fuiad_<α>/<c>``
=============  ===================================  =============================================

A prepared folder is used only when its completion marker (:data:`MARKER`, written last by the data
scripts) is present, so an interrupted preparation is never mistaken for a dataset.

The notebooks reach these through :mod:`lbnb.data`::

>>> train, test = data.load_dataset("mvtec_ad", "bottle", "data", image_size=256)
>>> contaminate = data.contaminator("mvtec_ad", "data")       # (train, test, α, seed) -> Contaminated
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .contamination import FUIAD_LEVEL, Contaminate, Contaminated, softpatch_protocol
from .embedded import embedded_categories, load_embedded
from .folder_layout import category_dirs, load_folder
from .imageset import ImageSet

DATASETS = ("embedded", "mvtec_ad", "visa", "realiad")
MARKER = ".lbnb-complete.json"
_FUIAD = re.compile(FUIAD_LEVEL)


def _check(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"DATASET must be one of {DATASETS}, got {dataset!r}")


def prepared_folder(dataset: str, data_root) -> Path:
    """``DATA_ROOT/<dataset>``, checked to hold a completed preparation (its marker)."""
    _check(dataset)
    if dataset == "embedded":
        raise ValueError("the embedded dataset has no folder")
    if data_root is None:
        raise ValueError(f"DATASET {dataset!r} needs DATA_ROOT (the --out folder of data_scripts/prepare_{dataset}.py)")
    folder = Path(data_root) / dataset
    if not (folder / MARKER).is_file():
        state = "is incomplete (no completion marker)" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"{folder} {state}; prepare it with: python data_scripts/prepare_{dataset}.py "
                                f"--out {data_root}")
    return folder


def _category_root(dataset: str, data_root) -> Path:
    folder = prepared_folder(dataset, data_root)
    return folder / "fuiad_0.0" if dataset == "realiad" else folder


def categories(dataset: str, data_root=None) -> list[str]:
    """The categories of ``dataset`` (a prepared folder lists those with ``train/`` and ``test/``)."""
    _check(dataset)
    if dataset == "embedded":
        return embedded_categories()
    return [p.name for p in category_dirs(_category_root(dataset, data_root))]


def choose(dataset: str, requested, available: list[str], n_default: int | None = None) -> list[str]:
    """The categories a notebook runs on: ``requested`` (empty: ``available``, or its first ``n_default``).

    The series' defaults name embedded categories; on a prepared dataset that has none of them they give way
    to its first categories (one per requested name, with a printed note). Any other unknown name raises.
    """
    requested = list(requested)
    if not requested:
        return list(available if n_default is None else available[:n_default])
    unknown = [c for c in requested if c not in available]
    if not unknown:
        return requested
    if dataset != "embedded" and not set(requested) & set(available) and set(requested) <= set(embedded_categories()):
        chosen = list(available[:len(requested)])
        print(f"note: {requested} are embedded categories; on {dataset} the series uses {chosen}")
        return chosen
    raise ValueError(f"{dataset} has no categories {unknown}; it has {available}")


def load(dataset: str, category: str, data_root=None, *, image_size: int = 160, random_state: int = 0,
         n_train: int | None = None, n_test_good: int | None = None,
         n_test_per_type: int | None = None) -> tuple[ImageSet, ImageSet]:
    """The clean ``(train, test)`` of one category, images resized to ``image_size`` (S×S).

    ``n_train`` / ``n_test_good`` / ``n_test_per_type`` shrink the sets (embedded: generate that many;
    folders: a random subset seeded by ``random_state``); None keeps the dataset's own counts.
    """
    _check(dataset)
    counts = {k: v for k, v in (("n_train", n_train), ("n_test_good", n_test_good),
                                ("n_test_per_type", n_test_per_type)) if v is not None}
    if dataset == "embedded":
        return load_embedded(category, random_state, image_size=image_size, **counts)
    found = categories(dataset, data_root)
    if category not in found:
        raise ValueError(f"{dataset} has no category {category!r} under {data_root}; it has {found}")
    return load_folder(_category_root(dataset, data_root), category, image_size=image_size,
                       random_state=random_state, **counts)


def contaminator(dataset: str, data_root=None, *, image_size: int = 160, random_state: int = 0,
                 n_train: int | None = None, n_test_good: int | None = None,
                 n_test_per_type: int | None = None) -> Contaminate:
    """How a trial on ``dataset`` obtains its noisy training set: the SoftPatch protocol, or for Real-IAD
    the published split of α (:class:`PublishedSplits`, read with the same size and counts as :func:`load`)."""
    _check(dataset)
    if dataset != "realiad":
        return softpatch_protocol
    folder = prepared_folder(dataset, data_root)
    return PublishedSplits(str(folder), int(image_size), int(random_state),
                           (n_train, n_test_good, n_test_per_type))


@dataclass(frozen=True)
class PublishedSplits:
    """Real-IAD's published FUIAD splits as a :data:`~lbnb.contamination.Contaminate` callable.

    ``folder``: the prepared ``DATA_ROOT/realiad`` holding ``fuiad_<α>/<category>`` in the MVTec AD layout
    (anomalous training images under ``train/<defect>``). A call reads the split of α = ``noise`` for
    ``train.category``; ``random_state`` of the call is ignored (the split is fixed), the subset drawn for
    ``counts`` = (n_train, n_test_good, n_test_per_type) uses the object's own ``random_state``.
    """

    folder: str
    image_size: int
    random_state: int = 0
    counts: tuple = (None, None, None)

    def levels(self) -> dict[float, Path]:
        """α → split folder, for every ``fuiad_<α>`` present."""
        found = {}
        for path in Path(self.folder).iterdir():
            match = _FUIAD.fullmatch(path.name)
            if match and path.is_dir():
                found[float(match.group(1))] = path
        return dict(sorted(found.items()))

    def __call__(self, train: ImageSet, test: ImageSet, noise: float, random_state: int = 0) -> Contaminated:
        levels = self.levels()
        split = next((path for alpha, path in levels.items() if abs(alpha - float(noise)) < 1e-9), None)
        if split is None:
            raise ValueError(f"Real-IAD publishes FUIAD splits for α in {list(levels)}, not α = {noise}")
        n_train, n_test_good, n_test_per_type = self.counts
        noisy_train, noisy_test = load_folder(split, train.category, image_size=self.image_size,
                                              random_state=self.random_state, n_train=n_train,
                                              n_test_good=n_test_good, n_test_per_type=n_test_per_type)
        injected = tuple(noisy_train.ids[noisy_train.labels == 1].tolist())
        return Contaminated(noisy_train, noisy_test, injected, "realiad_fuiad", float(noise),
                            noisy_train.contamination_rate)

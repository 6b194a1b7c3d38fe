"""A disk cache of per-image backbone features, keyed by (extractor configuration, image).

Layout (inspectable)::

    <cache dir>/<config hash>/config.json           the extractor configuration, in words
    <cache dir>/<config hash>/<image id>-<content hash>.npy   features (C, h, w) float32

The image id keeps files readable; the content hash (of the pixels) keeps them correct when two
different images share an id (e.g. the same embedded id under two random states). Writes go to a
temporary file renamed into place, so a crash never leaves a truncated entry.

The cache directory is ``$LBNB_CACHE_DIR`` or ``~/.cache/lbnb/features``; ``LBNB_NO_CACHE=1`` (or
``FeatureExtractor(cache=False)``) disables it. A small in-memory layer avoids re-reading files.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np


def content_hash(image: np.ndarray) -> str:
    """16-hex-digit BLAKE2 hash of an image's shape and pixels."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path | None:
    """``$LBNB_CACHE_DIR`` or ``~/.cache/lbnb/features``; None when ``LBNB_NO_CACHE`` is set."""
    if os.environ.get("LBNB_NO_CACHE", "").strip() not in ("", "0"):
        return None
    return Path(os.environ.get("LBNB_CACHE_DIR") or Path.home() / ".cache" / "lbnb" / "features")


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class FeatureCache:
    """Features of single images under one extractor configuration.

    ``config``: a JSON-able dict describing the extractor (its hash names the folder);
    ``root``: cache directory, or None for memory only; ``memory_items``: in-memory LRU size.
    """

    def __init__(self, config: dict, root: str | os.PathLike | None, memory_items: int = 4096):
        text = json.dumps(config, sort_keys=True)
        self.config_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.folder = Path(root) / self.config_hash if root is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            config_file = self.folder / "config.json"
            if not config_file.exists():
                self._atomic_write(config_file, lambda f: f.write(json.dumps(config, sort_keys=True, indent=2).encode()))
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_items = memory_items

    @staticmethod
    def key(sample_id: str, image: np.ndarray) -> str:
        """File-safe key: the sample id (sanitised, at most 80 characters) plus the content hash."""
        return f"{_SAFE.sub('_', str(sample_id))[-80:]}-{content_hash(image)}"

    def get(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.folder is None:
            return None
        path = self.folder / f"{key}.npy"
        try:
            value = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None
        self._remember(key, value)
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value, dtype=np.float32)
        self._remember(key, value)
        if self.folder is not None:
            self._atomic_write(self.folder / f"{key}.npy", lambda f: np.save(f, value, allow_pickle=False))

    def _remember(self, key, value):
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)

    @staticmethod
    def _atomic_write(path: Path, write) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

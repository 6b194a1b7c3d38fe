"""Reading and resizing image and mask files: any mode in, (H, W, 3) uint8 RGB out."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# -- reading images ------------------------------------------------------------------------
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as (H, W, 3) uint8 RGB.

    Grayscale is replicated to three channels; 16-bit images are scaled to 8 bit;
    RGBA/LA/palette images are converted (alpha composited on black, with a warning when it
    is not fully opaque). Unreadable or truncated files raise ``ValueError`` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb8(im, path)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def _to_rgb8(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() < 255:
            warnings.warn(f"{path}: transparent pixels composited on black", stacklevel=3)
        rgb = np.asarray(im.convert("RGB")).astype(np.float32)
        return np.round(rgb * (alpha[..., None] / 255.0)).astype(np.uint8)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as (H, W) bool: True where the mask is above half its range."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA"):  # palette indices are not intensities
                im = im.convert("RGB")
            elif im.mode == "LA":  # drop alpha: it is not part of the mask
                im = im.getchannel("L")
            arr = np.asarray(im)
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot read mask {path}: {err}") from err
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2)
    top = 65535 if arr.dtype == np.uint16 else (1 if arr.dtype == bool else 255)
    return arr.astype(np.float64) > top / 2


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, 3) uint8 image to ``size`` = (H', W')."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W) bool mask, binarised with > 0.5 (DESIGN §6)."""
    if mask.shape == tuple(size):
        return mask
    im = Image.fromarray(mask.astype(np.float32))
    return np.asarray(im.resize((size[1], size[0]), Image.BILINEAR)) > 0.5

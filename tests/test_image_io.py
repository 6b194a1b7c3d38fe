"""Tests for lbnb.image_io: any image mode in, (H, W, 3) uint8 RGB out; masks; resizing."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from lbnb.image_io import read_image, read_mask, resize_image, resize_mask


def _rgb(h=12, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- read_image: modes -------------------------------------------------------------------------------
def test_rgb_png_is_read_exactly(tmp_path):
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = _rgb()[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(str(tmp_path / "g.png"))  # str paths work too
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_opaque_rgba_gives_rgb_without_warning(tmp_path):
    arr = _rgb()
    rgba = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "o.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(out, arr)


def test_transparent_rgba_is_composited_on_black_with_warning(tmp_path):
    arr = np.full((4, 6, 3), 200, np.uint8)
    alpha = np.array([[0, 255, 128, 64, 255, 0]] * 4, np.uint8)
    Image.fromarray(np.concatenate([arr, alpha[..., None]], axis=2), "RGBA").save(tmp_path / "t.png")
    with pytest.warns(UserWarning, match="t.png"):
        out = read_image(tmp_path / "t.png")
    expected = np.round(200.0 * alpha.astype(float) / 255.0).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [200, 200, 200]


def test_palette_image_is_converted_to_rgb(tmp_path):
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    idx = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette)
    im.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = read_image(tmp_path / "p.png")
    table = np.array(palette, np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(out, table[idx])


def test_16bit_grayscale_is_scaled_to_8bit(tmp_path):
    arr = np.array([[0, 65535, 257, 32768], [1000, 65535 // 2, 128, 65280]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out[..., 0], np.round(arr / 65535 * 255).astype(np.uint8))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and out[0, 2, 0] == 1
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_dark_16bit_image_is_not_mistaken_for_8bit(tmp_path):
    arr = np.array([[0, 200], [255, 100]], np.uint16)  # max <= 255 but still 16-bit data
    Image.fromarray(arr).save(tmp_path / "dark.png")
    out = read_image(tmp_path / "dark.png")
    assert out.max() <= 1  # 255 / 65535 * 255 = 0.99


def test_jpeg_is_read_approximately(tmp_path):
    yy, xx = np.mgrid[:32, :32]
    arr = np.stack([yy * 8, xx * 8, 255 - yy * 4], axis=2).astype(np.uint8)  # smooth: JPEG-friendly
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - arr).mean() < 3


# -- read_image: errors --------------------------------------------------------------------------------
def test_truncated_png_raises_valueerror_naming_the_file(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_non_image_file_raises_valueerror_naming_the_file(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    with pytest.raises(ValueError, match="notes.png"):
        read_image(tmp_path / "notes.png")


def test_missing_file_raises_valueerror_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="absent.png"):
        read_image(tmp_path / "absent.png")


def test_read_mask_errors_name_the_file(tmp_path):
    (tmp_path / "m.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="m.png"):
        read_mask(tmp_path / "m.png")


# -- read_mask ---------------------------------------------------------------------------------------------
def test_read_mask_8bit_thresholds_at_half_range(tmp_path):
    arr = np.array([[0, 1, 127, 128, 200, 255]], np.uint8)
    Image.fromarray(arr, "L").save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == bool
    assert out.tolist() == [[False, False, False, True, True, True]]


def test_read_mask_16bit_thresholds_at_half_range(tmp_path):
    arr = np.array([[0, 255, 1000, 32767, 32768, 65535]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m16.png").tolist() == [[False, False, False, False, True, True]]


def test_read_mask_rgb_and_bilevel(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 2] = (0, 0, 200)
    rgb[0, 1] = (100, 100, 100)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert read_mask(tmp_path / "rgb.png").tolist() == [[True, False, False], [False, False, True]]
    bits = np.array([[True, False], [False, True]])
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    assert read_mask(tmp_path / "b.png").tolist() == bits.tolist()


def test_read_mask_palette_uses_colours_not_indices(tmp_path):
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 255, 255, 255])
    im.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").tolist() == [[False, True], [True, False]]


def test_read_mask_la_ignores_alpha(tmp_path):
    lum = np.array([[0, 255], [255, 0]], np.uint8)
    la = np.stack([lum, np.full_like(lum, 255)], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert read_mask(tmp_path / "la.png").tolist() == [[False, True], [True, False]]


# -- resizing --------------------------------------------------------------------------------------------------
def test_resize_image_shape_dtype_and_identity():
    arr = _rgb(12, 10)
    assert resize_image(arr, (12, 10)) is arr
    out = resize_image(arr, (6, 20))
    assert out.shape == (6, 20, 3) and out.dtype == np.uint8
    flat = np.full((12, 10, 3), 77, np.uint8)
    assert (resize_image(flat, (31, 17)) == 77).all()


def test_resize_mask_binarises_with_half_threshold():
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True  # left half
    out = resize_mask(mask, (8, 8))
    assert out.dtype == bool and out.shape == (8, 8)
    # bilinear upsampling: columns 0-3 map to input coords <= 1.25 (value >= 0.75 ... 1), column 4 -> 1.75
    assert out[:, :4].all() and not out[:, 4:].any()
    assert resize_mask(mask, (4, 4)) is mask


def test_resize_mask_drops_thin_structures_below_half_coverage():
    mask = np.zeros((8, 8), bool)
    mask[:, 3] = True  # one column of 8: covers 25 % of each 2x2 block when halving
    out = resize_mask(mask, (4, 4))
    assert not out.any()
    mask[:, 2:4] = True  # a full 2-column block: fully covered
    out = resize_mask(mask, (4, 4))
    assert out[:, 1].all() and out.sum() == 4


def test_resize_mask_keeps_area_roughly():
    yy, xx = np.mgrid[:100, :100]
    disk = (yy - 50) ** 2 + (xx - 50) ** 2 < 30 ** 2
    small = resize_mask(disk, (50, 50))
    assert abs(small.mean() - disk.mean()) < 0.01

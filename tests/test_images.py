"""The one image loader: EXIF orientation as a viewer shows it, every pixel format scaled (not
clipped) to 8 bits, every way an image comes in, and errors that name the image."""

import io

import numpy as np
import pytest
from PIL import Image

from tcdcn_jax import images

ORIENTATION = 0x0112  # the EXIF tag


def _marked(h: int = 48, w: int = 80) -> np.ndarray:
    """Grey stored pixels: dark, with one bright block in the stored top-left corner."""
    arr = np.full((h, w), 30, np.uint8)
    arr[:16, :16] = 230
    return arr


def _jpeg_with_orientation(arr: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    out = io.BytesIO()
    Image.fromarray(arr).convert("RGB").save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _bright_corner(grey: np.ndarray) -> str:
    h, w = grey.shape
    corners = {"top-left": grey[:8, :8], "top-right": grey[:8, w - 8:],
               "bottom-left": grey[h - 8:, :8], "bottom-right": grey[h - 8:, w - 8:]}
    return max(corners, key=lambda k: corners[k].mean())


# 6: the stored pixels need a quarter turn clockwise to stand upright; 8: anticlockwise.
@pytest.mark.parametrize("orientation, corner, turns", [(1, "top-left", 0), (6, "top-right", -1),
                                                        (8, "bottom-left", 1)])
def test_exif_orientation_is_applied_for_every_kind_of_input(tmp_path, orientation, corner, turns):
    stored = _marked()
    data = _jpeg_with_orientation(stored, orientation)
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    with Image.open(path) as opened:
        loaded = [images.load_image(path), images.load_image(str(path)), images.load_image(data),
                  images.load_image(io.BytesIO(data)), images.load_image(opened)]
    shown = np.rot90(stored, k=turns)
    for arr in loaded:
        grey = images.to_grey(arr)
        assert grey.shape == shown.shape == ((80, 48) if turns else (48, 80))
        assert _bright_corner(grey) == corner
        assert np.abs(grey.astype(int) - shown).mean() < 3  # JPEG noise only
    for arr in loaded[1:]:
        np.testing.assert_array_equal(arr, loaded[0])


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16).repeat(3, 0)
    Image.fromarray(values).save(tmp_path / "deep.png")
    want = [0, 1, 128, 255]
    np.testing.assert_array_equal(images.load_image(tmp_path / "deep.png")[0], want)
    np.testing.assert_array_equal(images.load_image(values)[0], want)
    np.testing.assert_array_equal(images.load_image(Image.fromarray(values))[0], want)


def test_float_images_follow_the_stated_rule():
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(images.load_image(unit)[0], [0, 128, 255])
    byte_range = np.array([[0.0, 127.6, 300.0, -4.0, np.nan]], np.float64)
    np.testing.assert_array_equal(images.load_image(byte_range)[0], [0, 128, 255, 0, 0])
    np.testing.assert_array_equal(images.load_image(Image.fromarray(unit, mode="F"))[0],
                                  [0, 128, 255])


def test_channels_and_bool():
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: the colour is kept
    out = images.load_image(rgba)
    assert out.shape == (4, 5, 3) and np.all(out[..., 0] == 200)
    grey_alpha = np.stack([np.full((4, 5), 90, np.uint8), np.zeros((4, 5), np.uint8)], -1)
    np.testing.assert_array_equal(images.load_image(grey_alpha), np.full((4, 5), 90))
    np.testing.assert_array_equal(images.load_image(np.eye(3, dtype=bool)), np.eye(3) * 255)
    la = Image.fromarray(grey_alpha, mode="LA")
    np.testing.assert_array_equal(images.load_image(la), np.full((4, 5), 90))
    assert images.load_image(Image.new("P", (5, 4))).shape == (4, 5, 3)
    # RGB -> grey is Pillow's ITU-R 601-2 luma.
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    pillow_luma = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(images.to_grey(rgb), pillow_luma)


def test_bad_input_gives_one_line_naming_the_image(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg: no such file"):
        images.load_image(tmp_path / "missing.jpg")
    good = _jpeg_with_orientation(_marked(), 1)
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"(?i)cut\.jpg: not a readable image \(.*truncated"):
        images.load_image(tmp_path / "cut.jpg")
    with pytest.raises(ValueError, match="image bytes: not a readable image"):
        images.load_image(b"not an image at all")
    with pytest.raises(ValueError, match="upload.png: not a readable image"):
        images.load_image(b"\x89PNG garbage", name="upload.png")
    with pytest.raises(ValueError, match="dtype int64 has no known range"):
        images.load_image(np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 5\)"):
        images.load_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="no pixels"):
        images.load_image(np.zeros((0, 4), np.uint8))
    for err in (ValueError, FileNotFoundError):
        try:
            images.load_image(b"x" if err is ValueError else tmp_path / "none.png")
        except err as e:
            assert "\n" not in str(e)

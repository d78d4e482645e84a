"""Image reading in every mode, the face-box rule and the stored crop's geometry."""

import numpy as np
import pytest
from PIL import Image

from tcdcn_jax.data import boxes
from tcdcn_jax.data.image_io import DataError, load_grey
from tests.data import fixtures as fx


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"),
                                       ("I;16", "PNG"), ("RGB", "JPEG"), ("L", "JPEG")])
def test_every_mode_loads_as_grey(tmp_path, mode, fmt):
    grey = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (30, 1))
    path = tmp_path / f"img.{fmt.lower()}"
    fx.write_image(path, grey, mode=mode, fmt=fmt)
    got = load_grey(path)
    assert got.dtype == np.uint8 and got.shape == grey.shape
    tol = {"JPEG": 3, "PNG": 0}[fmt] + (3 if mode == "P" else 0)
    assert np.abs(got.astype(int) - grey).max() <= tol


def test_sixteen_bit_uses_the_full_range(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16).repeat(4, 0)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_grey(tmp_path / "a.png")[0], [0, 128, 255])


def test_dataset_photos_are_read_upright(tmp_path):
    upright = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (20, 1))  # 20 x 30, brighter to the right
    exif = Image.Exif()
    exif[0x0112] = 8  # stored a quarter turn clockwise; viewers turn it back anticlockwise
    Image.fromarray(np.rot90(upright, k=-1)).save(tmp_path / "a.png", exif=exif.tobytes())
    np.testing.assert_array_equal(load_grey(tmp_path / "a.png"), upright)


def test_missing_and_unreadable_images_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing image .*nope.jpg \(listed at list.txt:4\)"):
        load_grey(tmp_path / "nope.jpg", context="list.txt:4")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="unreadable image .*bad.jpg"):
        load_grey(tmp_path / "bad.jpg")


def test_five_point_box_rule():
    # The reference shape itself gives the unit box; the rule moves and scales with the face.
    np.testing.assert_allclose(boxes.box_from_five(boxes.REFERENCE_5), [0, 0, 1, 1], atol=1e-12)
    pts = boxes.REFERENCE_5 * 80 + [30, 12]
    np.testing.assert_allclose(boxes.box_from_five(pts), [30, 12, 80, 80], atol=1e-9)
    # A rolled face keeps its size: rotation does not shrink the box.
    theta = np.radians(20)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rolled = (pts - [70, 52]) @ rot.T + [70, 52]
    np.testing.assert_allclose(boxes.box_from_five(rolled), [30, 12, 80, 80], atol=1e-9)
    np.testing.assert_allclose(boxes.tight_box(np.array([[1, 5], [4, 2], [3, 9]])), [1, 2, 3, 7])


def test_crop_puts_a_pixel_where_the_geometry_says():
    grey = np.full((200, 300), 10, np.uint8)
    grey[120, 170] = 255  # pixel centre (x, y) = (170, 120)
    box = np.array([140.0, 90.0, 60.0, 60.0])
    crop, origin, scale = boxes.crop_face(grey, box)
    x, y = boxes.to_crop(np.array([[170.0, 120.0]]), origin, scale)[0]
    assert crop.shape == (boxes.CROP_SIZE, boxes.CROP_SIZE)
    r, c = np.unravel_index(np.argmax(crop), crop.shape)
    assert abs(c - x) <= 1 and abs(r - y) <= 1
    # Box centre -> crop centre; long side -> 80 px.
    np.testing.assert_allclose(boxes.to_crop(np.array([[170.0, 120.0]]), origin, scale)[0], 63.5)
    assert scale * 60 == pytest.approx(boxes.CROP_SIZE / boxes.CROP_MARGIN)
    # Beyond the photo the edge repeats (no black frame).
    crop2, _, _ = boxes.crop_face(grey, np.array([-40.0, -40.0, 60.0, 60.0]))
    assert crop2.min() == 10


def test_five_point_rule_approximates_the_68_point_box_on_frontal_faces():
    d = fx.faces(40, 5)
    frontal = d["pose"] == 2
    derived = np.stack([boxes.box_from_five(p) for p in d["landmarks5"][frontal]])
    tight = d["box"][frontal]  # the synthetic world's box is the tight 68-point box
    lo = np.maximum(derived[:, :2], tight[:, :2])
    hi = np.minimum(derived[:, :2] + derived[:, 2:], tight[:, :2] + tight[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    iou = inter / (np.prod(derived[:, 2:], 1) + np.prod(tight[:, 2:], 1) - inter)
    assert frontal.sum() >= 5 and np.median(iou) > 0.75

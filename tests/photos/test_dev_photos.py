"""The dev photos: dlib's imglab XML reader, matching detections to labelled faces, the evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from tcdcn_jax.photos import dev_set, imglab, photo_eval

XML = """<?xml version='1.0'?><dataset><images>
<image file='a.jpg'><box top='5' left='6' width='7' height='8'>{parts}</box></image>
</images></dataset>"""


def _write(tmp_path, parts):
    path = tmp_path / "faces.xml"
    path.write_text(XML.format(parts=parts))
    return path


def test_reads_boxes_and_points(tmp_path):
    parts = "".join(f"<part name='{i:02d}' x='{i}' y='{2 * i}'/>" for i in range(68))
    (img,) = imglab.read_imglab(_write(tmp_path, parts))
    assert img.path == str(tmp_path / "a.jpg")
    np.testing.assert_array_equal(img.boxes_Nx4, [[6, 5, 7, 8]])
    assert img.lm_NxKx2.shape == (1, 68, 2) and img.lm_NxKx2[0, 67].tolist() == [67, 134]


@pytest.mark.parametrize("parts, message", [
    ("<part name='00' x='1' y='2'/>", "a face has 1 of 68 parts"),
    ("<part name='99' x='1' y='2'/>", "part 99 outside 0..67"),
    ("<part name='eye' x='1' y='2'/>", "part name 'eye' is not a number"),
    ("<part name='00' x='left' y='2'/>", "<part> needs a number x=..., got 'left'"),
])
def test_bad_labels_name_the_file_and_image(tmp_path, parts, message):
    with pytest.raises(ValueError, match=f"faces.xml: a.jpg: {message}"):
        imglab.read_imglab(_write(tmp_path, parts))


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<dataset>")
    with pytest.raises(ValueError, match="bad.xml: not a readable imglab XML file"):
        imglab.read_imglab(bad)


def test_dev_photos_hold_43_labelled_faces(dev):
    assert dev.num_faces == 43 and len(dev.labelled) == 9
    assert set(dev_set.NO_FACE_PHOTOS + dev_set.UNLABELLED_PHOTOS) <= set(dev.rgb)


def test_missing_dev_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is .* the dev-photos folder"):
        dev_set.load(str(tmp_path))


def test_match_is_greedy_by_overlap_and_one_to_one():
    true = np.array([[0, 0, 10, 10], [20, 0, 10, 10], [50, 50, 10, 10]], np.float64)
    found = np.array([[21, 0, 10, 10], [1, 1, 10, 10], [2, 2, 10, 10], [200, 0, 5, 5]], np.float64)
    assert dev_set.match(true, found).tolist() == [1, 0, -1]
    assert dev_set.match(true, np.zeros((0, 4))).tolist() == [-1, -1, -1]


def test_perturbed_boxes_and_spread():
    boxes = photo_eval.perturbed_boxes((100, 100, 50, 40))
    assert boxes.shape == (27, 4)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    np.testing.assert_allclose(np.unique(centres[:, 0]), [120, 125, 130])
    np.testing.assert_allclose(np.unique(boxes[:, 2]), [45, 50, 55])
    lm = np.zeros((3, 68, 2))
    assert photo_eval.spread(lm) == 0
    lm[0, :, 0] = 3  # one of three off by 3 px: RMS distance from the mean sqrt(2)
    assert photo_eval.spread(lm) == pytest.approx(np.sqrt(2))


def test_evaluation_table_of_the_default_detector(dev):
    from tests.photos.conftest import DEV_DIR

    (row,) = photo_eval.evaluate(str(DEV_DIR), None, ["haar"], rounds=1)
    assert row.detector == "haar" and row.num_faces == 43 and 30 <= row.found <= 43
    assert row.ms_per_photo > 0 and row.nme == {}
    table = photo_eval.format_table([row], "1.0 1.0 1.0")
    assert "| haar | " in table and f"{row.found}/43" in table and "load average" in table

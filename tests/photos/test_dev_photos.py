"""The dev photos: dlib's imglab XML reader, matching faces to labelled ones, the evaluation through
the Predictor, and the done-when bar of the default detector."""

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


def test_the_default_detector_finds_every_labelled_face_through_the_predictor(dev):
    """Done when: the Predictor's defaults (the authors' weights, detector 'auto') find all 43
    labelled dev faces with at most 2 false positives (the dogs photo included)."""
    from tcdcn_jax.photos.predictor import Predictor
    from tests.photos.test_predictor import official_dir

    predictor = Predictor.from_path(official_dir() / "model.mat")
    names = list(dev.rgb)
    faces = dict(zip(names, predictor.predict_many([dev.rgb[n] for n in names])))
    matched = photo_eval.match_faces(dev, faces)
    assert (matched.found, dev.num_faces) == (43, 43) and matched.false_positives <= 2
    assert all(f.score is not None for found in faces.values() for f in found)
    # Agreement with dlib's machine labels (not accuracy): what evaluate_photos prints, 0.146.
    assert photo_eval.box_fit.nme(matched.pred_NxKx2, matched.true_NxKx2).mean() < 0.16


def test_evaluation_table(dev):
    from tests.photos.conftest import DEV_DIR
    from tests.photos.test_predictor import official_dir

    columns = ("single", "single+refine")  # Averaged is tested in test_predictor
    rows = photo_eval.evaluate(str(DEV_DIR), str(official_dir() / "model.mat"), ["haar"],
                               rounds=0, columns=columns)
    assert [r.detector for r in rows] == ["haar", "labels"]
    haar, labels = rows
    assert haar.num_faces == 43 and 30 <= haar.found <= 43 and haar.ms_per_photo > 0
    assert set(haar.nme) == set(columns)
    # Haar's loose boxes: re-cropping brings the points closer to dlib's labels.
    assert haar.nme["single+refine"] < haar.nme["single"]
    assert labels.found == 43 and labels.nme["single"] < 0.16
    table = photo_eval.format_table(rows, "1.0 1.0 1.0")
    assert "| haar | " in table and f"{haar.found}/43" in table and "load average" in table


def test_folder_speed_compares_streaming_with_one_photo_at_a_time(dev):
    """The figures evaluate_photos prints (no timing threshold: speed is the benchmark's job)."""
    import io

    from PIL import Image

    from tcdcn_jax.photos.predictor import Predictor
    from tests.photos.test_predictor import official_dir

    photos = photo_eval.folder_640(dev, 3)
    assert len(photos) == 3 and Image.open(io.BytesIO(photos[2])).size == (640, 480)
    rates = photo_eval.folder_speed(Predictor.from_path(official_dir() / "model.mat"), photos,
                                    rounds=1, workers=(2,))
    assert set(rates) == {"one_at_a_time", "stream_2_workers"} and min(rates.values()) > 0

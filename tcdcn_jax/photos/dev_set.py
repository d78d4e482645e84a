"""The dev photos (shared/reference/dev-photos): labelled faces, detections matched to them.

Their 68 points come from dlib's shape_predictor_68_face_landmarks, not from people, and their boxes
from dlib's HOG detector: figures from them measure agreement with dlib, and recall on faces that
dlib found, not accuracy.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from PIL import Image

from tcdcn_jax.photos import box_maps, detectors, imglab

LABEL_FILES = ("training_with_face_landmarks.xml", "testing_with_face_landmarks.xml")
NO_FACE_PHOTOS = ("dogs.jpg",)  # every detection on these is a false positive
UNLABELLED_PHOTOS = ("bald_guys.jpg",)  # faces not labelled: detections are only counted
MIN_IOU = 0.3  # a detection belongs to a labelled face when their boxes overlap this much


@dataclasses.dataclass(frozen=True)
class DevSet:
    """rgb: file name -> uint8 H x W x 3; labelled: the labelled photos (file name -> labels)."""

    folder: str
    rgb: dict[str, np.ndarray]
    labelled: dict[str, imglab.LabelledImage]

    @property
    def num_faces(self) -> int:
        return sum(len(lab.lm_NxKx2) for lab in self.labelled.values())


def load(folder: str) -> DevSet:
    """The dev photos of `folder`: FileNotFoundError naming what is missing."""
    labelled = {}
    for name in LABEL_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file (is {folder} the dev-photos folder?)")
        labelled.update({os.path.basename(lab.path): lab for lab in imglab.read_imglab(path)})
    rgb = {}
    for name in sorted(labelled) + list(NO_FACE_PHOTOS + UNLABELLED_PHOTOS):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        with Image.open(path) as im:
            rgb[name] = np.asarray(im.convert("RGB"))
    return DevSet(folder, rgb, labelled)


def iou(a_Nx4: np.ndarray, b_Mx4: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of (left, top, width, height) boxes."""
    a = np.asarray(a_Nx4, np.float64).reshape(-1, 1, 4)
    b = np.asarray(b_Mx4, np.float64).reshape(1, -1, 4)
    w = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def match(true_Nx4: np.ndarray, found_Mx4: np.ndarray, min_iou: float = MIN_IOU) -> np.ndarray:
    """(N,) index of the detection matched to each labelled box, -1 for none: greedy, highest IoU
    first, each detection used once."""
    overlap = iou(true_Nx4, found_Mx4)
    out = np.full(len(overlap), -1, np.int64)
    if overlap.size == 0:
        return out
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, overlap.shape)
        if overlap[i, j] < min_iou:
            break
        if out[i] < 0 and j not in out:
            out[i] = j
    return out


@dataclasses.dataclass(frozen=True)
class DetectorRun:
    """One detector over the dev set: detections per photo, labelled face -> detection index, seconds
    per photo (best of the rounds)."""

    name: str
    found: dict[str, detectors.Detections]
    matches: dict[str, np.ndarray]
    seconds: dict[str, float]

    def counts(self) -> dict[str, int]:
        """faces found, false positives (labelled photos + no-face photos), unlabelled detections."""
        hits = sum(int((m >= 0).sum()) for m in self.matches.values())
        fp = sum(len(self.found[n].scores_N) - int((m >= 0).sum()) for n, m in self.matches.items())
        fp += sum(len(self.found[n].scores_N) for n in NO_FACE_PHOTOS if n in self.found)
        unlabelled = sum(len(self.found[n].scores_N) for n in UNLABELLED_PHOTOS if n in self.found)
        return {"found": hits, "false_positives": fp, "unlabelled": unlabelled}

    def matched(self, dev: DevSet) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list]:
        """(detector boxes_Nx4, points_Nx5x2 or None, labelled lm_NxKx2, [(photo, face index)]) of the
        labelled faces this detector found."""
        boxes, points, lms, ids = [], [], [], []
        for name, lab in dev.labelled.items():
            det = self.found[name]
            for i, j in enumerate(self.matches[name]):
                if j >= 0:
                    boxes.append(det.boxes_Nx4[j])
                    points.append(None if det.points_Nx5x2 is None else det.points_Nx5x2[j])
                    lms.append(lab.lm_NxKx2[i])
                    ids.append((name, i))
        pts = None if not points or points[0] is None else np.stack(points)
        return (np.asarray(boxes, np.float32).reshape(-1, 4), pts,
                np.asarray(lms, np.float32).reshape(-1, 68, 2), ids)


def run_detectors(dev: DevSet, detector_list: list, rounds: int = 3, **detect_kwargs
                  ) -> list[DetectorRun]:
    """Every detector on every photo, in alternating rounds (each round runs all of them in turn, so
    a change of machine load hits them alike); time per photo is the best round's."""
    runs = {d.name: ({}, {}) for d in detector_list}
    for _ in range(max(1, rounds)):
        for det in detector_list:
            found, seconds = runs[det.name]
            for name, rgb in dev.rgb.items():
                start = time.perf_counter()
                found[name] = detectors.detect(det, rgb, **detect_kwargs)
                took = time.perf_counter() - start
                seconds[name] = min(seconds.get(name, np.inf), took)
    out = []
    for det in detector_list:
        found, seconds = runs[det.name]
        # Matched on the tight box of the labelled points: neutral to every detector's convention.
        matches = {n: match(box_maps.tight_box(lab.lm_NxKx2), found[n].boxes_Nx4)
                   for n, lab in dev.labelled.items()}
        out.append(DetectorRun(det.name, found, matches, seconds))
    return out

"""From a detector's box (or its 5 points) to a model's box convention, as fitted data.

Every detector has its own idea of a face box and every model expects its own:
- 'tight': our models' convention, the box tightly enclosing the 68 points;
- 'official': the authors' released model, whose tool crops a square of side = the box width from the
  box's top-left corner. Its box is a square around the face (their bounding_box.jpg); which square,
  relative to the 68 points, is fitted on the dev photos as `OfficialBox` (see experiments/
  fit_box_maps.py), not assumed.

A map has four coefficients on a source box (left, top, width, height) with centre (cx, cy):

    centre = (cx + dx * width, cy + dy * height),   size = (sw * width, sh * height)

The fitted numbers, with their residual spread, live in box_maps.json next to this file (written by
experiments/fit_box_maps.py through box_fit.fit_all). Maps read the detector's box, not its 5 points:
a square on the points (centred on their mean, side = the eyes-to-mouth distance) was tried and fits
worse for both detectors that give points (mean IoU with the target box 0.77-0.81 against 0.87-0.90
from the box), as the points' centre shifts with a turned head.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import numpy as np

MAPS_FILE = os.path.join(os.path.dirname(__file__), "box_maps.json")
CONVENTIONS = ("tight", "official")


@dataclasses.dataclass(frozen=True)
class BoxMap:
    """dx, dy, sw, sh as in the module docstring; spread_* is the residual standard deviation of each
    coefficient over the faces it was fitted on (the error to expect on one face, in units of the
    source box's width or height)."""

    dx: float
    dy: float
    sw: float
    sh: float
    spread: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    num_faces: int = 0

    def apply(self, box_Nx4: np.ndarray) -> np.ndarray:
        """Source boxes (N, 4) -> target boxes (N, 4), float32."""
        box_Nx4 = np.asarray(box_Nx4, np.float64).reshape(-1, 4)
        w, h = box_Nx4[:, 2], box_Nx4[:, 3]
        cx = box_Nx4[:, 0] + w / 2 + self.dx * w
        cy = box_Nx4[:, 1] + h / 2 + self.dy * h
        tw, th = self.sw * w, self.sh * h
        return np.stack([cx - tw / 2, cy - th / 2, tw, th], axis=1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class OfficialBox:
    """The authors' model's box for a face, from its 68 points: a square of side k * s centred at the
    points' tight-box centre + (a * s, b * s), s = the larger side of the tight box. Fitted to minimise
    the released model's NME68 on the dev photos."""

    a: float
    b: float
    k: float

    def from_points(self, lm_NxKx2: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) (left, top, side, side) for landmark sets (N, K, 2)."""
        lm_NxKx2 = np.asarray(lm_NxKx2, np.float64)
        lo, hi = lm_NxKx2.min(axis=1), lm_NxKx2.max(axis=1)
        s = (hi - lo).max(axis=1)
        cx = (lo[:, 0] + hi[:, 0]) / 2 + self.a * s
        cy = (lo[:, 1] + hi[:, 1]) / 2 + self.b * s
        side = self.k * s
        return np.stack([cx - side / 2, cy - side / 2, side, side], axis=1).astype(np.float32)


def tight_box(lm_NxKx2: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) tightly enclosing each landmark set: our models' convention."""
    lm_NxKx2 = np.asarray(lm_NxKx2, np.float64)
    lo, hi = lm_NxKx2.min(axis=1), lm_NxKx2.max(axis=1)
    return np.concatenate([lo, hi - lo], axis=1).astype(np.float32)


def coefficients(src_Nx4: np.ndarray, dst_Nx4: np.ndarray) -> np.ndarray:
    """Per-face (dx, dy, sw, sh) (N, 4) that map each source box exactly onto its target."""
    src, dst = np.asarray(src_Nx4, np.float64), np.asarray(dst_Nx4, np.float64)
    w, h = src[:, 2], src[:, 3]
    dx = (dst[:, 0] + dst[:, 2] / 2 - src[:, 0] - w / 2) / w
    dy = (dst[:, 1] + dst[:, 3] / 2 - src[:, 1] - h / 2) / h
    return np.stack([dx, dy, dst[:, 2] / w, dst[:, 3] / h], axis=1)


def fit(src_Nx4: np.ndarray, dst_Nx4: np.ndarray) -> BoxMap:
    """The map taking source boxes to target boxes: each coefficient is the median over faces (a
    turned head or a loose detection moves the mean); spread is the residual standard deviation."""
    coef_Nx4 = coefficients(src_Nx4, dst_Nx4)
    if len(coef_Nx4) < 3:
        raise ValueError(f"fitting a box map needs at least 3 faces, got {len(coef_Nx4)}")
    med = np.median(coef_Nx4, axis=0)
    spread = np.sqrt(np.mean((coef_Nx4 - med) ** 2, axis=0))
    return BoxMap(*(round(float(v), 4) for v in med),
                  spread=tuple(round(float(v), 4) for v in spread), num_faces=len(coef_Nx4))


@functools.lru_cache(maxsize=4)
def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable box map file ({err})") from None


def official_box(path: str = MAPS_FILE) -> OfficialBox:
    """The authors' model's fitted box convention."""
    return OfficialBox(**_read(path)["official_box"])


def entry_to_map(entry: dict) -> BoxMap:
    """A BoxMap from its JSON entry (extra keys, such as fit figures, ignored)."""
    try:
        return BoxMap(*(float(entry[k]) for k in ("dx", "dy", "sw", "sh")),
                      spread=tuple(float(v) for v in entry.get("spread", (0, 0, 0, 0))),
                      num_faces=int(entry.get("num_faces", 0)))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"a box map entry needs numbers dx, dy, sw, sh; got {entry} ({err})") \
            from None


def load(detector: str, convention: str, path: str = MAPS_FILE) -> BoxMap:
    """The fitted map from `detector`'s box to `convention` ('tight' or 'official')."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    maps = _read(path)["maps"]
    if detector not in maps:
        raise ValueError(f"no box map for detector {detector!r} in {path}; fitted: "
                         f"{', '.join(sorted(maps))}")
    return entry_to_map(maps[detector][convention])


def to_convention(detector: str, convention: str, boxes_Nx4: np.ndarray,
                  path: str = MAPS_FILE) -> np.ndarray:
    """A detector's boxes (N, 4) -> boxes (N, 4) in a model's convention."""
    return load(detector, convention, path).apply(boxes_Nx4)

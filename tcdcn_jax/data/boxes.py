"""The one face-box convention for real datasets, and the stored crop with margin around it.

Box convention (common.md): (left, top, width, height), the box that tightly encloses the 68 iBUG
points. Every real source stores this box, whatever box the source itself ships (that one is kept
as `source_box` in the records, for users who want it):

- 68 and 98 points: the tight axis-aligned box of all points (WFLW's pupils 96/97 lie inside it).
- 5 points: a least-squares similarity fit (scale, rotation, translation) of REFERENCE_5 to the
  five points; the box is the square whose centre is the fit's image of (0.5, 0.5) and whose side is
  the fit's scale. The rotation only improves the scale estimate: the box stays axis-aligned.
  REFERENCE_5 is the mean frontal 5-point shape in units of the tight 68-point box (eye centres,
  nose tip, mouth corners), made symmetric and rounded; it agrees within ~0.02 box with the mean
  shape of the synthetic world and with the authors' released 68-point model.

Stored crop: a square of CROP_MARGIN x the box's long side, centred on the box centre, resized to
CROP_SIZE x CROP_SIZE (so the long side of the box spans 80 px). Parts beyond the photo repeat its edge
pixels, so a rotation during augmentation finds plausible pixels instead of black corners.
Geometry follows the project convention (pixel centres at integer coordinates): with crop origin
(x0, y0) (pixel-edge coordinates of the crop's top-left corner) and scale s (crop px per photo px), a
photo point p maps to (p + 0.5 - origin) * s - 0.5.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tcdcn_jax.layouts import to_five

CROP_SIZE = 128
CROP_MARGIN = 1.6

REFERENCE_5 = np.array([(0.285, 0.175), (0.715, 0.175), (0.5, 0.43), (0.3, 0.635), (0.7, 0.635)],
                       np.float64)


def tight_box(lm_Kx2: np.ndarray) -> np.ndarray:
    """(left, top, width, height) of the axis-aligned box through the extreme points."""
    lm = np.asarray(lm_Kx2, np.float64)
    lo, hi = lm.min(axis=0), lm.max(axis=0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def box_from_five(lm_5x2: np.ndarray) -> np.ndarray:
    """The convention's box from 5 points (see the module docstring)."""
    p = np.asarray(lm_5x2, np.float64)
    q = REFERENCE_5
    pc, qc = p - p.mean(0), q - q.mean(0)
    # Similarity p ~ s R q + t in complex form: a = s e^{i theta} = sum(p conj q) / sum |q|^2.
    pz, qz = pc[:, 0] + 1j * pc[:, 1], qc[:, 0] + 1j * qc[:, 1]
    a = np.sum(pz * np.conj(qz)) / np.sum(np.abs(qz) ** 2)
    side = float(np.abs(a))
    cz = a * ((0.5 - q.mean(0)[0]) + 1j * (0.5 - q.mean(0)[1])) + (p.mean(0) @ [1, 1j])
    return np.array([cz.real - side / 2, cz.imag - side / 2, side, side])


def box_from_landmarks(lm_Kx2: np.ndarray) -> np.ndarray:
    """The convention's box: fitted from 5 points, tight around 68 or 98."""
    lm = np.asarray(lm_Kx2, np.float64)
    if lm.shape == (5, 2):
        return box_from_five(lm)
    if lm.shape in ((68, 2), (98, 2)):
        return tight_box(lm)
    raise ValueError(f"no box rule for landmarks of shape {lm.shape}")


def crop_geometry(box: np.ndarray) -> tuple[np.ndarray, float]:
    """(origin_2, scale): the stored crop's top-left corner (pixel-edge coords) and crop px per photo px."""
    left, top, w, h = (float(v) for v in box)
    side = CROP_MARGIN * max(w, h)
    if not side > 0:
        raise ValueError(f"degenerate face box {box}")
    # Box centre in pixel-edge coordinates is (left + w/2 + 0.5, top + h/2 + 0.5).
    origin = np.array([left + w / 2 + 0.5 - side / 2, top + h / 2 + 0.5 - side / 2])
    return origin, CROP_SIZE / side


def to_crop(points_Nx2: np.ndarray, origin: np.ndarray, scale: float) -> np.ndarray:
    """Photo pixel coordinates -> stored-crop pixel coordinates."""
    return (np.asarray(points_Nx2, np.float64) + 0.5 - origin) * scale - 0.5


def crop_face(grey_HxW: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(crop_SxS uint8, origin_2, scale): the stored crop around `box` (antialiased, edge-padded)."""
    origin, scale = crop_geometry(box)
    side = CROP_SIZE / scale
    h, w = grey_HxW.shape
    x0, y0 = int(np.floor(origin[0])), int(np.floor(origin[1]))
    x1, y1 = int(np.ceil(origin[0] + side)), int(np.ceil(origin[1] + side))
    # Cut the needed window first (edge-padded where it leaves the photo), then resize that window.
    ys = np.clip(np.arange(y0, y1), 0, h - 1)
    xs = np.clip(np.arange(x0, x1), 0, w - 1)
    window = grey_HxW[np.ix_(ys, xs)]
    rel = (origin[0] - x0, origin[1] - y0, origin[0] - x0 + side, origin[1] - y0 + side)
    img = Image.fromarray(np.ascontiguousarray(window)).resize(
        (CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR, box=rel)
    return np.asarray(img, np.uint8), origin, float(scale)


def five_points(lm_Kx2: np.ndarray) -> np.ndarray:
    """MTFL's 5 points from any layout (identity for 5)."""
    lm = np.asarray(lm_Kx2)
    return lm if lm.shape[-2] == 5 else to_five(lm)

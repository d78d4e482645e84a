"""Model inputs from one photo and its boxes, and the network's points back in the photo's pixels,
for both kinds of preprocessing: 'standard' (ours: `geometry.crop`, exactly what evaluation fed the
model in training) and 'official' (the authors' rule, `photos/official.py`).

Only the part of the photo a box reads is touched: a standard crop reads a window around its box
(`geometry.window`), and only that window is converted to grey and sent to the device; an official
crop is its (w+1)-px square, converted alone. A large photo is never converted or copied whole.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tcdcn_jax import geometry
from tcdcn_jax.images import to_grey
from tcdcn_jax.photos import backends, official

SIDE_BUCKET = 64  # window sides are edge-padded to a multiple of this (fewer crop compilations)

_crop_windows = jax.jit(geometry.crop, static_argnames=("size", "margin"))


def grey_windows(arr: np.ndarray, boxes_Nx4: np.ndarray, size: int, num_rows: int,
                 margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(windows_RxHxW uint8 grey, origin_Rx2): the part of the photo each box's crop reads
    (`geometry.window`), R = num_rows >= N (the last box repeated), all edge-padded right and
    bottom to one shape, sides a multiple of SIDE_BUCKET. Edge padding leaves the clamped bilinear
    samples unchanged (the clamp lands on a copy of the same edge pixel)."""
    boxes_Nx4 = np.concatenate([boxes_Nx4, np.repeat(boxes_Nx4[-1:], num_rows - len(boxes_Nx4), 0)])
    spans = [geometry.window(box, size, arr.shape[:2], margin) for box in boxes_Nx4]
    height = -(-max(y1 - y0 for _, y0, _, y1 in spans) // SIDE_BUCKET) * SIDE_BUCKET
    width = -(-max(x1 - x0 for x0, _, x1, _ in spans) // SIDE_BUCKET) * SIDE_BUCKET
    windows = np.empty((len(spans), height, width), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(spans):
        grey = to_grey(np.ascontiguousarray(arr[y0:y1, x0:x1]))
        windows[i] = np.pad(grey, ((0, height - (y1 - y0)), (0, width - (x1 - x0))), mode="edge")
    return windows, np.array([span[:2] for span in spans], np.float32)


def standard(arr: np.ndarray, boxes_Nx4: np.ndarray, size: int, margin: int = 0) -> np.ndarray:
    """img_NxLxLx1 float32, L = size + 2 margin: `geometry.crop` of each box, from windows."""
    n = len(boxes_Nx4)
    rows = backends.bucket(n)
    windows, origin_Rx2 = grey_windows(arr, boxes_Nx4, size, rows, margin)
    padded = np.concatenate([boxes_Nx4, np.repeat(boxes_Nx4[-1:], rows - n, 0)])
    return np.asarray(_crop_windows(windows, jnp.asarray(padded), size, margin=margin,
                                    origin_Bx2=origin_Rx2))[:n]


def inputs(preprocessing: str, arr: np.ndarray, boxes_Nx4: np.ndarray, size: int,
           offsets_Tx2: np.ndarray | None = None) -> np.ndarray:
    """Model inputs for boxes (N, 4) of one `load_image` array.

    Without offsets: img_NxSxSx1. With translations (TCDCN-Averaged): 'standard' gives the crops
    grown by the largest offset, N x L x L x 1 (model/averaging cuts the windows, or shares the
    convolutions between them); 'official' gives the rule's windows, N x T x S x S x 1.
    """
    boxes_Nx4 = np.asarray(boxes_Nx4, np.float32).reshape(-1, 4)
    if not len(boxes_Nx4):
        side = size if offsets_Tx2 is None or preprocessing == "official" else \
            size + 2 * int(np.abs(offsets_Tx2).max())
        lead = (0,) if offsets_Tx2 is None or preprocessing == "standard" else (0, len(offsets_Tx2))
        return np.zeros(lead + (side, side, 1), np.float32)
    if preprocessing == "official":
        if offsets_Tx2 is None:
            return np.stack([official.preprocess(arr, box) for box in boxes_Nx4])[..., None]
        return np.stack([official.preprocess_windows(arr, box, offsets_Tx2)
                         for box in boxes_Nx4])[..., None]
    margin = 0 if offsets_Tx2 is None else int(np.abs(offsets_Tx2).max())
    return standard(arr, boxes_Nx4, size, margin)


def to_pixels(preprocessing: str, lm_NxKx2: np.ndarray, boxes_Nx4: np.ndarray) -> np.ndarray:
    """Box-normalised (u, v) -> photo pixels (x, y), float32, through each preprocessing's box."""
    boxes_Nx4 = np.asarray(boxes_Nx4, np.float64).reshape(-1, 4)
    lm_NxKx2 = np.asarray(lm_NxKx2, np.float64)
    if preprocessing == "official":
        pix = [official.to_pixels(lm, box) for lm, box in zip(lm_NxKx2, boxes_Nx4)]
        return np.asarray(pix, np.float32).reshape(lm_NxKx2.shape)
    return geometry.to_pixels(lm_NxKx2, boxes_Nx4).astype(np.float32)


def read_box(preprocessing: str, box_4: np.ndarray) -> tuple[float, float, float, float]:
    """The box a model actually reads: the box itself, or for 'official' the square of its width
    (the height is ignored)."""
    left, top, width, height = (float(v) for v in box_4)
    return (left, top, width, width) if preprocessing == "official" else (left, top, width, height)

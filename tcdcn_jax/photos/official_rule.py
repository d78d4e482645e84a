"""The authors' input rule for their released 68-point model, with no constant fitted to an image.

A search over ~25,000 preprocessing variants against their output.txt (see
shared/reference/official-tcdcn/README.md) settled it as MATLAB's own steps:

    grey  = rgb2gray(I)                      MATLAB weights, rounded to uint8
    crop  = imcrop(grey, [l t w w])          a (w+1)-px square: 0-based rows t-1..t+w-1, cols l-1..l+w-1
    small = imresize(crop, [60 60], 'bicubic', 'Antialiasing', false)   a = -0.5, rounded to uint8
    x     = (small - mean(small)) / 127.5    about half of unit variance, what the weights expect
    points: x = (l - 1) + 0.5 + u (w + 1),  y = (t - 1) + 0.5 + v (w + 1)   (0-based pixels)

It lands 1.05 px (mean Euclidean distance over the 68 points; inter-ocular distance ~120 px) from
output.txt on their test image. Finer is not determinable from that one image: nothing tried gets
under ~0.6 px even after a best-fit similarity, a 1 px change of the crop moves the output 0.3-0.4 px,
and output.txt predates the authors' last change to their compiled preprocessing.

The box is (l, t, w, h) with h unused: the tool reads a square of the box's width from its top-left
corner. Rows and columns outside the image repeat the edge (MATLAB's imcrop would cut the square short
and the resize would then stretch it; keeping the square keeps the point mapping exact).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcdcn_jax import geometry
from tcdcn_jax.photos import official

INPUT_SIZE = official.INPUT_SIZE
INPUT_SCALE = 127.5  # (x - mean) / 127.5: the contrast the released weights were trained on


def square_of(box: Sequence[float]) -> tuple[int, int, int]:
    """(l, t, w): the box's corner and width in whole pixels (MATLAB's imcrop rounds them)."""
    if len(box) != 4:
        raise ValueError(f"box must be (left, top, width, height), got {tuple(box)}")
    left, top, width = (int(np.floor(float(v) + 0.5)) for v in box[:3])
    if width < 1:
        raise ValueError(f"box width must be >= 1 px, got box {tuple(float(v) for v in box)}")
    return left, top, width


def crop(grey_HxW: np.ndarray, box: Sequence[float], context: int = 0) -> np.ndarray:
    """imcrop(grey, [l t w w]): the (w+1) x (w+1) square (grown by `context` px a side), edge pixels
    repeated outside the image."""
    left, top, width = square_of(box)
    rows = np.clip(np.arange(top - 1 - context, top + width + context), 0, grey_HxW.shape[0] - 1)
    cols = np.clip(np.arange(left - 1 - context, left + width + context), 0, grey_HxW.shape[1] - 1)
    return grey_HxW[np.ix_(rows, cols)]


def _bicubic_matrix(in_len: int, out_len: int, pad: int = 0, context: int = 0) -> np.ndarray:
    """(out_len + 2 pad) x (in_len + 2 context) weights of MATLAB's imresize, bicubic WITHOUT
    antialiasing, along one axis: output i (1-based) samples input u = i / scale + (1 - 1/scale) / 2
    with the 4 taps around it, edges mirrored. `pad` extra outputs on each side continue the same grid
    (translated windows for TCDCN-Averaged) and read `context` extra input pixels on each side."""
    scale = out_len / in_len
    u_O = np.arange(1 - pad, out_len + pad + 1) / scale + 0.5 * (1 - 1 / scale) + context
    taps_Ox4 = np.floor(u_O)[:, None] + np.arange(-1, 3)[None]
    w_Ox4 = official._cubic(u_O[:, None] - taps_Ox4)
    w_Ox4 /= w_Ox4.sum(axis=1, keepdims=True)
    n = in_len + 2 * context
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])
    idx_Ox4 = mirror[(taps_Ox4.astype(np.int64) - 1) % (2 * n)]
    mat = np.zeros((len(u_O), n))
    np.add.at(mat, (np.repeat(np.arange(len(u_O)), 4), idx_Ox4.ravel()), w_Ox4.ravel())
    return mat


def resize(grey_HxW: np.ndarray, size: int = INPUT_SIZE, pad: int = 0, context: int = 0
           ) -> np.ndarray:
    """imresize(uint8, [size size], 'bicubic', 'Antialiasing', false): rows first, then columns,
    rounded to uint8 after each pass (MATLAB keeps the class between its two 1-D passes). With pad /
    context: the (size + 2 pad)-px grid around it, from a crop with `context` extra pixels a side."""
    to_u8 = lambda x: np.clip(np.floor(x + 0.5), 0, 255)  # MATLAB rounds halves up  # noqa: E731
    inner_h, inner_w = (n - 2 * context for n in grey_HxW.shape)
    rows = _bicubic_matrix(inner_h, size, pad, context)
    cols = _bicubic_matrix(inner_w, size, pad, context)
    return to_u8(to_u8(rows @ grey_HxW.astype(np.float64)) @ cols.T).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be uint8 H x W or H x W x 3, got {image.dtype} {image.shape}")
    return image if image.ndim == 2 else official.matlab_rgb2gray(image)


def _standardise(small: np.ndarray) -> np.ndarray:
    small = small.astype(np.float64)
    return ((small - small.mean(axis=(-2, -1), keepdims=True)) / INPUT_SCALE).astype(np.float32)


def preprocess(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The 60 x 60 float32 input of the released weights for a uint8 H x W or H x W x 3 (RGB) image."""
    return _standardise(resize(crop(_grey(image), box)))


def preprocess_windows(image: np.ndarray, box: Sequence[float], offsets_Tx2: np.ndarray
                       ) -> np.ndarray:
    """T x 60 x 60 inputs of the rule's crop translated by (dx, dy) input pixels each (TCDCN-Averaged,
    offsets from model.averaging.grid_offsets): windows of one larger resize on the same sample grid,
    each standardised by its own mean, as a single input is."""
    offsets = np.asarray(offsets_Tx2, np.int64).reshape(-1, 2)
    pad = int(np.abs(offsets).max())
    _, _, width = square_of(box)
    context = int(np.ceil(pad * (width + 1) / INPUT_SIZE)) + 3  # the cubic's 2 taps and rounding
    big = resize(crop(_grey(image), box, context), INPUT_SIZE, pad, context)
    wins = np.stack([big[pad + dy:pad + dy + INPUT_SIZE, pad + dx:pad + dx + INPUT_SIZE]
                     for dx, dy in offsets])
    return _standardise(wins)


def to_pixels(lm_Kx2: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Box-normalised (u, v) -> 0-based pixels: x = (l - 1) + 0.5 + u (w + 1), likewise y."""
    left, top, width = square_of(box)
    origin = np.array([left - 0.5, top - 0.5])
    return origin + np.asarray(lm_Kx2, np.float64) * (width + 1)


def to_normalised(pix_Kx2: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The inverse of to_pixels."""
    left, top, width = square_of(box)
    return (np.asarray(pix_Kx2, np.float64) - np.array([left - 0.5, top - 0.5])) / (width + 1)


@functools.lru_cache(maxsize=1)
def _apply():
    net = official.model()
    return jax.jit(lambda params, img: net.apply({"params": params}, img)["landmarks"])


def predict(params: dict[str, Any], image: np.ndarray, boxes_Nx4: np.ndarray,
            offsets_Tx2: np.ndarray | None = None) -> np.ndarray:
    """lm_NxKx2, 0-based pixels, of the released network (official.load_official_params) for boxes
    of one image under this rule; with offsets (T, 2), the mean over those translated windows
    (TCDCN-Averaged)."""
    boxes_Nx4 = np.asarray(boxes_Nx4, np.float64).reshape(-1, 4)
    if not len(boxes_Nx4):
        return np.zeros((0, official.NUM_LANDMARKS, 2))
    if offsets_Tx2 is None:
        img = np.stack([preprocess(image, b) for b in boxes_Nx4])[..., None]
        lm_NxKx2 = np.asarray(_apply()(params, jnp.asarray(img)), np.float64)
    else:
        offsets = np.asarray(offsets_Tx2, np.int64).reshape(-1, 2)
        img = np.concatenate([preprocess_windows(image, b, offsets) for b in boxes_Nx4])[..., None]
        lm = np.asarray(_apply()(params, jnp.asarray(img)), np.float64)
        lm_NxTxKx2 = lm.reshape((len(boxes_Nx4), len(offsets)) + lm.shape[1:])
        lm_NxKx2 = np.asarray(geometry.shift_to_box(lm_NxTxKx2, offsets, INPUT_SIZE)).mean(axis=1)
    return np.stack([to_pixels(lm, b) for lm, b in zip(lm_NxKx2, boxes_Nx4)])

"""The authors' released 68-point TCDCN (zhzhanp/TCDCN-face-alignment, `model.mat`): its weights in
our network, and their tool's input rule, in one place (the Predictor and the conformance test both
use it).

The network is our `make_model(68, [], 'report', 'relu')` exactly: ReLU after every layer, 2x2 max
pooling, correlation with the kernel's first axis along image rows (flax's HWIO as stored), the
3x3x80 map flattened column-major (`ip1` rows h + 3w + 9c, permuted to our row-major order) and the
head's columns [y1..y68, x1..x68] (interleaved to our [u0, v0, u1, v1, ...]).

The input rule, MATLAB's own steps with no constant fitted to an image:

    grey  = rgb2gray(I)                      MATLAB weights, rounded to uint8
    crop  = imcrop(grey, [l t w w])          (w+1)-px square: 0-based rows t-1..t+w-1, cols l-1..l+w-1
    small = imresize(crop, [60 60], 'bicubic', 'Antialiasing', false)   a = -0.5, rounded to uint8
    x     = (small - mean(small)) / 127.5    about half of unit variance, what the weights expect
    points: x = (l - 1) + 0.5 + u (w + 1),  y = (t - 1) + 0.5 + v (w + 1)   (0-based pixels)

It lands 1.04 px (mean Euclidean distance over the 68 points; inter-ocular distance ~120 px) from
the tool's output.txt on the authors' test image. Finer is not determinable from that one image:
nothing tried gets under ~0.6 px even after a best-fit similarity, a 1 px change of the crop moves
the output 0.3-0.4 px, and output.txt predates the authors' last change to their compiled
preprocessing, so the pipeline that made it may no longer exist; a finer check needs other reference
outputs of the same tool version (docs/official_weights.md).

The box is (l, t, w, h) with h unused: the tool reads a square of the box's width from its top-left
corner. Rows and columns outside the image repeat the edge (MATLAB's imcrop would cut the square
short and the resize would then stretch it; keeping the square keeps the point mapping exact). Grey
conversion is per pixel, so only the crop is converted: a large photo is never converted whole.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcdcn_jax import geometry

NUM_LANDMARKS = 68
INPUT_SIZE = 60
INPUT_SCALE = 127.5  # (x - mean) / 127.5: the contrast the released weights were trained on

# MATLAB layer name -> (our layer name, weights shape, bias length).
_LAYERS = (
    ("conv1", "conv1", (5, 5, 1, 20), 20),
    ("conv2", "conv2", (5, 5, 20, 48), 48),
    ("conv3", "conv3", (3, 3, 48, 64), 64),
    ("conv4", "conv4", (3, 3, 64, 80), 80),
    ("ip1", "fc", (720, 512), 512),
    ("ip136", "landmarks", (512, 2 * NUM_LANDMARKS), 2 * NUM_LANDMARKS),
)
_FINAL_MAP = (3, 3, 80)  # conv4 output the fully connected layer reads
# MATLAB's rgb2gray weights (the inverse of the NTSC YIQ matrix's first row, as MATLAB computes it).
_RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def model():
    """Our network configured as the authors' released one."""
    from tcdcn_jax.model.networks import make_model  # here: flax loads only for a flax model

    return make_model(NUM_LANDMARKS, [], "report", "relu")


def _read_layers(mat_path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import scipy.io  # here: only loading the weights needs it

    try:
        mat = scipy.io.loadmat(str(mat_path))
    except Exception as err:  # scipy raises assorted types for non-.mat bytes
        raise ValueError(f"{mat_path}: not a readable MATLAB .mat file ({err})") from err
    if "model" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{mat_path}: no 'model' variable; found {found}")
    model_arr = mat["model"]
    names = getattr(model_arr.dtype, "names", None) or ()
    if "weights" not in names or "layer_names" not in names:
        raise ValueError(f"{mat_path}: 'model' must be a struct array with fields "
                         f"'layer_names' and 'weights', got fields {names}")
    layers = {}
    for entry in model_arr.ravel():
        name = str(np.asarray(entry["layer_names"]).ravel()[0])
        cell = np.asarray(entry["weights"]).ravel()
        if cell.size != 2:
            raise ValueError(f"{mat_path}: layer {name!r} must hold a 2-cell {{weights, bias}}, "
                             f"got {cell.size} cells")
        layers[name] = (np.asarray(cell[0], np.float32), np.asarray(cell[1], np.float32).ravel())
    return layers


def load_official_params(mat_path: str | os.PathLike) -> dict[str, Any]:
    """Reads the authors' model.mat into our param tree (numpy float32 arrays).

    Raises ValueError for a file that is not the released 68-point model (layers or shapes differ).
    """
    layers = _read_layers(mat_path)
    expected = [m for m, *_ in _LAYERS]
    if sorted(layers) != sorted(expected):
        raise ValueError(f"{mat_path}: expected layers {expected}, got {sorted(layers)}")
    for mname, _, wshape, blen in _LAYERS:
        w, b = layers[mname]
        if w.shape != wshape or b.shape != (blen,):
            raise ValueError(f"{mat_path}: layer {mname!r} has weights {w.shape} and bias "
                             f"{b.shape}; the 68-point TCDCN has {wshape} and ({blen},)")
    trunk = {}
    for mname, ours, _, _ in _LAYERS[:4]:
        w, b = layers[mname]
        # H x W x Cin x Cout applied as a correlation: flax's HWIO as it is.
        trunk[ours] = {"kernel": w, "bias": b}
    w_fc, b_fc = layers["ip1"]
    # Rows are indexed h + 3w + 9c (column-major); ours are (h*3 + w)*80 + c (row-major NHWC).
    fc_kernel = w_fc.reshape(_FINAL_MAP + (w_fc.shape[1],), order="F").reshape(w_fc.shape)
    trunk["fc"] = {"kernel": np.ascontiguousarray(fc_kernel), "bias": b_fc}
    w_lm, b_lm = layers["ip136"]
    # Columns [y1..y68, x1..x68] -> [x1, y1, x2, y2, ...] = our [u0, v0, u1, v1, ...].
    xs, ys = np.arange(NUM_LANDMARKS, 2 * NUM_LANDMARKS), np.arange(NUM_LANDMARKS)
    order = np.stack([xs, ys], 1).ravel()
    heads = {"landmarks": {"kernel": np.ascontiguousarray(w_lm[:, order]), "bias": b_lm[order]}}
    return {"trunk": trunk, "heads": heads}


def matlab_rgb2gray(rgb_HxWx3: np.ndarray) -> np.ndarray:
    """MATLAB's rgb2gray on uint8: weighted sum rounded to uint8."""
    grey = rgb_HxWx3.astype(np.float64) @ _RGB2GRAY
    return np.clip(np.floor(grey + 0.5), 0, 255).astype(np.uint8)  # halves up, as MATLAB


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
            + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def imresize_matrix(in_len: int, out_len: int, antialias: bool = False, pad: int = 0,
                    context: int = 0) -> np.ndarray:
    """(out_len + 2 pad) x (in_len + 2 context) weights of MATLAB's bicubic imresize (a = -0.5,
    edges mirrored) along one axis: output i (1-based) samples input i / scale + (1 - 1/scale) / 2.
    antialias: MATLAB's default when shrinking (the kernel stretched by 1/scale); the authors' rule
    has it off. `pad` extra outputs on each side continue the same grid (translated windows for
    TCDCN-Averaged) and read `context` extra input pixels on each side."""
    scale = out_len / in_len
    kernel, width = _cubic, 4.0
    if antialias and scale < 1:
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        width /= scale
    u_O = np.arange(1 - pad, out_len + pad + 1) / scale + 0.5 * (1 - 1 / scale) + context
    taps_OxT = np.floor(u_O - width / 2)[:, None] + np.arange(int(np.ceil(width)) + 2)[None]
    w_OxT = kernel(u_O[:, None] - taps_OxT)
    w_OxT /= w_OxT.sum(axis=1, keepdims=True)
    n = in_len + 2 * context
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])
    idx_OxT = mirror[(taps_OxT.astype(np.int64) - 1) % (2 * n)]
    mat = np.zeros((len(u_O), n))
    np.add.at(mat, (np.repeat(np.arange(len(u_O)), taps_OxT.shape[1]), idx_OxT.ravel()),
              w_OxT.ravel())
    return mat


def resize(grey_HxW: np.ndarray, out_h: int = INPUT_SIZE, out_w: int | None = None,
           antialias: bool = False, pad: int = 0, context: int = 0) -> np.ndarray:
    """MATLAB's imresize(uint8, [out_h out_w], 'bicubic') with 'Antialiasing' `antialias`: the more
    shrunk dimension first (rows on a tie), rounded to uint8 after each 1-D pass (MATLAB keeps the
    class between them). With pad / context: the (size + 2 pad)-px grid around it, from a crop with
    `context` extra pixels a side."""
    out_w = out_h if out_w is None else out_w
    to_u8 = lambda x: np.clip(np.floor(x + 0.5), 0, 255)  # MATLAB rounds halves up  # noqa: E731
    in_h, in_w = (n - 2 * context for n in grey_HxW.shape[:2])
    rows = imresize_matrix(in_h, out_h, antialias, pad, context)
    cols = imresize_matrix(in_w, out_w, antialias, pad, context)
    x = grey_HxW.astype(np.float64)
    if out_h / in_h <= out_w / in_w:
        return to_u8(to_u8(rows @ x) @ cols.T).astype(np.uint8)
    return to_u8(rows @ to_u8(x @ cols.T)).astype(np.uint8)


def square_of(box: Sequence[float]) -> tuple[int, int, int]:
    """(l, t, w): the box's corner and width in whole pixels (MATLAB's imcrop rounds them)."""
    if len(box) != 4:
        raise ValueError(f"box must be (left, top, width, height), got {tuple(box)}")
    left, top, width = (int(np.floor(float(v) + 0.5)) for v in box[:3])
    if width < 1:
        raise ValueError(f"box width must be >= 1 px, got box {tuple(float(v) for v in box)}")
    return left, top, width


def crop(image: np.ndarray, box: Sequence[float], context: int = 0) -> np.ndarray:
    """imcrop(image, [l t w w]): the (w+1) x (w+1) square (grown by `context` px a side) of a grey
    or RGB image, edge pixels repeated outside the image."""
    left, top, width = square_of(box)
    rows = np.clip(np.arange(top - 1 - context, top + width + context), 0, image.shape[0] - 1)
    cols = np.clip(np.arange(left - 1 - context, left + width + context), 0, image.shape[1] - 1)
    return image[np.ix_(rows, cols)]


def _checked(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2
                                       or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be uint8 H x W or H x W x 3, got {image.dtype} {image.shape}")
    return image


def _grey(crop_HxW: np.ndarray) -> np.ndarray:
    return crop_HxW if crop_HxW.ndim == 2 else matlab_rgb2gray(crop_HxW)


def _standardise(small: np.ndarray) -> np.ndarray:
    small = small.astype(np.float64)
    return ((small - small.mean(axis=(-2, -1), keepdims=True)) / INPUT_SCALE).astype(np.float32)


def preprocess(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The 60 x 60 float32 input of the released weights for a uint8 H x W or H x W x 3 (RGB)
    image."""
    return _standardise(resize(_grey(crop(_checked(image), box))))


def preprocess_windows(image: np.ndarray, box: Sequence[float], offsets_Tx2: np.ndarray
                       ) -> np.ndarray:
    """T x 60 x 60 inputs of the rule's crop translated by (dx, dy) input pixels each
    (TCDCN-Averaged, offsets from model.averaging.grid_offsets): windows of one larger resize on the
    same sample grid, each standardised by its own mean, as a single input is."""
    offsets = np.asarray(offsets_Tx2, np.int64).reshape(-1, 2)
    pad = int(np.abs(offsets).max())
    _, _, width = square_of(box)
    context = int(np.ceil(pad * (width + 1) / INPUT_SIZE)) + 3  # the cubic's 2 taps and rounding
    big = resize(_grey(crop(_checked(image), box, context)), INPUT_SIZE, pad=pad, context=context)
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
    net = model()
    return jax.jit(lambda params, img: net.apply({"params": params}, img)["landmarks"])


def predict(params: dict[str, Any], image: np.ndarray, boxes_Nx4: np.ndarray,
            offsets_Tx2: np.ndarray | None = None) -> np.ndarray:
    """lm_NxKx2, 0-based pixels, of the released network (load_official_params) for boxes of one
    image under this rule; with offsets (T, 2), the mean over those translated windows
    (TCDCN-Averaged). The Predictor runs the same steps batched across images."""
    boxes_Nx4 = np.asarray(boxes_Nx4, np.float64).reshape(-1, 4)
    if not len(boxes_Nx4):
        return np.zeros((0, NUM_LANDMARKS, 2))
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

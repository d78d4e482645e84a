"""Landmarks (and auxiliary predictions) for faces in images: `Predictor`.

    from tcdcn_jax import Predictor
    predictor = Predictor.from_checkpoint("runs/smoke")        # a workdir (or an imported official one)
    faces = predictor.predict("photo.jpg")                     # boxes found by OpenCV's Haar cascade
    faces = predictor.predict(img_HxW, boxes=[(l, t, w, h)])   # or given, in our box convention
    faces[0].landmarks                                         # (K, 2) image pixels (x, y)
    faces[0].aux["pose"]                                       # {'label', 'name', 'probs'}

Images come in through `tcdcn_jax.images` (paths, bytes, file objects, PIL images, arrays; EXIF
orientation applied; 16-bit and float images scaled). Preprocessing follows the weights: our
models see exactly what evaluation fed them (`geometry.crop`: the grey box bilinearly resampled
to S x S and standardised), cut from a window of the photo around each box, so only that window
is converted to grey and sent to the device; the authors' model sees `official.preprocess` (MATLAB
grey conversion and resize, and the fitted input gain), chosen by the workdir config's
`preprocessing` / `input_gain` fields.

Speed: crops are batched across faces and images, padded to power-of-two buckets (a handful of
compilations, none per call), and a large batch runs as a loop (lax.map) over micro-batches of
`MICROBATCH` faces inside one jitted call, so each layer's activations stay in cache (see
experiments/benchmark_inference.py, which sweeps the size). The report trunk's conv1 runs fused with
its pool (tcdcn_jax/model/conv_pool.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcdcn_jax import geometry, tasks
from tcdcn_jax.images import ImageLike, load_image, to_grey
from tcdcn_jax.train import checkpoints
from tcdcn_jax.model import build as model_build
from tcdcn_jax.model import networks
from tcdcn_jax.photos import official

BoxLike = Sequence[float]

# Faces per inner loop step of a big batch. Measured on 2 cores, batch 256, of 1..256: 16 and 32
# tie under load, 32 best on a quiet machine (~20% over 8); batches up to 32 run as one call.
MICROBATCH = 32
MAX_BATCH = 256  # faces per jitted call
_SIDE_BUCKET = 64  # window sides are edge-padded to a multiple of this (fewer crop compilations)
PREPROCESSING = ("standard", "official")


@dataclasses.dataclass
class PredictedFace:
    """One face found in an image: its box, landmarks in image pixels and, per auxiliary head, the
    predicted class."""

    box: tuple[float, float, float, float]  # (left, top, width, height), our convention
    landmarks: np.ndarray  # (K, 2) pixels (x, y), 0-based
    aux: dict[str, dict[str, Any]]  # task -> {'label': int, 'name': str | None, 'probs': (C,)}

    def to_json(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 3) for v in self.box],
            "landmarks": np.round(self.landmarks.astype(np.float64), 3).tolist(),
            "aux": {t: {"label": a["label"], "name": a["name"],
                        "probs": np.round(a["probs"].astype(np.float64), 5).tolist()}
                    for t, a in self.aux.items()},
        }


def check_box(box: BoxLike, image_shape: Sequence[int]) -> np.ndarray:
    """(4,) float32 box; ValueError unless finite, of positive size and overlapping the image."""
    try:
        box_4 = np.asarray(box, np.float64).ravel()
    except (TypeError, ValueError):  # not numbers (text, None, nested, complex): the message below
        box_4 = np.empty(0)
    with np.errstate(over="ignore"):
        box_f32 = box_4.astype(np.float32)  # what is returned: must be finite in float32 too
    if box_4.shape != (4,) or not np.all(np.isfinite(box_f32)):
        raise ValueError(f"box must be 4 finite numbers (left, top, width, height), got {box!r}")
    left, top, width, height = box_f32.astype(np.float64)  # judge the values returned
    if width < 1 or height < 1:
        raise ValueError(f"box {tuple(box_4)} has width or height below 1 px")
    img_h, img_w = image_shape[:2]
    if left >= img_w or top >= img_h or left + width <= 0 or top + height <= 0:
        raise ValueError(f"box {tuple(box_4)} lies outside the {img_w}x{img_h} image")
    return box_f32


def _bucket(n: int, cap: int) -> int:
    """Smallest power of two >= n (at most cap): padded batch sizes, so few compilations."""
    return min(cap, 1 << max(0, int(n) - 1).bit_length())


_crop_windows = jax.jit(geometry.crop, static_argnames=("size", "margin"))


def grey_windows(arr: np.ndarray, boxes_Nx4: np.ndarray, size: int,
                 num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows_RxHxW uint8 grey, origin_Rx2): the part of the photo each box's crop reads
    (`geometry.window`), R = num_rows >= N (the last box repeated), all edge-padded right and
    bottom to one shape, sides a multiple of _SIDE_BUCKET. Edge padding leaves the clamped bilinear
    samples unchanged (the clamp lands on a copy of the same edge pixel)."""
    boxes_Nx4 = np.concatenate([boxes_Nx4, np.repeat(boxes_Nx4[-1:], num_rows - len(boxes_Nx4), 0)])
    spans = [geometry.window(box, size, arr.shape[:2]) for box in boxes_Nx4]
    height = -(-max(y1 - y0 for _, y0, _, y1 in spans) // _SIDE_BUCKET) * _SIDE_BUCKET
    width = -(-max(x1 - x0 for x0, _, x1, _ in spans) // _SIDE_BUCKET) * _SIDE_BUCKET
    windows = np.empty((len(spans), height, width), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(spans):
        grey = to_grey(np.ascontiguousarray(arr[y0:y1, x0:x1]))
        windows[i] = np.pad(grey, ((0, height - (y1 - y0)), (0, width - (x1 - x0))), mode="edge")
    return windows, np.array([span[:2] for span in spans], np.float32)


def make_forward(model: networks.TCDCN, microbatch: int = MICROBATCH,
                 params: Mapping[str, Any] | None = None):
    """jitted (params, img_BxSxSx1) -> {'landmarks': lm_BxKx2, task: probs_BxC}, or, given `params`,
    jitted img_BxSxSx1 -> the same with those params compiled in as constants: XLA then folds the
    weight-only work (conv1's phase kernel, see conv_pool) and packs the weights once, ~8% faster
    at batch 1 on 2 CPU cores (0.46-0.52 -> 0.43-0.46 ms), at no extra compile time.

    A batch larger than `microbatch` (and a multiple of it) runs as a loop over micro-batches.
    """
    def heads(params, img):
        out = model.apply({"params": params}, img)
        return {k: (v if k == "landmarks" else jax.nn.softmax(v, axis=-1)) for k, v in out.items()}

    def forward(params, img_BxSxSx1):
        batch = img_BxSxSx1.shape[0]
        if batch <= microbatch or batch % microbatch:
            return heads(params, img_BxSxSx1)
        chunks = img_BxSxSx1.reshape((batch // microbatch, microbatch) + img_BxSxSx1.shape[1:])
        out = jax.lax.map(lambda x: heads(params, x), chunks)
        return jax.tree_util.tree_map(lambda v: v.reshape((batch,) + v.shape[2:]), out)

    if params is None:
        return jax.jit(forward)
    return jax.jit(functools.partial(forward, params))


class Predictor:
    """A trained TCDCN ready to run on images: preprocessing, batching, pixel mapping, aux heads.

    Its params are compiled into the network function: build a new Predictor for other params.
    """

    def __init__(self, model: networks.TCDCN, params: Mapping[str, Any],
                 preprocessing: str = "standard", input_gain: float = 1.0,
                 batch_size: int = MAX_BATCH, microbatch: int = MICROBATCH):
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
        if preprocessing == "official" and model.trunk != "report":
            raise ValueError("official preprocessing makes 60x60 crops: it needs the report trunk")
        if batch_size < 1 or microbatch < 1:
            raise ValueError(f"batch_size and microbatch must be >= 1, got {batch_size}, {microbatch}")
        model_build.check_params(model, params)
        self.model = model
        self.params = jax.device_put(jax.tree_util.tree_map(jnp.asarray, params))
        self.preprocessing = preprocessing
        self.input_gain = float(input_gain)
        self.input_size = networks.input_size(model.trunk)
        self.num_landmarks = model.num_landmarks
        self.aux_tasks = tuple(model.aux_tasks or {})
        self.batch_size = int(batch_size)
        self.microbatch = int(microbatch)
        # The params are compiled in (make_forward): build a new Predictor for other params.
        self._forward = make_forward(model, self.microbatch, self.params)

    @classmethod
    def from_checkpoint(cls, workdir: str | os.PathLike, **kwargs) -> "Predictor":
        """A workdir's latest checkpoint (trained here, or written by `tcdcn import-official`)."""
        workdir = os.fspath(workdir)
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"{workdir}: no such workdir")
        model, params, config = checkpoints.load_model(workdir)  # params checked against the model
        kwargs.setdefault("preprocessing", config.get("preprocessing", "standard"))
        kwargs.setdefault("input_gain", config.get("input_gain", 1.0))
        return cls(model, params, **kwargs)

    @classmethod
    def from_official(cls, mat_path: str | os.PathLike, **kwargs) -> "Predictor":
        """The authors' released model.mat, with their preprocessing."""
        kwargs.setdefault("preprocessing", "official")
        kwargs.setdefault("input_gain", official.OFFICIAL_INPUT_GAIN)
        return cls(official.model(), official.load_official_params(mat_path), **kwargs)

    @classmethod
    def from_path(cls, path: str | os.PathLike, **kwargs) -> "Predictor":
        """A workdir, or a .mat file of the authors' model."""
        if os.fspath(path).lower().endswith(".mat"):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such file")
            return cls.from_official(path, **kwargs)
        return cls.from_checkpoint(path, **kwargs)

    # -- the three stages, public so callers can batch across images themselves --

    def preprocess(self, arr: np.ndarray, boxes_Nx4: np.ndarray) -> np.ndarray:
        """Model inputs img_NxSxSx1 (float32) for boxes of one `load_image` array."""
        boxes_Nx4 = np.asarray(boxes_Nx4, np.float32).reshape(-1, 4)
        n = len(boxes_Nx4)
        size = self.input_size
        if n == 0:
            return np.zeros((0, size, size, 1), np.float32)
        if self.preprocessing == "official":
            crops = [official.preprocess(arr, box, gain=self.input_gain) for box in boxes_Nx4]
            return np.stack(crops)[..., None]
        rows = _bucket(n, 1 << 30)
        windows, origin_Rx2 = grey_windows(arr, boxes_Nx4, size, rows)
        padded = np.concatenate([boxes_Nx4, np.repeat(boxes_Nx4[-1:], rows - n, 0)])
        img = np.asarray(_crop_windows(windows, jnp.asarray(padded), size,
                                       origin_Bx2=origin_Rx2))[:n]
        return img * np.float32(self.input_gain) if self.input_gain != 1.0 else img

    def run(self, img_NxSxSx1: np.ndarray) -> dict[str, np.ndarray]:
        """Network outputs for model inputs, in chunks of batch_size padded to power-of-two sizes."""
        img_NxSxSx1 = np.asarray(img_NxSxSx1, np.float32)
        n = img_NxSxSx1.shape[0]
        outs = []
        for start in range(0, n, self.batch_size):
            chunk = img_NxSxSx1[start:start + self.batch_size]
            size = _bucket(len(chunk), self.batch_size)
            if size > self.microbatch:
                size = -(-size // self.microbatch) * self.microbatch
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk),) + chunk.shape[1:],
                                                    np.float32)])
            out = self._forward(chunk)
            outs.append({k: np.asarray(v)[:min(self.batch_size, n - start)] for k, v in out.items()})
        if not outs:
            k = self.num_landmarks
            return {"landmarks": np.zeros((0, k, 2), np.float32),
                    **{t: np.zeros((0, c), np.float32) for t, c in (self.model.aux_tasks or {}).items()}}
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def decode(self, out: Mapping[str, np.ndarray], boxes_Nx4: np.ndarray) -> list[PredictedFace]:
        """Faces from network outputs: box-normalised (u, v) -> pixels, probabilities -> labels."""
        boxes_Nx4 = np.asarray(boxes_Nx4, np.float32).reshape(-1, 4)
        # The official tool crops, and maps back to, a whole-pixel square (official.tool_box).
        geo_Nx4 = (np.array([official.tool_box(b) for b in boxes_Nx4], np.float32).reshape(-1, 4)
                   if self.preprocessing == "official" else boxes_Nx4)
        lm_NxKx2 = np.asarray(out["landmarks"], np.float32)
        pix_NxKx2 = geometry.to_pixels(lm_NxKx2, geo_Nx4)
        faces = []
        for i, box in enumerate(boxes_Nx4):
            aux = {}
            for task in self.aux_tasks:
                probs = np.asarray(out[task][i], np.float32)
                label = int(np.argmax(probs))
                names = tasks.class_names(task, len(probs))
                aux[task] = {"label": label, "probs": probs,
                             "name": names[label] if names else None}
            faces.append(PredictedFace(tuple(float(v) for v in box), pix_NxKx2[i], aux))
        return faces

    def find_faces(self, arr: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) of the faces OpenCV's Haar cascade finds (see tcdcn_jax.detect)."""
        from tcdcn_jax.photos import detect

        return detect.detect_faces(to_grey(arr))

    def boxes_for(self, arr: np.ndarray, boxes: Iterable[BoxLike] | None) -> np.ndarray:
        """Checked (N, 4) boxes: the given ones, or the detector's when boxes is None."""
        if boxes is None:
            return self.find_faces(arr)
        checked = [check_box(b, arr.shape) for b in boxes]
        return np.stack(checked) if checked else np.zeros((0, 4), np.float32)

    # -- one call --

    def predict(self, image: ImageLike, boxes: Iterable[BoxLike] | None = None
                ) -> list[PredictedFace]:
        """Faces in one image: in the given boxes, or wherever the detector finds one ([] if none)."""
        return self.predict_many([image], None if boxes is None else [boxes])[0]

    def predict_many(self, images: Sequence[ImageLike],
                     boxes: Sequence[Iterable[BoxLike] | None] | None = None
                     ) -> list[list[PredictedFace]]:
        """Faces per image, all faces of all images run through the network together."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        arrays = [load_image(im) for im in images]
        box_lists = [self.boxes_for(a, None if boxes is None else boxes[i])
                     for i, a in enumerate(arrays)]
        crops = [self.preprocess(a, b) for a, b in zip(arrays, box_lists)]
        size = self.input_size
        out = self.run(np.concatenate(crops) if crops else np.zeros((0, size, size, 1), np.float32))
        faces, start = [], 0
        for b in box_lists:
            part = {k: v[start:start + len(b)] for k, v in out.items()}
            faces.append(self.decode(part, b))
            start += len(b)
        return faces

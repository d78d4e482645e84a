"""Landmarks (and auxiliary predictions) for the faces in photos: `Predictor`.

    from tcdcn_jax import Predictor
    predictor = Predictor.from_path("model.mat")             # or a workdir, or an exported model
    faces = predictor.predict("photo.jpg")                   # faces found by the detector
    faces = predictor.predict(img_HxW, boxes=[(l, t, w, h)]) # in given boxes (model's convention)
    faces[0].landmarks, faces[0].points5, faces[0].score, faces[0].aux["pose"]
    for key, faces in predictor.stream((p, p, None) for p in paths): ...   # a folder at full speed

The photo path, each step a function of its own: decode (`tcdcn_jax.images`: EXIF orientation,
16-bit and float scaled) -> detect on a copy capped to `max_side` (`photos.detectors`) -> map the
detector's box to the model's convention (`photos.box_maps`, fitted on real faces) -> crop from the
original photo, reading only a window around each box (`photos.crops`) -> the network, batched
across faces and images (`photos.backends`: JAX, ONNX Runtime or OpenVINO) -> re-crop refinement
(`photos.refine`) -> points in the photo's pixels.

Defaults, measured on the dev photos (experiments/evaluate_photos.py): the detector is the best one
installed (libfacedetection where its wheel exists, else MTCNN); re-crop refinement runs
REFINE_PASSES[source] passes: 2 from given boxes and from Haar's (loose boxes: it helps), none from
libfacedetection, MTCNN and dlib (their mapped boxes already fit; refining costs agreement).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import threading
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from tcdcn_jax import layouts, tasks
from tcdcn_jax.images import ImageLike, load_image
from tcdcn_jax.photos import backends, box_maps, crops, detectors, refine, weights

BoxLike = Sequence[float]
MAX_BATCH = 256  # faces per network call
MAX_BOX_SCALE = 10  # a box side over this many times the photo's longer side is refused
GIVEN = "boxes"  # the box source of faces whose boxes were given
# Re-crop passes per box source (see the module docstring and photos/refine.py).
REFINE_PASSES = {GIVEN: 2, "haar": 2, "libfacedetection": 0, "mtcnn": 0, "dlib": 0}
STREAM_WORKERS = 2  # images decoded and searched for faces at once while the network runs
BOX_NOTE = ("the authors' model reads a square of side = the box width from the box's top-left "
            "corner: a box height is ignored")


def _num(v: float) -> str:
    return f"{float(v):g}"


def _box_text(box) -> str:
    return "(" + ", ".join(_num(v) for v in box) + ")"


def check_box(box: BoxLike, image_shape: Sequence[int]) -> np.ndarray:
    """(4,) float32 box; ValueError (numbers shown plain) unless it is finite, at least 1 px, at
    most MAX_BOX_SCALE times the photo's longer side and overlapping the photo. A box partly
    outside the photo is fine: crops repeat the photo's edge there."""
    try:
        box_4 = np.asarray(box, np.float64).ravel()
    except (TypeError, ValueError):  # not numbers (text, None, nested, complex): the message below
        box_4 = np.empty(0)
    with np.errstate(over="ignore"):
        box_f32 = box_4.astype(np.float32)  # what is returned: must be finite in float32 too
    if box_4.shape != (4,) or not np.all(np.isfinite(box_f32)):
        raise ValueError(f"box must be 4 finite numbers (left, top, width, height), got {box!r}")
    left, top, width, height = box_f32.astype(np.float64)  # judge the values returned
    img_h, img_w = image_shape[:2]
    if width < 1 or height < 1:
        raise ValueError(f"box {_box_text(box_4)} has width or height below 1 px")
    if max(width, height) > MAX_BOX_SCALE * max(img_h, img_w):
        raise ValueError(f"box {_box_text(box_4)} is over {MAX_BOX_SCALE} times the "
                         f"{img_w}x{img_h} photo's longer side")
    if left >= img_w or top >= img_h or left + width <= 0 or top + height <= 0:
        raise ValueError(f"box {_box_text(box_4)} lies outside the {img_w}x{img_h} photo")
    return box_f32


@dataclasses.dataclass
class PredictedFace:
    """One face: the box the model read (left, top, width, height; the model's convention, photo
    pixels), the detector's score (None for a given box), 68 (or K) points and the 5 derived ones
    (eye centres, nose tip, mouth corners) in photo pixels (x, y; pixel centres at integers), and
    per auxiliary head the predicted class."""

    box: tuple[float, float, float, float]
    score: float | None
    landmarks: np.ndarray  # (K, 2)
    points5: np.ndarray | None  # (5, 2); None for a layout with no 5-point subset
    aux: dict[str, dict[str, Any]]  # task -> {'label': int, 'name': str | None, 'probs': (C,)}

    def to_json(self) -> dict[str, Any]:
        def pix(a):
            return None if a is None else np.round(np.asarray(a, np.float64), 3).tolist()

        return {
            "box": [round(float(v), 3) for v in self.box],
            "score": None if self.score is None else round(float(self.score), 5),
            "landmarks": pix(self.landmarks),
            "points5": pix(self.points5),
            "aux": {t: {"label": int(a["label"]), "name": a["name"],
                        "probs": np.round(np.asarray(a["probs"], np.float64), 5).tolist()}
                    for t, a in self.aux.items()},
        }


@dataclasses.dataclass
class _Job:
    """One image on its way through: the photo (kept while refinement may re-crop it), boxes in the
    model's convention, scores (None: given), re-crop passes, first-pass inputs."""

    image: np.ndarray | None
    boxes_Nx4: np.ndarray
    scores_N: np.ndarray | None
    passes: int
    inputs: np.ndarray


@dataclasses.dataclass(frozen=True)
class Options:
    """How a Predictor finds faces and runs: see Predictor."""

    detector: str = "auto"
    min_score: float | None = None
    min_face: float | None = None
    max_side: int = detectors.DEFAULT_MAX_SIDE
    refine: int | None = None
    averaged: bool = False
    batch_size: int = MAX_BATCH

    def check(self) -> "Options":
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.refine is not None and self.refine < 0:
            raise ValueError(f"refine must be >= 0 passes (or None for the default), got "
                             f"{self.refine}")
        if self.max_side < 16:
            raise ValueError(f"max_side must be >= 16 px, got {self.max_side}")
        return dataclasses.replace(self, detector=detectors.require(self.detector))


class Predictor:
    """A network ready to run on photos. Options (keywords of every constructor):

    detector: 'auto' (the best installed) or a name in detectors.names(); created on first use.
    min_score, min_face: detections scoring below / narrower (photo px) than these are dropped
      (None: the detector's measured defaults). max_side: detection runs on a copy of the photo
      whose longer side is at most this (faces found at that scale; crops come from the original).
    refine: re-crop passes (None: REFINE_PASSES for the box source). averaged: TCDCN-Averaged
      (the mean over 21 translated crops; auxiliary tags from the untranslated one).
    batch_size: faces per network call.
    """

    def __init__(self, network: weights.Network, **options):
        self.network = network
        self.options = Options(**options).check()
        self.convention = "official" if network.preprocessing == "official" else "tight"
        self._rule = refine.load_rule(self.convention)
        self._local = threading.local()  # a detector per thread: none of them is thread-safe
        self._averaged_cache: dict[int, Any] = {}  # batch size -> runner, shared by replace()
        self._averaged_run = self._averaged_runner()

    # -- construction --

    @classmethod
    def from_path(cls, path: str | os.PathLike, *, backend: str | None = None,
                  threads: int | None = None, **options) -> "Predictor":
        """Weights from a workdir, the authors' model.mat, an ONNX file or a jax.export file
        (photos/weights.py); backend None: 'jax', or ONNX Runtime for an ONNX file."""
        return cls(weights.load(path, backend, threads), **options)

    @classmethod
    def from_model(cls, model, params: Mapping[str, Any], preprocessing: str = "standard", *,
                   backend: str = "jax", threads: int | None = None, **options) -> "Predictor":
        """A flax TCDCN and its params."""
        return cls(weights.from_model(model, params, preprocessing, backend, threads), **options)

    from_checkpoint = from_path  # a workdir (trained here, or written by `tcdcn import-official`)
    from_official = from_path  # the authors' model.mat

    def replace(self, **options) -> "Predictor":
        """The same network (nothing recompiled) with other options."""
        out = Predictor.__new__(Predictor)
        out.__dict__.update(self.__dict__)
        out.options = dataclasses.replace(self.options, **options).check()
        if out.options.detector != self.options.detector:
            out._local = threading.local()
        out._averaged_run = out._averaged_runner()
        return out

    def _averaged_runner(self):
        """The TCDCN-Averaged runner when the options ask for it (built once per batch size)."""
        if not self.options.averaged:
            return None
        size = self.options.batch_size
        if size not in self._averaged_cache:
            from tcdcn_jax.photos import averaged

            self._averaged_cache[size] = averaged.make_runner(self.network, size)
        return self._averaged_cache[size]

    # -- what callers read --

    @property
    def num_landmarks(self) -> int:
        return self.network.num_landmarks

    @property
    def input_size(self) -> int:
        return self.network.input_size

    @property
    def preprocessing(self) -> str:
        return self.network.preprocessing

    @property
    def aux_tasks(self) -> Mapping[str, int]:
        return self.network.aux_tasks

    @property
    def backend(self) -> str:
        return self.network.backend

    @property
    def detector_name(self) -> str:
        return self.options.detector

    @property
    def box_note(self) -> str | None:
        """Set when the model ignores part of a given box (the authors' model: its height)."""
        return BOX_NOTE if self.preprocessing == "official" else None

    def refine_passes(self, source: str) -> int:
        """Re-crop passes for faces whose boxes come from `source` (a detector's name or GIVEN; 2
        for a source not measured)."""
        return REFINE_PASSES.get(source, 2) if self.options.refine is None else self.options.refine

    # -- the stages, public so callers can batch across images themselves --

    def detector(self):
        """This thread's detector (created on first use)."""
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = detectors.create(self.options.detector)
        return det

    def detect(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(boxes_Nx4 in the model's convention, scores_N) of the faces found in a photo array."""
        det = self.detector()
        found = detectors.detect(det, arr, self.options.max_side, self.options.min_score,
                                 self.options.min_face)
        return box_maps.to_convention(det.name, self.convention, found.boxes_Nx4), found.scores_N

    def boxes_for(self, arr: np.ndarray, boxes: Iterable[BoxLike] | None) -> np.ndarray:
        """Checked (N, 4) boxes: the given ones, or the detector's when boxes is None."""
        if boxes is None:
            return self.detect(arr)[0]
        checked = [check_box(b, arr.shape) for b in boxes]
        return np.stack(checked) if checked else np.zeros((0, 4), np.float32)

    def preprocess(self, arr: np.ndarray, boxes_Nx4: np.ndarray) -> np.ndarray:
        """Model inputs for boxes of one `load_image` array (with averaged: their translations)."""
        offsets = None if self._averaged_run is None else self._averaged_run.offsets_Tx2
        return crops.inputs(self.preprocessing, arr, boxes_Nx4, self.input_size, offsets)

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Network outputs ('landmarks' box-normalised) for `preprocess` inputs, batch_size at a
        time, padded to power-of-two sizes (a handful of compilations, none per call)."""
        run = self.network.run if self._averaged_run is None else self._averaged_run
        out = backends.batched(run, np.asarray(inputs, np.float32), self.options.batch_size)
        return out or {"landmarks": np.zeros((0, self.num_landmarks, 2), np.float32),
                       **{t: np.zeros((0, c), np.float32) for t, c in self.aux_tasks.items()}}

    def decode(self, out: Mapping[str, np.ndarray], boxes_Nx4: np.ndarray,
               scores_N: np.ndarray | None = None) -> list[PredictedFace]:
        """Faces from network outputs: box-normalised (u, v) -> pixels, probabilities -> labels."""
        boxes_Nx4 = np.asarray(boxes_Nx4, np.float32).reshape(-1, 4)
        pix = crops.to_pixels(self.preprocessing, out["landmarks"], boxes_Nx4)
        return self._faces({"landmarks": pix, **{t: out[t] for t in self.aux_tasks}}, boxes_Nx4,
                           scores_N)

    def _faces(self, out: Mapping[str, np.ndarray], boxes_Nx4: np.ndarray,
               scores_N: np.ndarray | None) -> list[PredictedFace]:
        layout = layouts.LAYOUTS.get(self.num_landmarks)
        pts5 = None if layout is None or not len(boxes_Nx4) else layouts.to_five(out["landmarks"],
                                                                                 layout)
        faces = []
        for i, box in enumerate(boxes_Nx4):
            aux = {}
            for task in self.aux_tasks:
                probs = np.asarray(out[task][i], np.float32)
                label = int(np.argmax(probs))
                names = tasks.class_names(task, len(probs))
                aux[task] = {"label": label, "name": names[label] if names else None,
                             "probs": probs}
            faces.append(PredictedFace(crops.read_box(self.preprocessing, box),
                                       None if scores_N is None else float(scores_N[i]),
                                       np.asarray(out["landmarks"][i], np.float32),
                                       None if pts5 is None else pts5[i].astype(np.float32), aux))
        return faces

    # -- the photo path --

    def _job(self, image: ImageLike, boxes: Iterable[BoxLike] | None) -> _Job:
        """Decode, find or check the boxes, make the first inputs: what runs ahead in a thread."""
        arr = load_image(image)
        if boxes is None:
            boxes_Nx4, scores = self.detect(arr)
            passes = self.refine_passes(self.detector_name)
        else:
            boxes_Nx4, scores, passes = self.boxes_for(arr, boxes), None, self.refine_passes(GIVEN)
        inputs = self.preprocess(arr, boxes_Nx4)
        # The photo is kept only while a re-crop may need it (a big photo is a lot of memory).
        return _Job(arr if passes and len(boxes_Nx4) else None, boxes_Nx4, scores, passes,
                    inputs)

    def _outputs(self, images: Sequence[np.ndarray | None], asks: Sequence[tuple[int, np.ndarray]],
                 inputs: Sequence[np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
        """One network call for boxes of several images, [(image index, boxes_Nx4)]: outputs per
        ask, points in pixels. `inputs`: the asks' model inputs when already made."""
        if inputs is None:
            inputs = [self.preprocess(images[i], box) for i, box in asks]
        out = self.run(np.concatenate(inputs))
        per_ask, start = [], 0
        for _, box in asks:
            part = {k: v[start:start + len(box)] for k, v in out.items()}
            part["landmarks"] = crops.to_pixels(self.preprocessing, part["landmarks"], box)
            per_ask.append(part)
            start += len(box)
        return per_ask

    def _finish(self, jobs: Sequence[_Job]) -> list[list[PredictedFace]]:
        """The network and the re-crops for the faces of several prepared images, each pass one
        batched call."""
        images = [j.image for j in jobs]
        boxes = [j.boxes_Nx4 for j in jobs]
        first = self._outputs(images, list(enumerate(boxes)), [j.inputs for j in jobs])
        outs, boxes, _ = refine.refine_many(lambda asks: self._outputs(images, asks), boxes,
                                            self._rule, [j.passes for j in jobs], first=first)
        return [self._faces(o, b, j.scores_N) for o, b, j in zip(outs, boxes, jobs)]

    def predict(self, image: ImageLike, boxes: Iterable[BoxLike] | None = None
                ) -> list[PredictedFace]:
        """Faces in one image: in the given boxes, or wherever the detector finds one (or [])."""
        return self.predict_many([image], None if boxes is None else [boxes])[0]

    def predict_many(self, images: Sequence[ImageLike],
                     boxes: Sequence[Iterable[BoxLike] | None] | None = None
                     ) -> list[list[PredictedFace]]:
        """Faces per image, the faces of all images through the network together. Errors raise."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"got {len(images)} images but {len(boxes)} box lists")
        jobs = [self._job(im, None if boxes is None else boxes[i])
                for i, im in enumerate(images)]
        return self._finish(jobs) if jobs else []

    def stream(self, items: Iterable[tuple[Any, ImageLike, Iterable[BoxLike] | None]],
               workers: int = STREAM_WORKERS, max_images: int = 64
               ) -> Iterator[tuple[Any, list[PredictedFace] | Exception]]:
        """(key, faces) per (key, image, boxes or None) item, in input order, as each is done.

        `workers` threads decode the next images, find their faces and crop them while the network
        runs on the images before them (JAX, ONNX Runtime, OpenVINO, Pillow's decoder and
        libfacedetection's C entry point release the GIL while they compute); the images ready at
        that moment (at most max_images, batch_size faces) go through the network together. An
        item whose image or boxes are bad yields (key, error): a FileNotFoundError or ValueError
        whose one-line message names the key; the stream goes on. Closed early, it drops the
        images not yet started.
        """
        items = iter(items)
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            pending: collections.deque = collections.deque()

            def refill():
                while len(pending) < 2 * max(1, workers) + 1:
                    item = next(items, None)
                    if item is None:
                        return
                    key, image, boxes = item
                    pending.append((key, pool.submit(self._job, image, boxes)))

            refill()
            try:
                while pending:
                    group: list[tuple[Any, _Job | Exception]] = []
                    faces = 0
                    while pending and (not group or pending[0][1].done()) and \
                            len(group) < max_images and faces < self.options.batch_size:
                        key, future = pending.popleft()
                        try:
                            job = future.result()
                            faces += len(job.boxes_Nx4)
                        except (FileNotFoundError, ValueError) as err:
                            job = _named(err, key)
                        group.append((key, job))
                    refill()  # the workers go on while the network runs
                    jobs = [j for _, j in group if isinstance(j, _Job)]
                    done = iter(self._finish(jobs) if jobs else [])
                    for key, job in group:
                        yield key, (job if isinstance(job, Exception) else next(done))
            finally:  # closed early (Ctrl-C, a crash): the images not started are not read
                for _, future in pending:
                    future.cancel()


def _named(err: Exception, key: Any) -> Exception:
    """err with a one-line message that names the item (its key), of the same type."""
    text = " ".join(str(err).split()) or type(err).__name__
    name = os.fspath(key) if isinstance(key, (str, os.PathLike)) else str(key)
    return type(err)(text if name in text else f"{name}: {text}")

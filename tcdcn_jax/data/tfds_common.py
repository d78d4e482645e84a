"""What every real-dataset TFDS builder shares: the record format, the build, and reading splits into memory.

A source module lists its faces (`AnnotatedFace`: photo path, 0-based pixel landmarks, labels) per
split; this module turns each into a record (grey crop with margin, box and landmarks in the crop's
frame, labels), writes array_record through TFDS without TensorFlow, and reads splits back as numpy
arrays.

Folders: the user's dataset folder is TFDS's `manual_dir` and is only read. Built records go under
$TCDCN_TFDS_DIR (default ~/.cache/tcdcn_jax/tfds), in a sub-folder keyed by the builder, the absolute
dataset folder, the build options and the size/mtime of the annotation files, so pointing at another
copy or editing an annotation file builds afresh. TFDS writes a split set into a temporary folder and
renames it only when every split is complete: a failed build leaves no records behind.

Bad data raises DataError naming the file and line; with skip_bad=True the row is skipped instead and the
number of skipped rows is logged per split (and the skip build gets its own cache folder).
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import os
import pathlib
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from absl import logging

import tensorflow_datasets as tfds

from tcdcn_jax.data import boxes
from tcdcn_jax.data.image_io import DataError, load_grey

UNKNOWN = -1  # label value for "not annotated for this face"
DEFAULT_TFDS_DIR = "~/.cache/tcdcn_jax/tfds"
# A point may lie this far outside the photo (fraction of the box's long side): annotators placed
# points of faces cut by the photo edge a little beyond it. Farther out is an annotation error.
OUT_OF_IMAGE_TOLERANCE = 0.25
_READ_CHUNK = 2048
_DECODE_CHUNK = 256


@dataclasses.dataclass
class AnnotatedFace:
    """One annotated face before cropping. Coordinates: photo pixels, 0-based (project convention)."""

    image_path: str                  # absolute path of the photo
    file: str                        # the path as the annotation lists it
    landmarks: np.ndarray            # K x 2
    where: str                       # 'annotation_file:line' for error messages
    labels: dict[str, int] = dataclasses.field(default_factory=dict)
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    source_box: np.ndarray | None = None  # the source's own (left, top, width, height), if it has one


Item = AnnotatedFace | DataError


def read_lines(path: pathlib.Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines; DataError if the file is missing or not text."""
    if not path.is_file():
        raise DataError(f"missing annotation file {path}")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e})") from e
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def parse_annotation_lines(ann: pathlib.Path, root: pathlib.Path, parse_line) -> list[Item]:
    """parse_line(text, root, ann, line) over every non-blank line; a bad line becomes its DataError,
    so the builder can fail on it or count it as skipped."""
    items: list[Item] = []
    for line, text in read_lines(ann):
        try:
            items.append(parse_line(text, root, ann, line))
        except DataError as e:
            items.append(e)
    return items


def tfds_dir() -> pathlib.Path:
    """Root of the built records ($TCDCN_TFDS_DIR or ~/.cache/tcdcn_jax/tfds)."""
    return pathlib.Path(os.environ.get("TCDCN_TFDS_DIR") or DEFAULT_TFDS_DIR).expanduser()


def parse_floats(tokens: Sequence[str], where: str, what: str) -> np.ndarray:
    """Tokens -> float64 array; DataError naming `where` for a non-number or a NaN/inf."""
    try:
        values = np.array([float(t) for t in tokens], np.float64)
    except ValueError as e:
        raise DataError(f"{where}: {what} is not a number: {e}") from e
    if not np.all(np.isfinite(values)):
        raise DataError(f"{where}: {what} has NaN or infinite values")
    return values


def parse_code(token: str, allowed: Mapping[str, int], where: str, what: str) -> int:
    """A published label code -> our 0-based class (allowed maps code text to class; '2.0' reads as '2')."""
    try:
        value = float(token)
        token = str(int(value)) if value.is_integer() else token
    except ValueError:
        pass
    if token not in allowed:
        raise DataError(f"{where}: {what} code {token!r} is not one of {sorted(allowed)}")
    return allowed[token]


class FaceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the real-dataset builders: subclasses set NUM_POINTS, LABELS, EXTRA, SPLITS, list_faces."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: grey crops with margin, box and landmarks in crop pixels."}
    NUM_POINTS: int = 5
    LABELS: tuple[str, ...] = ()
    EXTRA: dict[str, tuple[tuple[int, ...], Any]] = {}  # name -> (shape, dtype)
    SPLITS: tuple[str, ...] = ("train", "test")
    HOMEPAGE = ""

    def __init__(self, *, skip_bad: bool = False, options: Mapping[str, Any] | None = None, **kwargs):
        self.skip_bad = bool(skip_bad)
        self.options = dict(options or {})
        super().__init__(**kwargs)

    # -- to implement per source (TFDS builders are ABCs: a source missing one cannot be built) ------
    @abc.abstractmethod
    def list_faces(self, root: pathlib.Path) -> dict[str, Iterable[Item]]:
        """Split name -> faces (or DataErrors for rows that could not be parsed), in a fixed order."""

    @abc.abstractmethod
    def annotation_files(self, root: pathlib.Path) -> list[pathlib.Path]:
        """Files whose size/mtime key the cache (the annotations, not the photos)."""

    # -- TFDS -------------------------------------------------------------------------------------
    def _info(self) -> tfds.core.DatasetInfo:
        s, k = boxes.CROP_SIZE, self.NUM_POINTS
        f = tfds.features
        features = {
            "image": f.Tensor(shape=(s, s), dtype=np.uint8, encoding=f.Encoding.ZLIB),
            "box": f.Tensor(shape=(4,), dtype=np.float32),
            "landmarks": f.Tensor(shape=(k, 2), dtype=np.float32),
            "source_box": f.Tensor(shape=(4,), dtype=np.float32),
            "crop_origin": f.Tensor(shape=(2,), dtype=np.float32),
            "crop_scale": f.Scalar(dtype=np.float32),
            "file": f.Text(),
            **{name: f.Scalar(dtype=np.int32) for name in self.LABELS},
            **{name: f.Tensor(shape=shape, dtype=dtype) for name, (shape, dtype) in self.EXTRA.items()},
        }
        return tfds.core.DatasetInfo(
            builder=self, description=(self.__doc__ or "").strip(),
            features=f.FeaturesDict(features), homepage=self.HOMEPAGE or None,
            disable_shuffling=True)

    def _split_generators(self, dl_manager):
        root = pathlib.Path(dl_manager.manual_dir)
        faces = self.list_faces(root)
        return {split: self._generate_examples(split, faces[split]) for split in self.SPLITS}

    def _generate_examples(self, split: str, items: Iterable[Item]) -> Iterator[tuple[int, dict]]:
        skipped = kept = 0
        workers = min(8, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for result in self._in_order(pool, items):
                if isinstance(result, DataError):
                    if not self.skip_bad:
                        raise result
                    skipped += 1
                    logging.warning("%s %s: skipping bad row: %s", self.name, split, result)
                    continue
                yield kept, result
                kept += 1
        if skipped:
            logging.warning("%s %s: skipped %d bad rows, kept %d", self.name, split, skipped, kept)
        if not kept:
            raise DataError(f"{self.name}: split {split!r} has no usable faces")

    def _in_order(self, pool: concurrent.futures.Executor, items: Iterable[Item]) -> Iterator:
        """Examples in input order, decoded a chunk at a time (bounded memory for 200k-face sets)."""
        items = iter(items)
        while chunk := list(itertools.islice(items, _DECODE_CHUNK)):
            yield from pool.map(self._example_or_error, chunk)

    def _example_or_error(self, item: Item) -> dict | DataError:
        if isinstance(item, DataError):
            return item
        try:
            return self.make_example(item)
        except DataError as e:
            return e

    def make_example(self, face: AnnotatedFace) -> dict[str, Any]:
        """Face -> record: grey crop around the convention's box, geometry in the crop's pixels."""
        lm = np.asarray(face.landmarks, np.float64)
        if lm.shape != (self.NUM_POINTS, 2):
            raise DataError(f"{face.where}: expected {self.NUM_POINTS} points, got {lm.shape}")
        if not np.all(np.isfinite(lm)):
            raise DataError(f"{face.where}: landmarks have NaN or infinite values")
        box = boxes.box_from_landmarks(lm)
        if not max(box[2], box[3]) > 0:
            raise DataError(f"{face.where}: landmarks are all one point, no face box")
        grey = load_grey(face.image_path, context=face.where)
        h, w = grey.shape
        slack = OUT_OF_IMAGE_TOLERANCE * max(box[2], box[3])
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        if lo[0] < -slack or lo[1] < -slack or hi[0] > w - 1 + slack or hi[1] > h - 1 + slack:
            raise DataError(
                f"{face.where}: landmarks outside the {w}x{h} image {face.image_path} "
                f"(x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f})")
        crop, origin, scale = boxes.crop_face(grey, box)
        src = face.source_box
        if src is None:
            src_crop = np.full(4, np.nan)
        else:
            corner = boxes.to_crop(np.asarray(src[:2])[None], origin, scale)[0]
            src_crop = np.concatenate([corner, np.asarray(src[2:], np.float64) * scale])
        box_corner = boxes.to_crop(box[None, :2], origin, scale)[0]
        example = {
            "image": crop,
            "box": np.concatenate([box_corner, box[2:] * scale]).astype(np.float32),
            "landmarks": boxes.to_crop(lm, origin, scale).astype(np.float32),
            "source_box": src_crop.astype(np.float32),
            "crop_origin": origin.astype(np.float32),
            "crop_scale": np.float32(scale),
            "file": face.file,
        }
        for name in self.LABELS:
            example[name] = np.int32(face.labels.get(name, UNKNOWN))
        for name, (shape, dtype) in self.EXTRA.items():
            example[name] = np.asarray(face.extra[name], dtype).reshape(shape)
        return example


def _fingerprint(builder_cls: type[FaceBuilder], root: pathlib.Path, skip_bad: bool,
                 options: Mapping[str, Any]) -> str:
    probe = builder_cls.__new__(builder_cls)
    probe.options = dict(options)
    stats = []
    for path in probe.annotation_files(root):
        st = path.stat() if path.exists() else None
        stats.append((str(path), st.st_size if st else None, st.st_mtime_ns if st else None))
    key = json.dumps({"builder": builder_cls.__name__, "root": str(root), "skip_bad": skip_bad,
                      "options": dict(sorted(options.items())), "files": stats,
                      "crop": [boxes.CROP_SIZE, boxes.CROP_MARGIN]}, sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def prepare(builder_cls: type[FaceBuilder], manual_dir: str | os.PathLike, skip_bad: bool = False,
            options: Mapping[str, Any] | None = None, data_dir: str | os.PathLike | None = None
            ) -> FaceBuilder:
    """Builds the records from the user's dataset folder once (later calls reuse them); the builder."""
    if not manual_dir:
        raise ValueError(f"{builder_cls.__name__}: set config.data_dir to the dataset folder")
    root = pathlib.Path(manual_dir).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist")
    options = dict(options or {})
    if data_dir is None:
        key = _fingerprint(builder_cls, root, skip_bad, options)
        data_dir = tfds_dir() / f"{builder_cls.__name__.lower()}-{key}"
    builder = builder_cls(skip_bad=skip_bad, options=options, data_dir=os.fspath(data_dir),
                          file_format="array_record")
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(root), try_download_gcs=False)
    builder.download_and_prepare(download_config=config)
    return builder


def read_split(builder: FaceBuilder, split: str) -> dict[str, np.ndarray]:
    """A built split as numpy arrays (image N x S x S uint8, box, landmarks, labels, extras, file)."""
    source = builder.as_data_source(split)
    n = len(source)
    rows: list[dict] = []
    for start in range(0, n, _READ_CHUNK):
        rows.extend(source.__getitems__(list(range(start, min(n, start + _READ_CHUNK)))))
    if not rows:
        raise DataError(f"{builder.name}: split {split!r} is empty")
    out = {}
    for key in rows[0]:
        if key == "file":
            out[key] = np.array([r[key].decode() if isinstance(r[key], bytes) else r[key]
                                 for r in rows], dtype=object)
        else:
            out[key] = np.stack([np.asarray(r[key]) for r in rows])
    return out


def to_arrays(split: Mapping[str, np.ndarray], num_landmarks: int, labels: Sequence[str],
              extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Training arrays of a read split: image, box, landmarks (K or reduced to 5), labels, extras.

    Only numeric per-face arrays go in (the batch is put on device whole); `file` and the crop
    geometry stay in the records.
    """
    lm = np.asarray(split["landmarks"], np.float32)
    k = lm.shape[1]
    if num_landmarks != k:
        if num_landmarks != 5:
            raise ValueError(f"this source has {k}-point landmarks; config.num_landmarks must be "
                             f"{k} or 5 (the MTFL subset), not {num_landmarks}")
        lm = boxes.five_points(lm).astype(np.float32)
    out = {"image": split["image"], "box": split["box"].astype(np.float32), "landmarks": lm}
    out.update({name: split[name].astype(np.int32) for name in labels})
    out.update({name: split[name] for name in extra})
    return out


def known_labels(splits: Iterable[Mapping[str, np.ndarray]], labels: Sequence[str]) -> tuple[str, ...]:
    """The labels annotated for every face of every split (a partly missing one is left out, logged)."""
    splits = list(splits)
    keep = []
    for name in labels:
        missing = sum(int(np.sum(s[name] == UNKNOWN)) for s in splits)
        if missing:
            logging.warning("label %r is missing for %d faces: not used for training", name, missing)
        else:
            keep.append(name)
    return tuple(keep)


def holdout(arrays: Mapping[str, np.ndarray], num_out: int, seed: int
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(rest, held_out): `num_out` faces drawn with rng(seed), both parts in their original order."""
    n = len(next(iter(arrays.values())))
    if not 0 < num_out < n:
        raise ValueError(f"cannot hold out {num_out} of {n} faces (config.num_val / num_test): "
                         f"choose 1..{n - 1}")
    chosen = np.zeros(n, bool)
    chosen[np.random.default_rng(seed).choice(n, num_out, replace=False)] = True
    return ({k: v[~chosen] for k, v in arrays.items()}, {k: v[chosen] for k, v in arrays.items()})


def load_source(builder_cls: type[FaceBuilder], config, *, train: str, test: str,
                validation: str | None = None, extra_tests: Sequence[str] = (),
                options: Mapping[str, Any] | None = None, extra_keys: Sequence[str] = ()):
    """Builds (once) and loads a source as `sources.Splits`.

    The validation split is the builder's `validation` split if named, else config.num_val faces held
    out of `train` with rng(config.data_seed). config.num_landmarks picks K (the source's or 5).
    """
    from tcdcn_jax.data.pipeline import ArrayDataset
    from tcdcn_jax.data.sources import Splits

    builder = prepare(builder_cls, config.data_dir, skip_bad=bool(config.get("skip_bad_rows", False)),
                      options=options)
    names = list(dict.fromkeys([train, test, *([validation] if validation else []), *extra_tests]))
    raw = {name: read_split(builder, name) for name in names}
    labels = known_labels(raw.values(), builder_cls.LABELS)
    k = int(config.num_landmarks)
    arrays = {name: to_arrays(split, k, labels, extra_keys) for name, split in raw.items()}
    if validation:
        train_arrays, val_arrays = arrays[train], arrays[validation]
    else:
        train_arrays, val_arrays = holdout(arrays[train], int(config.num_val), int(config.data_seed))
    for name, split in (("train", train_arrays), ("validation", val_arrays), (test, arrays[test])):
        logging.info("%s %s: %d faces", builder.name, name, len(split["image"]))
    return Splits(ArrayDataset(train_arrays), ArrayDataset(val_arrays), ArrayDataset(arrays[test]),
                  num_landmarks=k, extra_tests={name: ArrayDataset(arrays[name]) for name in extra_tests})

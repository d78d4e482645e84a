"""AFLW (Koestinger et al. 2011): the aflw.sqlite database and its flickr/ photo tree.

Published layout (config.data_dir is the folder holding `aflw.sqlite`, or its parent `aflw/` with
`data/aflw.sqlite`): photos at `flickr/<FaceImages.filepath>` next to the database.

Tables read: Faces(face_id, file_id), FaceImages(file_id, filepath, width, height),
FeatureCoords(face_id, feature_id, x, y), FeatureCoordTypes(feature_id, code), FaceRect(face_id, x, y,
w, h) -> `source_box`, FacePose(face_id, roll, pitch, yaw; radians), FaceMetaData(face_id, sex 'm'/'f',
glasses 0/1). Coordinates are taken as 0-based pixels.

21 points -> our 5: eye centres LEC / REC, nose tip NC, mouth corners MLC / MRC. Faces lacking any of
the five (profiles hide an eye) are left out and counted in the log; that is AFLW's nature, not bad data.
Two conventions are settled from the data rather than assumed, since AFLW's documentation leaves them
open: if in most faces the 'left' eye lies image-right of the 'right' eye, left/right pairs are
swapped (our points are image-left first); if yaw correlates negatively with the nose's offset from the
eye midpoint, yaw's sign is flipped (ours: yaw > 0 turns the nose to the image-right).
Pose class from |yaw| in degrees: < 15 frontal (2); 15..45 left/right (1/3); > 45 profile (0/4).
AFLW has no official split: the builder writes one split, `train`, of every usable face in face_id
order, and `sources.load` holds out config.num_test and config.num_val faces with rng(data_seed).
"""

from __future__ import annotations

import math
import pathlib
import sqlite3
from typing import Any, NamedTuple

import numpy as np
from absl import logging

from tcdcn_jax.data.image_io import DataError
from tcdcn_jax.data.tfds_common import UNKNOWN, AnnotatedFace, FaceBuilder, Item, parse_floats

FIVE_CODES = ("LEC", "REC", "NC", "MLC", "MRC")
FRONTAL_DEG, PROFILE_DEG = 15.0, 45.0


def pose_class(yaw_deg: float) -> int:
    """Yaw (degrees, > 0 = nose to image-right) -> pose class 0..4 by the documented bins."""
    a = abs(yaw_deg)
    if a < FRONTAL_DEG:
        return 2
    if a <= PROFILE_DEG:
        return 3 if yaw_deg > 0 else 1
    return 4 if yaw_deg > 0 else 0


def find_database(root: pathlib.Path) -> pathlib.Path:
    for candidate in (root / "aflw.sqlite", root / "data" / "aflw.sqlite"):
        if candidate.is_file():
            return candidate
    raise DataError(f"AFLW: aflw.sqlite not found in {root} or {root / 'data'}")


def _query(db: sqlite3.Connection, path: pathlib.Path, sql: str) -> list[tuple]:
    try:
        return db.execute(sql).fetchall()
    except sqlite3.DatabaseError as e:
        raise DataError(f"{path}: query failed ({e}): {sql}") from e


class _Row(NamedTuple):
    """One face's parsed database rows, in AFLW's conventions (before any swap or sign flip)."""

    filepath: str
    at: str  # 'aflw.sqlite face_id N', for messages
    xy: np.ndarray  # (5, 2) in FIVE_CODES order
    yaw: float | None  # radians
    rect: np.ndarray | None  # FaceRect (x, y, w, h)
    meta: tuple | None  # FaceMetaData (sex, glasses)


def list_faces(root: pathlib.Path) -> list[Item]:
    """Every AFLW face with the five points, in face_id order (DataErrors for bad rows)."""
    path = find_database(root)
    rows = _parse_rows(path, _read_tables(path))
    good = [r for r in rows if not isinstance(r, DataError)]
    swap = bool(good) and np.mean([r.xy[0, 0] > r.xy[1, 0] for r in good]) > 0.5
    if swap:
        logging.info("AFLW: 'left' points lie image-right in most faces: swapping left/right")
    yaw_sign = _yaw_sign([r for r in good if r.yaw is not None], swap)
    image_root = path.parent / "flickr"
    return [_to_face(r, swap, yaw_sign, image_root) if isinstance(r, _Row) else r for r in rows]


def _read_tables(path: pathlib.Path) -> dict[str, Any]:
    """The tables list_faces reads, as Python lists and dicts keyed by face_id."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        codes = dict(_query(db, path, "SELECT code, feature_id FROM FeatureCoordTypes"))
        missing = [c for c in FIVE_CODES if c not in codes]
        if missing:
            raise DataError(f"{path}: FeatureCoordTypes lacks codes {missing}")
        faces = _query(db, path, "SELECT f.face_id, i.filepath FROM Faces f JOIN FaceImages i "
                                 "ON f.file_id = i.file_id ORDER BY f.face_id")
        coords: dict[int, dict[int, tuple]] = {}
        for face_id, feature_id, x, y in _query(
                db, path, "SELECT face_id, feature_id, x, y FROM FeatureCoords"):
            coords.setdefault(face_id, {})[feature_id] = (x, y)
        rects = {r[0]: r[1:] for r in _query(db, path, "SELECT face_id, x, y, w, h FROM FaceRect")}
        yaws = dict(_query(db, path, "SELECT face_id, yaw FROM FacePose"))
        meta = {r[0]: r[1:] for r in _query(db, path, "SELECT face_id, sex, glasses FROM FaceMetaData")}
    finally:
        db.close()
    return {"ids": [codes[c] for c in FIVE_CODES], "faces": faces, "coords": coords,
            "rects": rects, "yaws": yaws, "meta": meta}


def _parse_rows(path: pathlib.Path, tables: dict[str, Any]) -> list[_Row | DataError]:
    """A _Row (or the DataError of a bad value) per face that has all five points."""
    ids, rows, lacking = tables["ids"], [], 0
    for face_id, filepath in tables["faces"]:
        at = f"{path} face_id {face_id}"
        points = tables["coords"].get(face_id, {})
        if any(i not in points for i in ids):
            lacking += 1
            continue
        try:
            if not isinstance(filepath, str):
                raise DataError(f"{at}: FaceImages.filepath must be text, got {filepath!r}")
            xy = parse_floats([str(v) for i in ids for v in points[i]], at, "a coordinate").reshape(5, 2)
            yaw = tables["yaws"].get(face_id)
            yaw = None if yaw is None else float(parse_floats([str(yaw)], at, "yaw")[0])
            rect = tables["rects"].get(face_id)
            rect = None if rect is None else parse_floats([str(v) for v in rect], at, "a FaceRect value")
        except DataError as e:
            rows.append(e)
            continue
        rows.append(_Row(filepath, at, xy, yaw, rect, tables["meta"].get(face_id)))
    if lacking:
        logging.info("AFLW: %d faces lack one of the five points (%s) and are left out",
                     lacking, ", ".join(FIVE_CODES))
    return rows


def _to_face(row: _Row, swap: bool, yaw_sign: float, image_root: pathlib.Path) -> AnnotatedFace:
    """A parsed row in our conventions: image-left points first, yaw > 0 to the image-right."""
    xy = row.xy[[1, 0, 2, 4, 3]] if swap else row.xy
    labels = {"pose": UNKNOWN if row.yaw is None else pose_class(yaw_sign * math.degrees(row.yaw))}
    sex, glasses = row.meta if row.meta else (None, None)
    labels["gender"] = {"m": 1, "f": 0}.get(str(sex).strip().lower(), UNKNOWN)
    labels["glasses"] = int(glasses) if glasses in (0, 1) else UNKNOWN
    return AnnotatedFace(image_path=str(image_root / row.filepath), file=f"flickr/{row.filepath}",
                         landmarks=xy, where=row.at, labels=labels, source_box=row.rect)


def _yaw_sign(rows: list[_Row], swap: bool) -> float:
    """+1 if AFLW's yaw grows as the nose moves image-right (our sign), else -1."""
    if len(rows) < 2:
        return 1.0
    xy = np.stack([r.xy[[1, 0, 2, 4, 3]] if swap else r.xy for r in rows])
    yaw = np.array([r.yaw for r in rows])
    with np.errstate(all="ignore"):  # absurdly large (garbage) values may overflow to inf / NaN
        iod = np.maximum(np.abs(xy[:, 1, 0] - xy[:, 0, 0]), 1e-6)
        offset = (xy[:, 2, 0] - (xy[:, 0, 0] + xy[:, 1, 0]) / 2) / iod
        total = float(np.sum((yaw - yaw.mean()) * (offset - offset.mean())))
    sign = -1.0 if total < 0 else 1.0  # NaN (overflowed) keeps our sign
    if sign < 0:
        logging.info("AFLW: yaw grows as the nose moves image-left: flipping yaw's sign")
    return sign


class TcdcnAflw(FaceBuilder):
    """AFLW: every face with the five points; pose from yaw, gender and glasses from metadata."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the AFLW folder holding aflw.sqlite and flickr/."
    HOMEPAGE = "https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/aflw/"
    NUM_POINTS = 5
    LABELS = ("pose", "gender", "glasses")
    SPLITS = ("train",)

    def list_faces(self, root: pathlib.Path) -> dict[str, list[Item]]:
        return {"train": list_faces(root)}

    def annotation_files(self, root: pathlib.Path) -> list[pathlib.Path]:
        return [root / "aflw.sqlite", root / "data" / "aflw.sqlite"]


def load(config):
    """sources.Splits: config.num_test and config.num_val faces held out (rng(data_seed)), the rest train."""
    from tcdcn_jax.data.pipeline import ArrayDataset
    from tcdcn_jax.data.sources import Splits
    from tcdcn_jax.data.tfds_common import holdout, known_labels, prepare, read_split, to_arrays

    builder = prepare(TcdcnAflw, config.data_dir, skip_bad=bool(config.get("skip_bad_rows", False)))
    raw = read_split(builder, "train")
    k = int(config.num_landmarks)
    arrays = to_arrays(raw, k, known_labels([raw], TcdcnAflw.LABELS))
    rest, test = holdout(arrays, int(config.num_test), int(config.data_seed))
    train, val = holdout(rest, int(config.num_val), int(config.data_seed) + 1)
    logging.info("aflw: train %d, validation %d, test %d faces", len(train["image"]),
                 len(val["image"]), len(test["image"]))
    return Splits(ArrayDataset(train), ArrayDataset(val), ArrayDataset(test), num_landmarks=k)

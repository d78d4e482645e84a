"""WFLW (Wu et al. 2018): 98 points and six binary attributes per face.

Published layout (config.data_dir holds both unzipped archives):

    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt   (7,500 faces)
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt    (2,500 faces)
    WFLW_images/<event folder>/<name>.jpg

Each line: x0 y0 ... x97 y97 (196 values), the face rect x_min y_min x_max y_max, six attributes
(pose, expression, illumination, make-up, occlusion, blur; 0/1), the image path relative to
WFLW_images/. Coordinates are taken as 0-based pixels. The rect becomes `source_box` (as left, top,
width, height); the six attributes are stored as `attributes` (in ATTRIBUTES order), and
`sources.load` puts the test faces with each attribute into `Splits.extra_tests` under its name
(the usual WFLW subsets), with 'full' = the whole test set.
"""

from __future__ import annotations

import pathlib

import numpy as np

from tcdcn_jax.data.image_io import DataError, where
from tcdcn_jax.data.tfds_common import (AnnotatedFace, FaceBuilder, Item, parse_annotation_lines,
                                        parse_floats)

NUM_POINTS = 98
ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
NUM_FIELDS = 2 * NUM_POINTS + 4 + len(ATTRIBUTES) + 1
ANNOTATION_DIR = "WFLW_annotations/list_98pt_rect_attr_train_test"
SPLIT_FILES = {"train": "list_98pt_rect_attr_train.txt", "test": "list_98pt_rect_attr_test.txt"}


def parse_line(text: str, root: pathlib.Path, ann: pathlib.Path, line: int) -> AnnotatedFace:
    at = where(ann, line)
    fields = text.split()
    if len(fields) != NUM_FIELDS:
        raise DataError(f"{at}: expected {NUM_FIELDS} fields (196 coordinates, 4 rect values, "
                        f"6 attributes, image path), got {len(fields)}")
    xy = parse_floats(fields[:2 * NUM_POINTS], at, "a coordinate").reshape(NUM_POINTS, 2)
    rect = parse_floats(fields[2 * NUM_POINTS:2 * NUM_POINTS + 4], at, "a rect value")
    attrs = fields[2 * NUM_POINTS + 4:-1]
    if any(a not in ("0", "1") for a in attrs):
        raise DataError(f"{at}: attributes must be 0 or 1, got {attrs}")
    with np.errstate(over="ignore"):
        box = np.array([rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]])
    if not np.all(np.isfinite(box)):
        raise DataError(f"{at}: rect {rect.tolist()} is too large (its size overflows)")
    rel = fields[-1].replace("\\", "/")
    return AnnotatedFace(image_path=str(root / "WFLW_images" / rel), file=rel, landmarks=xy,
                         where=at, source_box=box,
                         extra={"attributes": np.array([int(a) for a in attrs], np.int8)})


def list_split(root: pathlib.Path, split: str) -> list[Item]:
    return parse_annotation_lines(root / ANNOTATION_DIR / SPLIT_FILES[split], root, parse_line)


class TcdcnWflw(FaceBuilder):
    """WFLW: 98 points; 7,500 training and 2,500 test faces with six attribute flags."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder holding WFLW_annotations/ and WFLW_images/."
    HOMEPAGE = "https://wywu.github.io/projects/LAB/WFLW.html"
    NUM_POINTS = NUM_POINTS
    LABELS = ()
    EXTRA = {"attributes": ((len(ATTRIBUTES),), np.int8)}
    SPLITS = ("train", "test")

    def list_faces(self, root: pathlib.Path) -> dict[str, list[Item]]:
        return {split: list_split(root, split) for split in self.SPLITS}

    def annotation_files(self, root: pathlib.Path) -> list[pathlib.Path]:
        return [root / ANNOTATION_DIR / name for name in SPLIT_FILES.values()]


def load(config):
    """sources.Splits: train minus config.num_val held-out faces; test; extra_tests full + the six
    attribute subsets of test."""
    from tcdcn_jax.data.tfds_common import load_source, prepare, read_split

    splits = load_source(TcdcnWflw, config, train="train", test="test")
    builder = prepare(TcdcnWflw, config.data_dir, skip_bad=bool(config.get("skip_bad_rows", False)))
    attrs = read_split(builder, "test")["attributes"]
    extra = {"full": splits.test}
    for i, name in enumerate(ATTRIBUTES):
        rows = np.flatnonzero(attrs[:, i] == 1)
        if rows.size:
            extra[name] = splits.test.subset(rows)
    splits.extra_tests = extra
    return splits

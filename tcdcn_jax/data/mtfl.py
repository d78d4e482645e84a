r"""MTFL (Multi-Task Facial Landmark, Zhang et al. ECCV 2014): 5 points, gender, smile, glasses, pose.

Published layout (the MTFL.zip folder, given as config.data_dir):

    training.txt   10,000 faces: lfw_5590\... and net_7876\... images
    testing.txt     2,995 faces: AFLW\... images
    lfw_5590/  net_7876/  AFLW/

Each line: image path (backslashes), x1..x5, y1..y5 (left eye, right eye, nose, left mouth corner,
right mouth corner, image-left first), then gender (1 male, 2 female), smile (1 yes, 2 no), glasses
(1 yes, 2 no), head pose (1 left profile, 2 left, 3 frontal, 4 right, 5 right profile).
Coordinates are taken as the published pixel values (0-based, see docs/real_datasets.md); the codes
become our labels: gender 1 = male, smile 1 = smiling, glasses 1 = wearing, pose = code - 1.
"""

from __future__ import annotations

import pathlib

import numpy as np

from tcdcn_jax.data.image_io import DataError, where
from tcdcn_jax.data.tfds_common import (AnnotatedFace, FaceBuilder, Item, parse_annotation_lines,
                                        parse_code, parse_floats)

NUM_FIELDS = 15
YES_NO = {"1": 1, "2": 0}
POSE_CODES = {str(c): c - 1 for c in range(1, 6)}
SPLIT_FILES = {"train": "training.txt", "test": "testing.txt"}


def parse_line(text: str, root: pathlib.Path, ann: pathlib.Path, line: int) -> AnnotatedFace:
    """One MTFL annotation line -> Face (DataError naming file:line if malformed)."""
    at = where(ann, line)
    fields = text.split()
    if len(fields) != NUM_FIELDS:
        raise DataError(f"{at}: expected {NUM_FIELDS} fields (path, 5 x, 5 y, gender, smile, "
                        f"glasses, pose), got {len(fields)}")
    rel = fields[0].replace("\\", "/")
    xy = parse_floats(fields[1:11], at, "a coordinate")
    labels = {
        "gender": parse_code(fields[11], YES_NO, at, "gender"),
        "smile": parse_code(fields[12], YES_NO, at, "smile"),
        "glasses": parse_code(fields[13], YES_NO, at, "glasses"),
        "pose": parse_code(fields[14], POSE_CODES, at, "pose"),
    }
    return AnnotatedFace(image_path=str(root / rel), file=rel, where=at,
                         landmarks=np.stack([xy[:5], xy[5:]], axis=1), labels=labels)


def list_split(root: pathlib.Path, split: str) -> list[Item]:
    return parse_annotation_lines(root / SPLIT_FILES[split], root, parse_line)


class TcdcnMtfl(FaceBuilder):
    """MTFL: 10,000 training faces (LFW + web), 2,995 test faces (AFLW); 5 points and 4 attributes."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Unzip MTFL.zip and pass its folder (training.txt, testing.txt)."
    HOMEPAGE = "http://mmlab.ie.cuhk.edu.hk/projects/TCDCN.html"
    NUM_POINTS = 5
    LABELS = ("pose", "gender", "smile", "glasses")
    SPLITS = ("train", "test")

    def list_faces(self, root: pathlib.Path) -> dict[str, list[Item]]:
        return {split: list_split(root, split) for split in self.SPLITS}

    def annotation_files(self, root: pathlib.Path) -> list[pathlib.Path]:
        return [root / name for name in SPLIT_FILES.values()]


def load(config):
    """sources.Splits: MTFL train minus config.num_val held-out faces, validation, the AFLW test set."""
    from tcdcn_jax.data.tfds_common import load_source

    return load_source(TcdcnMtfl, config, train="train", test="test")

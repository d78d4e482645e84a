"""300-W (Sagonas et al. 2013): 68 iBUG points in `.pts` files next to each photo.

Published layout (config.data_dir holds the unzipped folders):

    afw/  helen/trainset/  helen/testset/  lfpw/trainset/  lfpw/testset/  ibug/

Each face is `<name>.pts` plus `<name>.jpg` or `.png` with the same stem. A `.pts` file reads
`version: 1`, `n_points: 68`, `{`, 68 lines `x y`, `}`; its coordinates are 1-based pixels (the top-left
pixel is (1, 1)), so 1 is subtracted to reach the project's 0-based convention.

Splits (the usual protocol): train 3,148 = afw + helen/trainset + lfpw/trainset; common 554 =
helen/testset + lfpw/testset; challenging 135 = ibug; full 689 = common + challenging. These names are
what `sources.load` puts in `Splits.extra_tests` (test = full) and what evaluation tools may ask for.
"""

from __future__ import annotations

import pathlib

import numpy as np

from tcdcn_jax.data.image_io import DataError, where
from tcdcn_jax.data.tfds_common import AnnotatedFace, FaceBuilder, Item, parse_floats

NUM_POINTS = 68
SPLIT_FOLDERS = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "common": ("helen/testset", "lfpw/testset"),
    "challenging": ("ibug",),
    "full": ("helen/testset", "lfpw/testset", "ibug"),
}
TEST_SPLITS = ("common", "challenging", "full")
IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


def read_pts(path: pathlib.Path, num_points: int = NUM_POINTS) -> np.ndarray:
    """A version-1 `.pts` file -> num_points x 2 float64, still 1-based; DataError naming file:line."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read .pts file ({e})") from e
    lines = [line.strip() for line in lines]

    def line_at(i: int, what: str) -> str:
        if i >= len(lines):
            raise DataError(f"{where(path, i + 1)}: file ends early (truncated .pts?), expected {what}")
        return lines[i]

    header = line_at(0, "'version: 1'").replace(" ", "")
    if header != "version:1":
        raise DataError(f"{where(path, 1)}: expected 'version: 1', got {lines[0]!r}")
    count = line_at(1, f"'n_points: {num_points}'").replace(" ", "")
    if count != f"n_points:{num_points}":
        raise DataError(f"{where(path, 2)}: expected 'n_points: {num_points}', got {lines[1]!r}")
    if line_at(2, "'{'") != "{":
        raise DataError(f"{where(path, 3)}: expected '{{', got {lines[2]!r}")
    points = np.empty((num_points, 2))
    for k in range(num_points):
        text = line_at(3 + k, f"point {k + 1} of {num_points}")
        fields = text.split()
        if len(fields) != 2:
            raise DataError(f"{where(path, 4 + k)}: expected 'x y', got {text!r}")
        points[k] = parse_floats(fields, where(path, 4 + k), "a coordinate")
    if line_at(3 + num_points, "'}'") != "}":
        raise DataError(f"{where(path, 4 + num_points)}: expected '}}' after {num_points} points, "
                        f"got {lines[3 + num_points]!r}")
    return points


def _image_for(pts: pathlib.Path) -> pathlib.Path:
    for ext in IMAGE_EXTENSIONS:
        candidate = pts.with_suffix(ext)
        if candidate.is_file():
            return candidate
    raise DataError(f"missing image for {pts}: no {pts.stem} with any of {IMAGE_EXTENSIONS}")


def face_from_pts(pts: pathlib.Path, root: pathlib.Path) -> AnnotatedFace:
    points = read_pts(pts) - 1.0  # 1-based pixels in the file
    image = _image_for(pts)
    return AnnotatedFace(image_path=str(image), file=image.relative_to(root).as_posix(),
                         landmarks=points, where=str(pts))


def list_split(root: pathlib.Path, split: str) -> list[Item]:
    items: list[Item] = []
    for folder in SPLIT_FOLDERS[split]:
        directory = root / folder
        if not directory.is_dir():
            raise DataError(f"300-W folder {directory} is missing (split {split!r} needs "
                            f"{', '.join(SPLIT_FOLDERS[split])})")
        files = sorted(directory.glob("*.pts"))
        if not files:
            raise DataError(f"300-W folder {directory} has no .pts files")
        for pts in files:
            try:
                items.append(face_from_pts(pts, root))
            except DataError as e:
                items.append(e)
    return items


class TcdcnIbug300w(FaceBuilder):
    """300-W: 68 points; train 3,148, common 554, challenging 135, full 689."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the folder holding afw/, helen/, lfpw/ and ibug/ from 300-W."
    HOMEPAGE = "https://ibug.doc.ic.ac.uk/resources/300-W/"
    NUM_POINTS = NUM_POINTS
    LABELS = ()
    SPLITS = ("train", *TEST_SPLITS)

    def list_faces(self, root: pathlib.Path) -> dict[str, list[Item]]:
        return {split: list_split(root, split) for split in self.SPLITS}

    def annotation_files(self, root: pathlib.Path) -> list[pathlib.Path]:
        folders = sorted({f for fs in SPLIT_FOLDERS.values() for f in fs})
        return sorted(p for f in folders if (root / f).is_dir() for p in (root / f).glob("*.pts"))


def load(config):
    """sources.Splits: train minus config.num_val held-out faces; test = full; extra_tests common,
    challenging, full."""
    from tcdcn_jax.data.tfds_common import load_source

    return load_source(TcdcnIbug300w, config, train="train", test="full", extra_tests=TEST_SPLITS)

"""What `tcdcn predict` writes: JSON Lines, CSV or iBUG .pts files, and overlay PNGs.

Results are streamed: each writer writes and flushes one image's results as soon as that image is
done, so an interrupted or failed run keeps every image finished before it. Files are written whole
(a temporary file in the same folder, then renamed), so none is ever left half written.

A face is the Predictor's `to_json()` dict: box (left, top, width, height), score (the detector's,
None for a given box), landmarks (K x 2), points5 (5 x 2: image-left eye centre, image-right eye
centre, nose tip, image-left and image-right mouth corners) and aux ({task: {label, name, probs}});
pixel coordinates are 0-based, (0, 0) being the centre of the top-left pixel.

- jsonl: one line per image, in input order, self-contained (runs can be concatenated):
  {"image", "faces": [face, ...]} or {"image", "error"}, plus "drawn" (the overlay's path) with
  --draw, and the run's "weights" and "detector" (null where the boxes were given).
- csv: a header row, then one row per face: image, face (0-based index), score, left, top, width,
  height, x0, y0 ... x{K-1}, y{K-1}, the 5 points (left_eye_x, left_eye_y, ...), per auxiliary task
  its class name (or label) and that class's probability (<task>_prob), and error: an image without
  faces is one row with only image and error ("no face found" or what went wrong) filled in.
- pts: per face, <out>/<stem>_<n>.pts (n = 1, 2, ... in the order of the faces), the iBUG 300-W
  format, whose coordinates are 1-based (1 is added to ours); <stem> is the image's name without its
  extension (with its subfolders when found in a folder; a later image of the same stem gets
  <stem>-2). Overlays (--draw) are named the same way: <stem>.png.

Only the standard library is imported at module level.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from typing import Any, Iterator, Sequence, TextIO

from tcdcn_jax.photos.inputs import InputError, Item

FORMATS = ("jsonl", "csv", "pts")
FIVE_POINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
NO_FACE = "no face found"


def check_file_target(path: str, option: str) -> None:
    """InputError unless `path` can be created or overwritten as a file: its folder exists and it
    is not itself a folder. Checked before any work, so a typo costs nothing."""
    if os.path.isdir(path):
        raise InputError(f"{option} {path}: is a folder; name a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"{option} {path}: not writable")


def check_folder_target(path: str, option: str) -> None:
    """InputError unless `path` is a folder or can be made one: its parent folder exists. (A folder
    to write into is created; a missing parent is more likely a typo than a wish.)"""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{option} {path}: is a file; name a folder")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(path) and not os.path.isdir(parent):
        raise InputError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(path if os.path.isdir(path) else parent, os.W_OK):
        raise InputError(f"{option} {path}: not writable")


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb") -> Iterator[Any]:
    """A file object whose content appears at `path` only once it is complete."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class OutputNames:
    """Unique file names in one folder from image stems: 'a', then 'a-2', 'a-3' for later images of
    the same stem (a.jpg and a.png, or two folders holding a.jpg)."""

    def __init__(self, folder: str):
        self.folder = folder
        self._used: set[str] = set()

    def take(self, stem: str) -> str:
        name, n = stem, 1
        while name in self._used:
            n += 1
            name = f"{stem}-{n}"
        self._used.add(name)
        return os.path.join(self.folder, name)


def _cell(v: float | None) -> str:
    return "" if v is None else repr(v)


class JsonlWriter:
    """One JSON object per line per image (see the module docstring), flushed as it is written."""

    def __init__(self, stream: TextIO, run_info: dict[str, Any]):
        self.stream = stream
        self.run_info = run_info

    def write(self, item: Item, faces: list[dict] | None, error: str | None = None,
              extra: dict[str, Any] | None = None) -> None:
        record: dict[str, Any] = {"image": item.key}
        record.update({"error": error} if faces is None else {"faces": faces})
        record.update(self.run_info)
        record.update(extra or {})
        self.stream.write(json.dumps(record) + "\n")  # one write: a line is whole or absent
        self.stream.flush()


def csv_header(num_landmarks: int, aux_tasks: Sequence[str]) -> list[str]:
    points = [f"{c}{i}" for i in range(num_landmarks) for c in "xy"]
    five = [f"{name}_{c}" for name in FIVE_POINT_NAMES for c in "xy"]
    aux = [col for task in aux_tasks for col in (task, f"{task}_prob")]
    return ["image", "face", "score", "left", "top", "width", "height", *points, *five, *aux,
            "error"]


class CsvWriter:
    """One row per face (see the module docstring), flushed per image."""

    def __init__(self, stream: TextIO, num_landmarks: int, aux_tasks: Sequence[str]):
        self.stream = stream
        self.aux_tasks = tuple(aux_tasks)
        self.header = csv_header(num_landmarks, self.aux_tasks)
        self._line(self.header)
        self.stream.flush()

    def _line(self, cells: list[Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        self.stream.write(buf.getvalue())

    def write(self, item: Item, faces: list[dict] | None, error: str | None = None,
              extra: dict[str, Any] | None = None) -> None:
        if not faces:
            row = [item.key] + [""] * (len(self.header) - 2) + [error or NO_FACE]
            self._line(row)
        for i, face in enumerate(faces or ()):
            aux = []
            for task in self.aux_tasks:
                a = face["aux"].get(task)
                aux += ["", ""] if a is None else [
                    a["label"] if a["name"] is None else a["name"], a["probs"][a["label"]]]
            self._line([item.key, i, _cell(face["score"]), *face["box"],
                        *(v for xy in face["landmarks"] for v in xy),
                        *(v for xy in face["points5"] for v in xy), *aux, ""])
        self.stream.flush()


def pts_text(points_Kx2: Sequence[Sequence[float]]) -> str:
    """An iBUG .pts file for points in our 0-based pixels (written 1-based, as the format is)."""
    rows = "".join(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in points_Kx2)
    return f"version: 1\nn_points: {len(points_Kx2)}\n{{\n{rows}}}\n"


class PtsWriter:
    """<folder>/<stem>_<n>.pts per face; nothing for an image without faces."""

    def __init__(self, folder: str):
        self.names = OutputNames(folder)

    def write(self, item: Item, faces: list[dict] | None, error: str | None = None,
              extra: dict[str, Any] | None = None) -> None:
        if not faces:
            return
        base = self.names.take(item.stem)
        os.makedirs(os.path.dirname(base), exist_ok=True)  # the stem's subfolders
        for n, face in enumerate(faces, start=1):
            with atomic_file(f"{base}_{n}.pts", "w") as f:
                f.write(pts_text(face["landmarks"]))


def draw_overlay(rgb, faces: list[dict]):
    """A PIL RGB image: the photo with each face's box (green), landmarks (red) and tags."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for face in faces:
        left, top, width, height = face["box"]
        draw.rectangle([left, top, left + width, top + height], outline=(0, 255, 0),
                       width=max(1, round(width / 150)))
        r = max(1.0, width / 100)
        for x, y in face["landmarks"]:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
        if face["aux"]:
            label = ", ".join(str(a["label"]) if a["name"] is None else a["name"]
                              for a in face["aux"].values())
            draw.text((left, max(0, top - 12)), label, fill=(255, 255, 0))
    return canvas


def save_overlay(rgb, faces: list[dict], path: str) -> str:
    """draw_overlay saved as a PNG at `path`, atomically; returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_file(path) as f:
        draw_overlay(rgb, faces).save(f, format="PNG")
    return path

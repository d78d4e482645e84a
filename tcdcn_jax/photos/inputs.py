"""What `tcdcn predict` reads: images (files, folders, stdin) and face boxes (`--box`, a CSV).

- Files named on the command line are used as given (the image loader reports one that is not
  an image). In folders, images are recognised by their content, as Pillow identifies them, not
  by their extension: a `.jpg` holding text is skipped, a photo saved without an extension is
  found. Hidden files and folders (names starting with '.') are skipped; `recursive` walks
  subfolders.
- `-` is one image read from stdin, when its turn comes.
- Boxes: `parse_box('l,t,w,h')`; `read_box_csv` reads `path,left,top,width,height` rows (several
  rows per image: several faces; an optional header row `path,left,top,width,height`). Relative
  paths in the CSV are taken from the CSV's own folder, or else from the current folder.

Only the standard library is imported here (Pillow when a folder is scanned), so that `tcdcn --help`
stays fast.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
from typing import Callable, Sequence

STDIN = "-"
STDIN_KEY = "<stdin>"  # how outputs and messages name the image read from stdin
BOX_CSV_HEADER = ("path", "left", "top", "width", "height")

Box = tuple[float, float, float, float]


EXIT_INPUT = 2  # the exit status of a run with bad input or usage (InputError, a bad image)


class InputError(Exception):
    """Bad input or usage: reported as one line, exit status EXIT_INPUT."""


def one_line(err: BaseException | str) -> str:
    """An error's message on one line (newlines and runs of spaces joined): what stderr shows."""
    return " ".join(str(err).split()) or type(err).__name__


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to process. key: how outputs and messages name it (the path as found, or
    STDIN_KEY);
    stem: its name for output files (its path below the folder it was found in, without extension);
    path: the file on disk (None for stdin)."""

    key: str
    stem: str
    path: str | None


def parse_box(text: str) -> Box:
    """'l,t,w,h' -> 4 floats; InputError otherwise (values are judged later, against the photo)."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"--box must be left,top,width,height (4 numbers), got {text!r}")
    return values  # type: ignore[return-value]


def is_image(path: str) -> bool:
    """True when Pillow recognises the file's content as an image (it reads the header only)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decompression-bomb size warnings: still an image
            with Image.open(path):
                return True
    except Image.DecompressionBombError:
        return True  # an image, too large to decode: the loader says so when its turn comes
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return False


def _folder_images(folder: str, recursive: bool) -> tuple[list[str], int]:
    """(image files under `folder`, sorted; how many subfolders were not entered)."""
    found, skipped_dirs = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not recursive:
            skipped_dirs, dirs[:] = len(dirs), []
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.startswith(".") and os.path.isfile(path) and is_image(path):
                found.append(path)
    return found, skipped_dirs


def find_images(args: Sequence[str], recursive: bool,
                report: Callable[[str], None]) -> list[Item]:
    """Items for the command line's image arguments, in order; a folder without images or a second
    '-' is reported (one line each) and left out."""
    items: list[Item] = []
    for arg in args:
        if arg == STDIN:
            if any(it.path is None for it in items):
                report("- (stdin) given twice: stdin holds one image")
                continue
            items.append(Item(STDIN_KEY, "stdin", None))
        elif os.path.isdir(arg):
            found, skipped_dirs = _folder_images(arg, recursive)
            if not found:
                hint = (f" (it has {skipped_dirs} subfolders: pass --recursive)" if skipped_dirs
                        else "")
                report(f"{arg}: folder holds no images{hint}")
            for path in found:
                stem = os.path.splitext(os.path.relpath(path, arg))[0]
                items.append(Item(path, stem, path))
        else:  # a file, or nothing: the loader says 'no such file' in that image's turn
            items.append(Item(arg, os.path.splitext(os.path.basename(arg))[0], arg))
    return items


def read_stdin() -> bytes:
    """The image bytes on stdin; InputError when stdin is a terminal (nothing was piped in)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("- reads an image from stdin, but stdin is a terminal: pipe an image in "
                         "(tcdcn predict - < photo.jpg)")
    return sys.stdin.buffer.read()


def _csv_path(raw: str, csv_dir: str) -> str:
    """A CSV's image path as a file on disk: from the CSV's folder, else from the current one."""
    if raw == STDIN or os.path.isabs(raw):
        return raw
    beside = os.path.join(csv_dir, raw)
    return beside if os.path.exists(beside) or not os.path.exists(raw) else raw


def file_id(path: str) -> str:
    """One name per file, however it was spelled (relative, absolute, through links)."""
    return path if path == STDIN else os.path.realpath(path)


@dataclasses.dataclass
class BoxTable:
    """A box CSV: boxes per file_id (rows of one image in file order) and, per file_id, the image's
    path as the CSV gives it (resolved as the module docstring says), in first-row order."""

    source: str
    boxes: dict[str, list[Box]]
    paths: dict[str, str]


def read_box_csv(csv_file: str) -> BoxTable:
    """The `path,left,top,width,height` rows of csv_file; InputError naming the file and line."""
    if not os.path.isfile(csv_file):
        raise InputError(f"--boxes {csv_file}: no such file")
    table = BoxTable(csv_file, {}, {})
    csv_dir = os.path.dirname(os.path.abspath(csv_file))
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                row = [cell.strip() for cell in row]
                if not row or not any(row) or row[0].startswith("#"):
                    continue
                if line == 1 and tuple(c.lower() for c in row) == BOX_CSV_HEADER:
                    continue
                where = f"{csv_file}:{line}"
                if len(row) != 5:
                    raise InputError(f"{where}: expected path,left,top,width,height, got "
                                     f"{len(row)} fields")
                try:
                    box = tuple(float(v) for v in row[1:])
                except ValueError:
                    raise InputError(f"{where}: left,top,width,height must be numbers, got "
                                     f"{','.join(row[1:])}") from None
                if not all(math.isfinite(v) for v in box):
                    raise InputError(f"{where}: box values must be finite, got {','.join(row[1:])}")
                path = _csv_path(row[0], csv_dir)
                table.paths.setdefault(file_id(path), path)
                table.boxes.setdefault(file_id(path), []).append(box)  # type: ignore[arg-type]
    except UnicodeDecodeError as err:
        raise InputError(f"--boxes {csv_file}: not a text CSV file ({err.reason})") from None
    except csv.Error as err:
        raise InputError(f"--boxes {csv_file}: not a readable CSV file ({err})") from None
    if not table.boxes:
        raise InputError(f"--boxes {csv_file}: no rows (expected path,left,top,width,height)")
    return table


def items_from_csv(table: BoxTable) -> list[Item]:
    """Items for the images a box CSV lists, in its order (when no image is named)."""
    return [Item(STDIN_KEY, "stdin", None) if path == STDIN else
            Item(path, os.path.splitext(os.path.basename(path))[0], path)
            for path in table.paths.values()]

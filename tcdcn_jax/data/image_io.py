"""Reading dataset images as 8-bit grey arrays, whatever the file's mode, with errors that name the file.

Why one function: the datasets mix JPEG (RGB, grey, CMYK), PNG (palette, RGBA, 16-bit grey) and the odd
GIF, and the model only ever sees grey. Grey is ITU-R 601-2 luma (Pillow's 'L' conversion); alpha is
dropped (the colour under it is kept); 16-bit and 32-bit integer images are scaled from 0..65535 to 0..255;
float images are taken as 0..1 if their maximum is <= 1, else as 0..255.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad dataset content; the message names the file (and line, where there is one)."""


def where(path: str | os.PathLike, line: int | None = None) -> str:
    """'path:line' (or 'path') for error messages."""
    return f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)


def to_grey(img: Image.Image) -> np.ndarray:
    """An opened Pillow image as an H x W uint8 grey array."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64) / 257.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        arr = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
        return np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
    if mode == "L":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("P", "PA", "LA", "RGBA", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBa", "La"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def load_grey(path: str | os.PathLike, context: str | None = None) -> np.ndarray:
    """The image at `path` as H x W uint8 grey; DataError naming the file (and `context`) if it fails."""
    ctx = f" (listed at {context})" if context else ""
    if not os.path.isfile(path):
        raise DataError(f"missing image {os.fspath(path)}{ctx}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                grey = to_grey(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable image {os.fspath(path)}{ctx}: {e}") from e
    if grey.ndim != 2 or grey.shape[0] < 2 or grey.shape[1] < 2:
        raise DataError(f"image {os.fspath(path)}{ctx} has unusable shape {grey.shape}")
    return grey

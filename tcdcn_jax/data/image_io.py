"""Dataset errors that name the file, and dataset images as 8-bit grey.

Images are read by `tcdcn_jax.images` (EXIF orientation applied; 16-bit, float, palette, alpha and
CMYK images scaled or converted by the rule its docstring states); here its errors become DataError,
naming the file and the annotation line that lists it.
"""

from __future__ import annotations

import os

import numpy as np

from tcdcn_jax.images import load_image, to_grey


class DataError(ValueError):
    """Bad dataset content; the message names the file (and line, where there is one)."""


def where(path: str | os.PathLike, line: int | None = None) -> str:
    """'path:line' (or 'path') for error messages."""
    return f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)


def load_grey(path: str | os.PathLike, context: str | None = None) -> np.ndarray:
    """The image at `path` as H x W uint8 grey; DataError naming the file (and `context`) if it
    fails."""
    ctx = f" (listed at {context})" if context else ""
    try:
        grey = to_grey(load_image(path))
    except FileNotFoundError:
        raise DataError(f"missing image {os.fspath(path)}{ctx}") from None
    except ValueError as e:  # its message starts with the path, which ours names already
        reason = str(e).removeprefix(f"{os.fspath(path)}: ")
        raise DataError(f"unreadable image {os.fspath(path)}{ctx}: {reason}") from e
    if grey.shape[0] < 2 or grey.shape[1] < 2:
        raise DataError(f"image {os.fspath(path)}{ctx} has unusable shape {grey.shape}")
    return grey

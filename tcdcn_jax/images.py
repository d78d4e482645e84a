"""Images in: one loader for photos and datasets, upright as a viewer shows them, in 8 bits.

`load_image(image)` takes a path, bytes (or a bytearray / memoryview), a binary file object
(io.BytesIO, sys.stdin.buffer), a PIL image or a numpy array, and returns a uint8 array: H x W for
grey images, H x W x 3 (RGB) for colour ones. `to_grey` turns either into H x W uint8 grey
(ITU-R 601-2 luma, as Pillow's 'L' conversion), the model's input.

Orientation: a photo with an EXIF orientation tag (phones store photos sideways and say so in the
tag) is turned the way a photo viewer shows it (`PIL.ImageOps.exif_transpose`), whether it comes as
a path, bytes, a file object or a PIL image, so landmarks and overlays are in the orientation people
see. Arrays carry no EXIF and are taken as they are.

Pixel formats, scaled to 0..255 (never clipped from the top of a wider range):
- 8-bit: as is; 1-bit: 0 or 255; numpy bool: 0 or 255.
- 16-bit and 32-bit integer images (PIL modes I;16*, I; numpy uint16): value / 257, rounded, so
  0..65535 maps onto 0..255 (values beyond 65535 clip to 255). Other numpy integer types are
  refused, since their range is unknown.
- float (PIL mode F, numpy floats): taken as 0..1 if the image's maximum is <= 1, else as 0..255;
  then rounded and clipped to 0..255; NaN becomes 0.
- Channels: alpha is dropped (the colour under it is kept); palette, CMYK, YCbCr, LAB and HSV
  images become RGB; grey (with or without alpha) stays grey.

Errors: FileNotFoundError for a missing path, ValueError for anything unreadable or unusable, one
line naming the file (or 'image bytes'); datasets wrap these in their DataError
(`data.image_io.load_grey`).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageLike = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_GREY_MODES = ("L", "LA", "La", "1")


def _open(source, name: str) -> Image.Image:
    """Decodes a path, bytes or file object completely (a truncated file fails here, not later)."""
    try:
        with warnings.catch_warnings():
            # Large photos are normal input; Pillow still refuses sizes past twice its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                img.load()
                # In place: a large photo is held once, not twice.
                ImageOps.exif_transpose(img, in_place=True)
                return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError) as err:
        raise ValueError(f"{name}: not a readable image ({' '.join(str(err).split())})") from None


def _scale_to_uint8(arr: np.ndarray, name: str, sixteen_bit: bool = False) -> np.ndarray:
    """The module docstring's rule for one array; sixteen_bit: an integer array of PIL's 16/32-bit
    modes, whatever its numpy dtype."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * np.uint8(255)
    if sixteen_bit or arr.dtype == np.uint16:
        scaled = arr.astype(np.float64) / 257.0
    elif arr.dtype.kind == "f":
        scaled = arr.astype(np.float64)
        scaled = scaled * 255.0 if scaled.size and np.nanmax(scaled) <= 1.0 else scaled
        scaled = np.nan_to_num(scaled)
    else:
        raise ValueError(f"{name}: image array of dtype {arr.dtype} has no known range; "
                         "pass uint8 (0..255), uint16 (0..65535), float or bool")
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _from_pil(img: Image.Image, name: str) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        return _scale_to_uint8(np.asarray(img), name, sixteen_bit=img.mode != "F")
    mode = "L" if img.mode in _GREY_MODES else "RGB"
    return _pixels(img if img.mode == mode else img.convert(mode))


_BAND_BYTES = 1 << 24  # rows copied at a time by _pixels


def _pixels(img: Image.Image) -> np.ndarray:
    """A writable uint8 array of an 'L' or 'RGB' image, filled in bands of rows: numpy's view of a
    whole image goes through one bytes copy of it, which a large photo pays twice over."""
    width, height = img.size
    out = np.empty((height, width) + (() if img.mode == "L" else (3,)), np.uint8)
    rows = max(1, _BAND_BYTES // max(1, out[0].nbytes))
    for top in range(0, height, rows):
        out[top:top + rows] = np.asarray(img.crop((0, top, width, min(height, top + rows))))
    return out


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # grey + alpha, RGB + alpha: drop the alpha
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"{name}: image must be H x W or H x W x 1, 2, 3 or 4 channels, "
                         f"got shape {arr.shape}")
    return np.ascontiguousarray(_scale_to_uint8(arr, name))


def load_image(image: ImageLike, name: str | None = None) -> np.ndarray:
    """uint8 H x W (grey) or H x W x 3 (RGB) from any `ImageLike` (see the module docstring).

    `name` names the image in error messages (default: the path, or 'image bytes').
    """
    if isinstance(image, (str, os.PathLike)):
        name = name or os.fspath(image)
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{name}: no such file")
        image = _open(image, name)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        image = _open(io.BytesIO(bytes(image)), name or "image bytes")
    elif hasattr(image, "read") and not isinstance(image, Image.Image):
        name = name or str(getattr(image, "name", "image stream"))
        image = _open(io.BytesIO(image.read()), name)
    elif isinstance(image, Image.Image):
        name = name or "image"
        image = ImageOps.exif_transpose(image)
    name = name or "image array"
    arr = _from_pil(image, name) if isinstance(image, Image.Image) else _from_array(
        np.asarray(image), name)
    if min(arr.shape[:2]) < 1:
        raise ValueError(f"{name}: image has no pixels (shape {arr.shape})")
    return arr


def to_grey(arr: np.ndarray) -> np.ndarray:
    """uint8 H x W grey (ITU-R 601-2 luma, as Pillow's convert('L')) of a `load_image` array."""
    return arr if arr.ndim == 2 else np.asarray(Image.fromarray(arr).convert("L"))

"""Face boxes, crops and coordinates: the one place training, evaluation and prediction crop a face.

Conventions (every module maps points and pixels through these functions):

- Pixels: pixel (row i, col j) has its centre at (x, y) = (j, i), 0-based.
- Box: (left, top, width, height) in pixels. Box-normalised coordinates u = (x - left) / width,
  v = (y - top) / height, so [0, 1] x [0, 1] covers the box edge to edge (`to_box`, `to_pixels`).
  The network reads and writes landmarks in (u, v).
- Crop grid: pixel (row r, col c) of the S x S crop samples the point u = (c + 0.5) / S,
  v = (r + 0.5) / S, so a point at (u, v) sits at crop pixel (u * S - 0.5, v * S - 0.5). A crop
  with a margin of m pixels is the same grid run from c = -m to S + m - 1 (`grid_uv`): its pixel
  (r + m, c + m) is the plain crop's pixel (r, c), bit for bit.
- Warp (augmentation moves the face inside a fixed box, in pixel space, so a rotation stays a true
  rotation when the box is not square): a photo point p goes to

      p' = C + s * R(theta) @ (p - C) + (dx * width, dy * height),   C = box centre,

  then to box-normalised (u, v); a flipped face then takes u -> 1 - u. R(theta) = [[cos, -sin],
  [sin, cos]] acts on (x, y) with y down, so theta > 0 turns the face clockwise on screen; s > 1
  zooms in. Points follow this forward map (`warp_points`); the crop samples its inverse.
- Sampling: bilinear, edge mode 'nearest' (coordinates clamped to the image, so pixels beyond the
  edge repeat the edge pixel): no artificial black border for the standardisation to react to.
- Standardisation: zero mean and unit variance per crop, over its central S x S window, with a
  variance floor VAR_EPS (a flat crop comes out near zero instead of blowing up its rounding).
- Windows: a crop may read a window of the photo instead of the whole photo, given the window's
  top-left pixel (x0, y0) (`window`): sample coordinates are shifted by that integer origin, which
  is exact in float32 while 0 <= x0 <= x, so the crop is bit for bit the whole photo's crop. A
  large photo then never needs to be converted or put on the device whole.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.ndimage
import numpy as np

# Variance floor of the per-crop standardisation: a flat crop stays finite and near 0.
VAR_EPS = 1e-8


class Warp(NamedTuple):
    """Per-face transform of the face inside its box (see the module docstring); a pytree."""

    shift_Bx2: jax.Array  # (dx, dy) as fractions of box width / height
    angle_B: jax.Array  # radians
    scale_B: jax.Array  # zoom factor
    flip_B: jax.Array  # bool: mirror u -> 1 - u


def identity_warp(batch: int) -> Warp:
    """No movement: the crop is just the box resampled (evaluation, prediction)."""
    return Warp(shift_Bx2=jnp.zeros((batch, 2), jnp.float32),
                angle_B=jnp.zeros((batch,), jnp.float32),
                scale_B=jnp.ones((batch,), jnp.float32), flip_B=jnp.zeros((batch,), bool))


def to_box(points_px_NxKx2, box_Nx4):
    """Pixel (x, y) -> box-normalised (u, v), in the inputs' dtype (numpy or jax arrays)."""
    return (points_px_NxKx2 - box_Nx4[:, None, :2]) / box_Nx4[:, None, 2:]


def to_pixels(points_uv_NxKx2, box_Nx4):
    """Box-normalised (u, v) -> pixel (x, y): x = left + u * width, y = top + v * height, in the
    inputs' dtype (numpy or jax arrays)."""
    return box_Nx4[:, None, :2] + points_uv_NxKx2 * box_Nx4[:, None, 2:]


def shift_to_box(lm_win_BxTxKx2: jax.Array, offsets_Tx2: np.ndarray, size: int) -> jax.Array:
    """Landmarks of crop windows moved by (dx, dy) crop pixels -> the box frame:
    u = u_win + dx / S, v = v_win + dy / S."""
    shift_Tx2 = jnp.asarray(offsets_Tx2, jnp.float32) / float(size)
    return lm_win_BxTxKx2 + shift_Tx2[None, :, None, :]


def warp_affine(box_Bx4: jax.Array, warp: Warp) -> tuple[jax.Array, jax.Array]:
    """(A_Bx2x2, b_Bx2): q = A @ p + b is photo pixel p = (x, y) in the warped crop's (u, v)."""
    box_Bx4 = jnp.asarray(box_Bx4, jnp.float32)
    left, top, width, height = (box_Bx4[:, i] for i in range(4))
    centre_Bx2 = jnp.stack([left + 0.5 * width, top + 0.5 * height], axis=-1)
    cos, sin = jnp.cos(warp.angle_B), jnp.sin(warp.angle_B)
    rot_Bx2x2 = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
    # Pixel displacement from the centre -> normalised displacement: divide rows by (width, height).
    inv_size_Bx2 = 1.0 / jnp.stack([width, height], axis=-1)
    a_Bx2x2 = inv_size_Bx2[:, :, None] * warp.scale_B[:, None, None] * rot_Bx2x2
    b_Bx2 = 0.5 + warp.shift_Bx2 - jnp.einsum("bij,bj->bi", a_Bx2x2, centre_Bx2)
    # The flip u -> 1 - u is one more affine step: negate the u row, and b_u -> 1 - b_u.
    sign_B = jnp.where(warp.flip_B, -1.0, 1.0)
    a_Bx2x2 = a_Bx2x2.at[:, 0, :].multiply(sign_B[:, None])
    b_Bx2 = b_Bx2.at[:, 0].set(jnp.where(warp.flip_B, 1.0 - b_Bx2[:, 0], b_Bx2[:, 0]))
    return a_Bx2x2, b_Bx2


def _invert_affine(a_Bx2x2: jax.Array, b_Bx2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Closed-form inverse of q = A p + b (2x2, exact and cheap; A is a scaled rotation/flip)."""
    a, b, c, d = a_Bx2x2[:, 0, 0], a_Bx2x2[:, 0, 1], a_Bx2x2[:, 1, 0], a_Bx2x2[:, 1, 1]
    det = a * d - b * c
    inv_Bx2x2 = jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-c, a], -1)], -2) / det[:, None, None]
    return inv_Bx2x2, -jnp.einsum("bij,bj->bi", inv_Bx2x2, b_Bx2)


def warp_points(points_px_BxKx2: jax.Array, box_Bx4: jax.Array, warp: Warp) -> jax.Array:
    """Photo pixel points -> box-normalised (u, v) in the warped crop's frame (the forward map)."""
    a_Bx2x2, b_Bx2 = warp_affine(box_Bx4, warp)
    uv_BxKx2 = jnp.einsum("bij,bkj->bki", a_Bx2x2, jnp.asarray(points_px_BxKx2, jnp.float32))
    return uv_BxKx2 + b_Bx2[:, None, :]


def grid_uv(size: int, margin: int = 0) -> jax.Array:
    """(S + 2m,) box-normalised positions (c + 0.5) / S, c = -m .. S + m - 1, of the crop grid."""
    return (jnp.arange(-margin, size + margin, dtype=jnp.float32) + 0.5) / size


def sample_points(box_Bx4: jax.Array, size: int, warp: Warp | None = None,
                  margin: int = 0) -> tuple[jax.Array, jax.Array]:
    """(x_BxN, y_BxN): the photo pixel each crop pixel samples, N = (S + 2m)^2, row-major."""
    box_Bx4 = jnp.asarray(box_Bx4, jnp.float32)
    warp = identity_warp(box_Bx4.shape[0]) if warp is None else warp
    grid_L = grid_uv(size, margin)
    side = grid_L.shape[0]
    # Row-major pixel order: q_u varies along columns, q_v along rows.
    q_u = jnp.broadcast_to(grid_L[None, :], (side, side)).reshape(-1)
    q_v = jnp.broadcast_to(grid_L[:, None], (side, side)).reshape(-1)
    inv_Bx2x2, inv_b_Bx2 = _invert_affine(*warp_affine(box_Bx4, warp))
    x_BxN = inv_Bx2x2[:, 0, 0:1] * q_u + inv_Bx2x2[:, 0, 1:2] * q_v + inv_b_Bx2[:, 0:1]
    y_BxN = inv_Bx2x2[:, 1, 0:1] * q_u + inv_Bx2x2[:, 1, 1:2] * q_v + inv_b_Bx2[:, 1:2]
    return x_BxN, y_BxN


def bilinear(image_BxHxW: jax.Array, x_BxN: jax.Array, y_BxN: jax.Array) -> jax.Array:
    """Bilinear samples at pixel coordinates (x, y), edge mode 'nearest' (coordinates clamped).

    map_coordinates indexes (row, col) = (y, x); measured on this CPU it is ~1.5x faster than a
    hand-written flat gather at batch 256.
    """
    sample = functools.partial(jax.scipy.ndimage.map_coordinates, order=1, mode="nearest")
    image_BxHxW = jnp.asarray(image_BxHxW).astype(jnp.float32)
    return jax.vmap(lambda im, x, y: sample(im, [y, x]))(image_BxHxW, x_BxN, y_BxN)


def standardise(img_BxLxL: jax.Array, margin: int = 0) -> jax.Array:
    """Zero mean, unit variance with the statistics of each crop's central window (all of it for
    margin 0), so a crop with margin stays the plain crop's values in its centre."""
    side = img_BxLxL.shape[1] - 2 * margin
    centre = img_BxLxL[:, margin:margin + side, margin:margin + side]
    mean_B11 = centre.mean(axis=(1, 2), keepdims=True)
    var_B11 = jnp.square(centre - mean_B11).mean(axis=(1, 2), keepdims=True)
    return (img_BxLxL - mean_B11) * jax.lax.rsqrt(var_B11 + VAR_EPS)


def crop(image_BxHxW: jax.Array, box_Bx4: jax.Array, size: int, warp: Warp | None = None,
         margin: int = 0, origin_Bx2: jax.Array | None = None) -> jax.Array:
    """img_BxLxLx1 float32, L = S + 2m: each face's box resampled on the crop grid, standardised.

    Args:
      image_BxHxW: uint8 or float grey images (one per face), or windows of the photos.
      box_Bx4: (left, top, width, height) in photo pixels.
      size: S, the side of the crop the network reads.
      warp: per-face transform (augmentation); None: the box as it is.
      margin: m extra grid pixels per side (TCDCN-Averaged's shifted windows).
      origin_Bx2: integer (x0, y0) of each window's top-left pixel in the photo (see `window`);
        None: image_BxHxW are the whole photos.
    """
    if image_BxHxW.ndim != 3:
        raise ValueError(f"image must be B x H x W, got shape {image_BxHxW.shape}")
    batch = image_BxHxW.shape[0]
    if box_Bx4.shape != (batch, 4):
        raise ValueError(f"box must be ({batch}, 4), got {box_Bx4.shape}")
    if size < 1 or margin < 0:
        raise ValueError(f"size must be positive and margin >= 0, got {size}, {margin}")
    x_BxN, y_BxN = sample_points(box_Bx4, size, warp, margin)
    if origin_Bx2 is not None:
        origin_Bx2 = jnp.asarray(origin_Bx2, jnp.float32)
        x_BxN, y_BxN = x_BxN - origin_Bx2[:, 0:1], y_BxN - origin_Bx2[:, 1:2]
    side = size + 2 * margin
    img_BxLxL = bilinear(image_BxHxW, x_BxN, y_BxN).reshape(batch, side, side)
    return standardise(img_BxLxL, margin)[..., None]


def window(box: Sequence[float], size: int, image_hw: Sequence[int],
           margin: int = 0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the photo pixels [x0, x1) x [y0, y1) an unwarped crop of `box` reads.

    Covers every sample's bilinear neighbours with a pixel to spare for float rounding, clipped to
    the photo (a crop clamps there anyway); never empty, and x0 <= every sample x unless x0 = 0.
    """
    left, top, width, height = (float(v) for v in box)
    lo, hi = (0.5 - margin) / size, (size + margin - 0.5) / size
    out = []
    for start, extent, limit in ((left, width, image_hw[1]), (top, height, image_hw[0])):
        a, b = sorted((start + lo * extent, start + hi * extent))
        first = min(max(math.floor(a) - 1, 0), limit - 1)
        out.append((first, max(min(math.floor(b) + 3, limit), first + 1)))
    (x0, x1), (y0, y1) = out
    return x0, y0, x1, y1

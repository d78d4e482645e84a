"""Face crop + augmentation on device: one affine resampling per face, whole batches, jittable.

Coordinate mapping (shared by image and landmarks, so they cannot drift apart):

- Pixels follow the project convention: pixel (row i, col j) has its centre at (x, y) = (j, i).
- Box-normalised coordinates: u = (x - left) / width, v = (y - top) / height; [0, 1] x [0, 1] covers
  the box edge to edge.
- Output pixel (row r, col c) of the S x S crop samples the box-normalised point
  u = (c + 0.5) / S, v = (r + 0.5) / S. So a point at (u, v) appears at output pixel coordinates
  x_out = u * S - 0.5, y_out = v * S - 0.5.
- Augmentation moves the face inside a fixed box, in pixel space (so a rotation is a true rotation
  of the face even when the box is not square). A source pixel point p goes to

      p' = C + s * R(theta) @ (p - C) + (dx * width, dy * height),   C = box centre,

  then to box-normalised (u, v); a flipped face then takes u -> 1 - u and its landmark indices are
  permuted with `flip_perm` (new[k] = mirrored old[flip_perm[k]]).
  R(theta) = [[cos, -sin], [sin, cos]] acts on (x, y) with y down, so theta > 0 turns the face
  clockwise on screen; s > 1 zooms in.
  The returned landmarks are exactly this forward map; the image samples its inverse.

Resampling is bilinear (`jax.scipy.ndimage.map_coordinates`, order=1) with edge mode 'nearest'
(sample coordinates clamped to the image, so pixels beyond the edge repeat the edge pixel), which
adds no artificial black borders for the per-image standardisation to react to. The crop is then
standardised per image to zero mean and unit variance.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.ndimage
import numpy as np

# Variance floor of the per-image standardisation: a flat crop stays finite (it comes out all 0).
_VAR_EPS = 1e-8

_GEOMETRY_KEYS = ("image", "box", "landmarks")
NUM_POSE_CLASSES = 5


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the per-face random transform (the paper's small shifts, rotations, zooms, flips).

    max_shift: largest translation along each axis, as a fraction of the box width / height.
    max_rotation_deg: largest in-plane rotation about the box centre, degrees.
    scale_range: (low, high) zoom factor, drawn uniformly; > 1 makes the face bigger in the crop.
    flip: mirror half the faces at random (needs a `flip_perm`).
    """

    max_shift: float = 0.05
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    flip: bool = False

    def __post_init__(self) -> None:
        # A config file may hand in a list; stay hashable (the config is a static jit argument).
        scale_range = tuple(float(s) for s in self.scale_range)
        object.__setattr__(self, "scale_range", scale_range)
        if len(scale_range) != 2 or not 0.0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high), 0 < low <= high; got {scale_range}")
        if not self.max_shift >= 0.0:
            raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")
        if not self.max_rotation_deg >= 0.0:
            raise ValueError(f"max_rotation_deg must be >= 0, got {self.max_rotation_deg}")


class AugmentParams(NamedTuple):
    """Per-face transform; a pytree, so it can be sampled inside jit."""

    shift_Bx2: jax.Array  # (dx, dy) as fractions of box width / height
    angle_B: jax.Array  # radians
    scale_B: jax.Array  # zoom factor
    flip_B: jax.Array  # bool: mirror u -> 1 - u and permute landmarks


def identity_params(batch: int) -> AugmentParams:
    """No augmentation: the crop is just the box resized (evaluation)."""
    return AugmentParams(
        shift_Bx2=jnp.zeros((batch, 2), jnp.float32),
        angle_B=jnp.zeros((batch,), jnp.float32),
        scale_B=jnp.ones((batch,), jnp.float32),
        flip_B=jnp.zeros((batch,), bool),
    )


def sample_params(key: jax.Array, batch: int, cfg: AugmentConfig) -> AugmentParams:
    """Draws independent uniform shifts, rotations, zooms and (if cfg.flip) fair-coin flips."""
    k_shift, k_angle, k_scale, k_flip = jax.random.split(key, 4)
    max_angle = math.radians(cfg.max_rotation_deg)
    low, high = cfg.scale_range
    shift_Bx2 = jax.random.uniform(k_shift, (batch, 2), jnp.float32, -cfg.max_shift, cfg.max_shift)
    angle_B = jax.random.uniform(k_angle, (batch,), jnp.float32, -max_angle, max_angle)
    scale_B = jax.random.uniform(k_scale, (batch,), jnp.float32, low, high)
    if cfg.flip:
        flip_B = jax.random.bernoulli(k_flip, 0.5, (batch,))
    else:
        flip_B = jnp.zeros((batch,), bool)
    return AugmentParams(shift_Bx2, angle_B, scale_B, flip_B)


def _forward_affine(box_Bx4: jax.Array, params: AugmentParams) -> tuple[jax.Array, jax.Array]:
    """(A_Bx2x2, b_Bx2) with output-normalised q = A @ p + b for a source pixel point p = (x, y)."""
    left, top, width, height = (box_Bx4[:, i] for i in range(4))
    centre_Bx2 = jnp.stack([left + 0.5 * width, top + 0.5 * height], axis=-1)
    cos, sin = jnp.cos(params.angle_B), jnp.sin(params.angle_B)
    rot_Bx2x2 = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)
    # Pixel displacement from the centre -> normalised displacement: divide rows by (width, height).
    inv_size_Bx2 = 1.0 / jnp.stack([width, height], axis=-1)
    a_Bx2x2 = inv_size_Bx2[:, :, None] * params.scale_B[:, None, None] * rot_Bx2x2
    b_Bx2 = 0.5 + params.shift_Bx2 - jnp.einsum("bij,bj->bi", a_Bx2x2, centre_Bx2)
    # The flip u -> 1 - u is one more affine step: negate the u row, and b_u -> 1 - b_u.
    sign_B = jnp.where(params.flip_B, -1.0, 1.0)
    a_Bx2x2 = a_Bx2x2.at[:, 0, :].multiply(sign_B[:, None])
    b_Bx2 = b_Bx2.at[:, 0].set(jnp.where(params.flip_B, 1.0 - b_Bx2[:, 0], b_Bx2[:, 0]))
    return a_Bx2x2, b_Bx2


def _invert_affine(a_Bx2x2: jax.Array, b_Bx2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Closed-form inverse of q = A p + b (2x2, exact and cheap; A is a scaled rotation/flip)."""
    a, b, c, d = a_Bx2x2[:, 0, 0], a_Bx2x2[:, 0, 1], a_Bx2x2[:, 1, 0], a_Bx2x2[:, 1, 1]
    det = a * d - b * c
    inv_Bx2x2 = jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-c, a], -1)], -2) / det[:, None, None]
    return inv_Bx2x2, -jnp.einsum("bij,bj->bi", inv_Bx2x2, b_Bx2)


def _bilinear_nearest(image_BxHxW: jax.Array, x_BxN: jax.Array, y_BxN: jax.Array) -> jax.Array:
    """Bilinear samples at pixel coordinates (x, y), edge mode 'nearest' (coordinates clamped).

    map_coordinates indexes (row, col) = (y, x); measured on this CPU it is ~1.5x faster than a
    hand-written flat gather at batch 256.
    """
    sample = functools.partial(jax.scipy.ndimage.map_coordinates, order=1, mode="nearest")
    image_BxHxW = image_BxHxW.astype(jnp.float32)
    return jax.vmap(lambda im, x, y: sample(im, [y, x]))(image_BxHxW, x_BxN, y_BxN)


def _standardise(img_BxSxS: jax.Array) -> jax.Array:
    mean_B11 = img_BxSxS.mean(axis=(1, 2), keepdims=True)
    var_B11 = jnp.square(img_BxSxS - mean_B11).mean(axis=(1, 2), keepdims=True)
    return (img_BxSxS - mean_B11) * jax.lax.rsqrt(var_B11 + _VAR_EPS)


def _check_flip_perm(flip_perm: Sequence[int] | None, num_points: int) -> np.ndarray | None:
    if flip_perm is None:
        return None
    perm_K = np.asarray(flip_perm)
    if perm_K.shape != (num_points,) or sorted(perm_K.tolist()) != list(range(num_points)):
        raise ValueError(f"flip_perm must be a permutation of range({num_points}), got {flip_perm}")
    if not np.array_equal(perm_K[perm_K], np.arange(num_points)):
        raise ValueError(f"flip_perm must be its own inverse (a mirror pairing), got {flip_perm}")
    return perm_K


def crop_and_warp(
    image_BxHxW: jax.Array,
    box_Bx4: jax.Array,
    lm_BxKx2: jax.Array,
    params: AugmentParams,
    out_size: int,
    flip_perm: Sequence[int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Crops each face box to out_size^2 through the augmentation transform (see module docstring).

    Args:
      image_BxHxW: uint8 or float grey images (all the same size).
      box_Bx4: (left, top, width, height) in pixels.
      lm_BxKx2: landmarks (x, y) in pixels.
      params: per-face transform, from `sample_params` or `identity_params`.
      out_size: S, the side of the output crop.
      flip_perm: (K,) mirror pairing of landmark indices; required when any face may be flipped
        (without it a flipped face keeps its indices, which swaps left and right labels).

    Returns:
      img_BxSxSx1 float32 standardised per image, and lm_BxKx2 box-normalised (u, v) landmarks
      in the output frame: pixel coordinates in the crop are (u * S - 0.5, v * S - 0.5).
    """
    if image_BxHxW.ndim != 3:
        raise ValueError(f"image must be B x H x W, got shape {image_BxHxW.shape}")
    batch = image_BxHxW.shape[0]
    if box_Bx4.shape != (batch, 4):
        raise ValueError(f"box must be ({batch}, 4), got {box_Bx4.shape}")
    if lm_BxKx2.ndim != 3 or lm_BxKx2.shape[0] != batch or lm_BxKx2.shape[2] != 2:
        raise ValueError(f"landmarks must be ({batch}, K, 2), got {lm_BxKx2.shape}")
    if out_size < 1:
        raise ValueError(f"out_size must be positive, got {out_size}")
    perm_K = _check_flip_perm(flip_perm, lm_BxKx2.shape[1])

    box_Bx4 = jnp.asarray(box_Bx4, jnp.float32)
    a_Bx2x2, b_Bx2 = _forward_affine(box_Bx4, params)
    lm_out_BxKx2 = jnp.einsum("bij,bkj->bki", a_Bx2x2, jnp.asarray(lm_BxKx2, jnp.float32))
    lm_out_BxKx2 = lm_out_BxKx2 + b_Bx2[:, None, :]
    if perm_K is not None:
        flip_B11 = params.flip_B[:, None, None]
        lm_out_BxKx2 = jnp.where(flip_B11, lm_out_BxKx2[:, perm_K], lm_out_BxKx2)

    # Output pixel centres in output-normalised coordinates, mapped back to source pixels.
    grid_S = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) / out_size
    # Row-major pixel order: q_u varies along columns, q_v along rows.
    q_u = jnp.broadcast_to(grid_S[None, :], (out_size, out_size)).reshape(-1)
    q_v = jnp.broadcast_to(grid_S[:, None], (out_size, out_size)).reshape(-1)
    inv_Bx2x2, inv_b_Bx2 = _invert_affine(a_Bx2x2, b_Bx2)
    x_BxN = inv_Bx2x2[:, 0, 0:1] * q_u + inv_Bx2x2[:, 0, 1:2] * q_v + inv_b_Bx2[:, 0:1]
    y_BxN = inv_Bx2x2[:, 1, 0:1] * q_u + inv_Bx2x2[:, 1, 1:2] * q_v + inv_b_Bx2[:, 1:2]
    img_BxSxS = _bilinear_nearest(jnp.asarray(image_BxHxW), x_BxN, y_BxN)
    img_BxSxS = _standardise(img_BxSxS.reshape(batch, out_size, out_size))
    return img_BxSxS[..., None], lm_out_BxKx2


def prepare_batch(
    key: jax.Array | None,
    batch: Mapping[str, Any],
    out_size: int,
    aug_cfg: AugmentConfig = AugmentConfig(),
    flip_perm: tuple[int, ...] | None = None,
) -> dict[str, jax.Array]:
    """Raw batch -> model batch. key None: no augmentation (evaluation).

    Returns {'image': img_BxSxSx1, 'landmarks': lm_BxKx2 normalised, <every other key but 'box'>
    unchanged} (labels, an eval mask, ...). Jit with out_size, aug_cfg and flip_perm static; see
    `prepare_batch_jit`.
    """
    missing = [k for k in _GEOMETRY_KEYS if k not in batch]
    if missing:
        raise ValueError(f"batch lacks {missing}; it has {sorted(batch)}")
    size = batch["image"].shape[0]
    if key is None:
        params = identity_params(size)
    else:
        if aug_cfg.flip and flip_perm is None:
            raise ValueError("aug_cfg.flip needs a flip_perm to swap left/right landmarks")
        params = sample_params(key, size, aug_cfg)
    img_BxSxSx1, lm_BxKx2 = crop_and_warp(
        batch["image"], batch["box"], batch["landmarks"], params, out_size, flip_perm
    )
    out = {k: jnp.asarray(v) for k, v in batch.items() if k not in _GEOMETRY_KEYS}
    if "pose" in out:
        # Pose classes run from left profile (0) to right profile (4): a mirror maps c -> 4 - c.
        out["pose"] = jnp.where(params.flip_B, NUM_POSE_CLASSES - 1 - out["pose"], out["pose"])
    out.update(image=img_BxSxSx1, landmarks=lm_BxKx2)
    return out


prepare_batch_jit = jax.jit(prepare_batch, static_argnames=("out_size", "aug_cfg", "flip_perm"))
"""`prepare_batch`, jitted; pass out_size, aug_cfg and flip_perm (a tuple) by keyword."""

"""Augmentation on device: random per-face warps drawn inside jit, and the batch the network reads.

The geometry (box frame, crop grid, the warp's forward map for points and its inverse for pixels,
sampling and standardisation) is `tcdcn_jax.geometry`'s; this module draws the warps (the paper's
small shifts, rotations, zooms and flips) and carries their consequences for labels: a flipped
face's landmark indices are permuted with `flip_perm` (new[k] = mirrored old[flip_perm[k]]) and
its labels mirrored as `tasks.flip_labels` says.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcdcn_jax import geometry, tasks

_GEOMETRY_KEYS = ("image", "box", "landmarks")


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


def sample_params(key: jax.Array, batch: int, cfg: AugmentConfig) -> geometry.Warp:
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
    return geometry.Warp(shift_Bx2, angle_B, scale_B, flip_B)


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
    params: geometry.Warp,
    out_size: int,
    flip_perm: Sequence[int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Crops each face box to out_size^2 through its warp, moving the landmarks with it.

    Args:
      image_BxHxW: uint8 or float grey images (all the same size).
      box_Bx4: (left, top, width, height) in pixels.
      lm_BxKx2: landmarks (x, y) in pixels.
      params: per-face warp, from `sample_params` or `geometry.identity_warp`.
      out_size: S, the side of the output crop.
      flip_perm: (K,) mirror pairing of landmark indices; required when any face may be flipped
        (without it a flipped face keeps its indices, which swaps left and right labels).

    Returns:
      img_BxSxSx1 float32 standardised per image, and lm_BxKx2 box-normalised (u, v) landmarks
      in the output frame: pixel coordinates in the crop are (u * S - 0.5, v * S - 0.5).
    """
    # The crop checks the image, the box and the size.
    img_BxSxSx1 = geometry.crop(jnp.asarray(image_BxHxW), jnp.asarray(box_Bx4, jnp.float32),
                                out_size, params)
    batch = image_BxHxW.shape[0]
    if lm_BxKx2.ndim != 3 or lm_BxKx2.shape[0] != batch or lm_BxKx2.shape[2] != 2:
        raise ValueError(f"landmarks must be ({batch}, K, 2), got {lm_BxKx2.shape}")
    perm_K = _check_flip_perm(flip_perm, lm_BxKx2.shape[1])
    lm_out_BxKx2 = geometry.warp_points(lm_BxKx2, box_Bx4, params)
    if perm_K is not None:
        flip_B11 = params.flip_B[:, None, None]
        lm_out_BxKx2 = jnp.where(flip_B11, lm_out_BxKx2[:, perm_K], lm_out_BxKx2)
    return img_BxSxSx1, lm_out_BxKx2


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
        params = geometry.identity_warp(size)
    else:
        if aug_cfg.flip and flip_perm is None:
            raise ValueError("aug_cfg.flip needs a flip_perm to swap left/right landmarks")
        params = sample_params(key, size, aug_cfg)
    img_BxSxSx1, lm_BxKx2 = crop_and_warp(
        batch["image"], batch["box"], batch["landmarks"], params, out_size, flip_perm
    )
    out = {k: jnp.asarray(v) for k, v in batch.items() if k not in _GEOMETRY_KEYS}
    for task in tasks.TASKS:
        if task in out:
            out[task] = tasks.flip_labels(task, out[task], params.flip_B)
    out.update(image=img_BxSxSx1, landmarks=lm_BxKx2)
    return out


prepare_batch_jit = jax.jit(prepare_batch, static_argnames=("out_size", "aug_cfg", "flip_perm"))
"""`prepare_batch`, jitted; pass out_size, aug_cfg and flip_perm (a tuple) by keyword."""

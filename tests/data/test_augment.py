"""Tests for the on-device crop + augmentation: image and landmarks must move together."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax import geometry
from tcdcn_jax.data import augment
from tcdcn_jax.data.augment import AugmentConfig

FLIP_PERM_5 = (1, 0, 2, 4, 3)
S = 40
H, W = 96, 104


def _blob_batch(rng: np.random.Generator, batch: int, sigma: float = 1.5):
    """Images with one bright Gaussian blob at landmark 0 (sub-pixel position), non-square boxes."""
    left = rng.uniform(15, 25, batch)
    top = rng.uniform(12, 22, batch)
    width = rng.uniform(55, 65, batch)
    height = rng.uniform(58, 70, batch)
    box = np.stack([left, top, width, height], -1).astype(np.float32)
    # Keep the points in the inner part of the box so every augmentation keeps them in the crop.
    uv = rng.uniform(0.3, 0.7, (batch, 5, 2))
    lm = np.stack([left[:, None] + uv[..., 0] * width[:, None],
                   top[:, None] + uv[..., 1] * height[:, None]], -1).astype(np.float32)
    yy, xx = np.mgrid[0:H, 0:W]
    d2 = (xx[None] - lm[:, 0, 0, None, None]) ** 2 + (yy[None] - lm[:, 0, 1, None, None]) ** 2
    image = np.round(20 + 230 * np.exp(-d2 / (2 * sigma**2))).astype(np.uint8)
    return image, box, lm


def _params(shift, angle_deg, scale, flip) -> geometry.Warp:
    return geometry.Warp(
        shift_Bx2=jnp.asarray(shift, jnp.float32),
        angle_B=jnp.deg2rad(jnp.asarray(angle_deg, jnp.float32)),
        scale_B=jnp.asarray(scale, jnp.float32),
        flip_B=jnp.asarray(flip, bool),
    )


def _argmax_xy(img_BxSxSx1: jax.Array) -> np.ndarray:
    img = np.asarray(img_BxSxSx1[..., 0])
    flat = img.reshape(img.shape[0], -1).argmax(-1)
    rows, cols = np.unravel_index(flat, img.shape[1:])
    return np.stack([cols, rows], -1).astype(np.float64)


def _dot_index(flip_B: np.ndarray) -> np.ndarray:
    # The blob sits on landmark 0; a flipped face lists it where flip_perm maps back to 0.
    return np.where(flip_B, FLIP_PERM_5.index(0), 0)


@pytest.mark.parametrize("kind", ["identity", "shift", "rotation", "zoom", "flip", "random"])
def test_bright_dot_lands_on_its_landmark(kind):
    rng = np.random.default_rng({"identity": 0, "shift": 1, "rotation": 2, "zoom": 3, "flip": 4,
                                 "random": 5}[kind])
    batch = 16
    image, box, lm = _blob_batch(rng, batch)
    zeros, ones = np.zeros(batch), np.ones(batch)
    params = {
        "identity": geometry.identity_warp(batch),
        "shift": _params(rng.uniform(-0.05, 0.05, (batch, 2)), zeros, ones, zeros),
        "rotation": _params(np.zeros((batch, 2)), rng.uniform(-15, 15, batch), ones, zeros),
        "zoom": _params(np.zeros((batch, 2)), zeros, rng.uniform(0.9, 1.1, batch), zeros),
        "flip": _params(np.zeros((batch, 2)), zeros, ones, np.arange(batch) % 2 == 0),
        "random": augment.sample_params(jax.random.key(7), batch, AugmentConfig(flip=True)),
    }[kind]
    img, lm_out = augment.crop_and_warp(image, box, lm, params, S, FLIP_PERM_5)
    assert img.shape == (batch, S, S, 1) and img.dtype == jnp.float32
    k = _dot_index(np.asarray(params.flip_B))
    uv = np.asarray(lm_out)[np.arange(batch), k]
    expected_xy = uv * S - 0.5
    err = np.abs(_argmax_xy(img) - expected_xy)
    assert err.max() <= 1.0, f"dot off its landmark by {err.max():.2f} px ({kind})"


def test_random_augmentation_actually_moves_the_face():
    rng = np.random.default_rng(11)
    image, box, lm = _blob_batch(rng, 32)
    _, lm_id = augment.crop_and_warp(image, box, lm, geometry.identity_warp(32), S)
    params = augment.sample_params(jax.random.key(3), 32, AugmentConfig())
    _, lm_aug = augment.crop_and_warp(image, box, lm, params, S)
    assert np.abs(np.asarray(lm_aug) - np.asarray(lm_id)).max() > 0.02


def test_identity_crop_gives_box_normalised_landmarks():
    rng = np.random.default_rng(1)
    image, box, lm = _blob_batch(rng, 8)
    _, lm_out = augment.crop_and_warp(image, box, lm, geometry.identity_warp(8), 60)
    expected = (lm - box[:, None, :2]) / box[:, None, 2:]
    np.testing.assert_allclose(np.asarray(lm_out), expected, atol=1e-5)


def test_rotation_is_rigid_in_pixels_even_for_a_non_square_box():
    rng = np.random.default_rng(2)
    image, box, lm = _blob_batch(rng, 8)
    scale = rng.uniform(0.9, 1.1, 8)
    params = _params(rng.uniform(-0.05, 0.05, (8, 2)), rng.uniform(-15, 15, 8), scale, np.zeros(8))
    _, lm_out = augment.crop_and_warp(image, box, lm, params, S)
    back_px = box[:, None, :2] + np.asarray(lm_out) * box[:, None, 2:]
    d_in = np.linalg.norm(lm[:, 0] - lm[:, 3], axis=-1)
    d_out = np.linalg.norm(back_px[:, 0] - back_px[:, 3], axis=-1)
    np.testing.assert_allclose(d_out, scale * d_in, rtol=1e-4)


def test_flip_mirrors_and_swaps_and_twice_is_identity():
    rng = np.random.default_rng(3)
    image, box, lm = _blob_batch(rng, 4)
    flip = _params(np.zeros((4, 2)), np.zeros(4), np.ones(4), np.ones(4))
    _, lm_id = augment.crop_and_warp(image, box, lm, geometry.identity_warp(4), S, FLIP_PERM_5)
    _, lm_flip = augment.crop_and_warp(image, box, lm, flip, S, FLIP_PERM_5)
    lm_id, lm_flip = np.asarray(lm_id), np.asarray(lm_flip)
    # The new image-left eye is the old image-right eye, mirrored.
    np.testing.assert_allclose(lm_flip[:, 0, 0], 1.0 - lm_id[:, 1, 0], atol=1e-5)
    np.testing.assert_allclose(lm_flip[:, 0, 1], lm_id[:, 1, 1], atol=1e-5)
    np.testing.assert_allclose(lm_flip[:, 3], np.stack([1 - lm_id[:, 4, 0], lm_id[:, 4, 1]], -1),
                               atol=1e-5)
    # Flipping the flipped landmarks (as box-normalised points of a unit box) gives them back.
    unit_box = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (4, 1))
    _, lm_twice = augment.crop_and_warp(image, unit_box, lm_flip, flip, S, FLIP_PERM_5)
    np.testing.assert_allclose(np.asarray(lm_twice), lm_id, atol=1e-5)


def test_flip_mirrors_the_image():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (3, H, W), dtype=np.uint8)
    # Box centred on x = (W - 1) / 2, the axis that maps pixel centre j to W - 1 - j, so mirroring
    # the crop equals cropping the mirrored image.
    box = np.tile(np.array([[11.5, 10.0, W - 24.0, H - 20.0]], np.float32), (3, 1))
    lm = np.zeros((3, 1, 2), np.float32)
    flip = _params(np.zeros((3, 2)), np.zeros(3), np.ones(3), np.ones(3))
    img_flip, _ = augment.crop_and_warp(image, box, lm, flip, S)
    img_mirror, _ = augment.crop_and_warp(image[:, :, ::-1], box, lm, geometry.identity_warp(3), S)
    np.testing.assert_allclose(np.asarray(img_flip), np.asarray(img_mirror), atol=1e-4)


def test_output_is_standardised_per_image():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (6, H, W), dtype=np.uint8) // np.arange(1, 7)[:, None, None]
    box = np.tile(np.array([[10.0, 10.0, 70.0, 70.0]], np.float32), (6, 1))
    params = augment.sample_params(jax.random.key(0), 6, AugmentConfig())
    img, _ = augment.crop_and_warp(image, box, np.zeros((6, 1, 2), np.float32), params, S)
    img = np.asarray(img)
    np.testing.assert_allclose(img.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(img.std(axis=(1, 2, 3)), 1.0, atol=1e-3)


def test_flat_image_stays_finite():
    image = np.full((2, H, W), 128, np.uint8)
    box = np.tile(np.array([[10.0, 10.0, 40.0, 40.0]], np.float32), (2, 1))
    img, _ = augment.crop_and_warp(image, box, np.zeros((2, 1, 2), np.float32),
                                   geometry.identity_warp(2), S)
    np.testing.assert_array_equal(np.asarray(img), 0.0)


def _raw_batch(seed: int = 0, batch: int = 8):
    rng = np.random.default_rng(seed)
    image, box, lm = _blob_batch(rng, batch)
    return {"image": image, "box": box, "landmarks": lm,
            "pose": rng.integers(0, 5, batch).astype(np.int32),
            "smile": rng.integers(0, 2, batch).astype(np.int32)}


def test_prepare_batch_jit_matches_no_jit_and_passes_labels():
    batch = _raw_batch()
    cfg = AugmentConfig(flip=True)
    kwargs = dict(out_size=S, aug_cfg=cfg, flip_perm=FLIP_PERM_5)
    key = jax.random.key(42)
    eager = augment.prepare_batch(key, batch, **kwargs)
    jitted = augment.prepare_batch_jit(key, batch, **kwargs)
    chex.assert_trees_all_close(eager, jitted, atol=1e-4)
    assert set(jitted) == {"image", "landmarks", "pose", "smile"}
    # Labels pass through; pose alone mirrors with a flip (test_flip_mirrors_the_pose_label).
    np.testing.assert_array_equal(np.asarray(jitted["smile"]), batch["smile"])
    chex.assert_shape(jitted["image"], (8, S, S, 1))
    chex.assert_shape(jitted["landmarks"], (8, 5, 2))


def test_prepare_batch_is_deterministic_and_key_dependent():
    batch = _raw_batch(1)
    kwargs = dict(out_size=S, aug_cfg=AugmentConfig(flip=True), flip_perm=FLIP_PERM_5)
    a = augment.prepare_batch_jit(jax.random.key(1), batch, **kwargs)
    b = augment.prepare_batch_jit(jax.random.key(1), batch, **kwargs)
    c = augment.prepare_batch_jit(jax.random.key(2), batch, **kwargs)
    chex.assert_trees_all_equal(a, b)
    assert np.abs(np.asarray(a["landmarks"]) - np.asarray(c["landmarks"])).max() > 1e-3


def test_prepare_batch_without_key_is_the_plain_crop():
    batch = _raw_batch(2)
    out = augment.prepare_batch_jit(None, batch, out_size=60, aug_cfg=AugmentConfig(flip=True),
                                    flip_perm=FLIP_PERM_5)
    expected = (batch["landmarks"] - batch["box"][:, None, :2]) / batch["box"][:, None, 2:]
    np.testing.assert_allclose(np.asarray(out["landmarks"]), expected, atol=1e-5)
    chex.assert_shape(out["image"], (8, 60, 60, 1))


def test_sample_params_respects_the_config():
    cfg = AugmentConfig(max_shift=0.02, max_rotation_deg=5.0, scale_range=[0.95, 1.0], flip=False)
    p = augment.sample_params(jax.random.key(0), 512, cfg)
    assert np.abs(np.asarray(p.shift_Bx2)).max() <= 0.02
    assert np.abs(np.asarray(p.angle_B)).max() <= math.radians(5.0) + 1e-6
    assert np.asarray(p.scale_B).min() >= 0.95 and np.asarray(p.scale_B).max() <= 1.0
    assert not np.asarray(p.flip_B).any()
    flipping = augment.sample_params(jax.random.key(0), 512, AugmentConfig(flip=True))
    flips = np.asarray(flipping.flip_B)
    assert 0.35 < flips.mean() < 0.65
    hash(cfg)  # a static jit argument must hash, even when built from a list


def test_bad_inputs_raise():
    batch = _raw_batch()
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(1.1, 0.9))
    with pytest.raises(ValueError, match="max_shift"):
        AugmentConfig(max_shift=-0.1)
    with pytest.raises(ValueError, match="flip_perm"):
        augment.prepare_batch(jax.random.key(0), batch, S, AugmentConfig(flip=True), None)
    with pytest.raises(ValueError, match="permutation"):
        augment.prepare_batch(None, batch, S, AugmentConfig(), (0, 1, 2, 3, 3))
    with pytest.raises(ValueError, match="own inverse"):
        augment.prepare_batch(None, batch, S, AugmentConfig(), (1, 2, 0, 3, 4))
    with pytest.raises(ValueError, match="lacks"):
        augment.prepare_batch(None, {"image": batch["image"]}, S)
    with pytest.raises(ValueError, match="box"):
        augment.crop_and_warp(batch["image"], batch["box"][:, :3], batch["landmarks"],
                              geometry.identity_warp(8), S)


def test_flip_mirrors_the_pose_label():
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 255, (64, 32, 32), dtype=np.uint8),
        "box": np.tile(np.array([4.0, 4.0, 24.0, 24.0], np.float32), (64, 1)),
        "landmarks": rng.uniform(8, 24, (64, 5, 2)).astype(np.float32),
        "pose": np.arange(64, dtype=np.int32) % 5,
    }
    cfg = augment.AugmentConfig(flip=True)
    perm = (1, 0, 2, 4, 3)
    out = augment.prepare_batch_jit(jax.random.PRNGKey(3), batch, out_size=20, aug_cfg=cfg,
                                    flip_perm=perm)
    params = jax.jit(augment.sample_params, static_argnums=(1, 2))(jax.random.PRNGKey(3), 64, cfg)
    flipped = np.asarray(params.flip_B)
    assert 0 < flipped.sum() < 64
    expected = np.where(flipped, 4 - batch["pose"], batch["pose"])
    np.testing.assert_array_equal(np.asarray(out["pose"]), expected)

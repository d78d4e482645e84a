"""The one geometry: box <-> pixel maps, the crop grid with and without margin, crops read from a
window of the photo equal to crops of the whole photo, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax import geometry


def test_box_frame_round_trip_and_formula():
    box = np.array([[10.0, 20.0, 40.0, 80.0]])
    px = np.array([[[10.0, 20.0], [50.0, 100.0], [30.0, 40.0]]])
    uv = geometry.to_box(px, box)
    np.testing.assert_allclose(uv, [[[0, 0], [1, 1], [0.5, 0.25]]])
    np.testing.assert_allclose(geometry.to_pixels(uv, box), px)
    assert geometry.to_pixels(uv.astype(np.float32), box.astype(np.float32)).dtype == np.float32


def test_shift_to_box_adds_the_shift_over_the_crop_side():
    lm = jnp.full((1, 2, 1, 2), 0.5)
    out = geometry.shift_to_box(lm, np.array([[0, 0], [6, -3]]), 60)
    np.testing.assert_allclose(out[0, :, 0], [[0.5, 0.5], [0.6, 0.45]], atol=1e-7)


def test_a_pixel_lands_where_the_grid_says():
    # A 60 x 60 box over a 60 x 60 image, 1 crop pixel = 1 image pixel: sample c reads x = c.
    x_BxN, y_BxN = geometry.sample_points(jnp.array([[-0.5, -0.5, 60.0, 60.0]]), 60)
    np.testing.assert_allclose(x_BxN.reshape(60, 60)[0], np.arange(60), atol=1e-5)
    np.testing.assert_allclose(y_BxN.reshape(60, 60)[:, 0], np.arange(60), atol=1e-5)
    image = np.zeros((1, 60, 60), np.uint8)
    image[0, 17, 42] = 255
    crop = np.asarray(geometry.crop(jnp.asarray(image), jnp.array([[-0.5, -0.5, 60.0, 60.0]]), 60))
    assert np.unravel_index(np.argmax(crop[0, ..., 0]), (60, 60)) == (17, 42)


def test_identity_crop_of_a_ramp_samples_pixel_centres():
    # Image value = x + 1000 y: output pixel (r, c) must read the source point
    # (left + (c + 0.5) / S * width, top + (r + 0.5) / S * height); bilinear is exact on a ramp.
    size, h, w = 40, 96, 104
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.tile((xx + 1000.0 * yy)[None], (2, 1, 1))
    box = np.array([[10.0, 20.0, 40.0, 40.0], [30.5, 5.25, 60.0, 45.0]], np.float32)
    x_BxN, y_BxN = geometry.sample_points(jnp.asarray(box), size)
    qu, qv = np.meshgrid((np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size)
    x = np.asarray(x_BxN).reshape(2, size, size)
    y = np.asarray(y_BxN).reshape(2, size, size)
    np.testing.assert_allclose(x, box[:, 0, None, None] + qu * box[:, 2, None, None], rtol=1e-6)
    np.testing.assert_allclose(y, box[:, 1, None, None] + qv * box[:, 3, None, None], rtol=1e-6)
    raw = geometry.bilinear(jnp.asarray(image, jnp.float32), x_BxN, y_BxN)
    np.testing.assert_allclose(np.asarray(raw).reshape(2, size, size), x + 1000.0 * y, atol=0.02)


def test_edge_mode_is_nearest():
    # Samples left of the image repeat column 0 instead of inventing black (or mean) pixels.
    image = np.tile(np.where(np.arange(50) < 1, 200, 50).astype(np.uint8), (1, 30, 1))
    x_N = np.linspace(-30.0, 10.0, 40)
    raw = geometry.bilinear(jnp.asarray(image), jnp.asarray(x_N[None], jnp.float32),
                            jnp.full((1, 40), 20.0, jnp.float32))
    raw = np.asarray(raw)[0]
    np.testing.assert_allclose(raw[x_N <= 0], 200.0)
    np.testing.assert_allclose(raw[x_N >= 1], 50.0)


def test_margin_grid_contains_the_plain_grid_bit_for_bit():
    np.testing.assert_array_equal(geometry.grid_uv(60, 4)[4:64], geometry.grid_uv(60))
    image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 90, 80), dtype=np.uint8))
    box = jnp.array([[10.3, 5.0, 50.0, 61.0], [-5.0, 30.5, 44.0, 40.0]], jnp.float32)
    plain = geometry.crop(image, box, 60)
    big = geometry.crop(image, box, 60, margin=4)
    assert big.shape == (2, 68, 68, 1)
    # Standardised with the centre window's statistics: its centre is the plain crop.
    np.testing.assert_allclose(big[:, 4:64, 4:64], plain, atol=1e-6)


def test_flat_crop_stays_near_zero():
    # Bilinear rounding leaves ~1e-6 of spread; the variance floor keeps it from being blown up.
    flat = jnp.full((1, 30, 30), 7, jnp.uint8)
    crop = geometry.crop(flat, jnp.array([[2.0, 2.0, 20.0, 20.0]]), 10)
    assert np.all(np.isfinite(crop)) and np.abs(crop).max() < 0.01


@pytest.mark.parametrize("box", [(1200.3, 2500.7, 180.0, 210.5), (-40.0, -25.0, 90.0, 80.0),
                                 (3930.0, 2950.0, 100.0, 70.0), (0.0, 0.0, 4000.0, 3000.0)])
def test_a_window_of_the_photo_crops_exactly_like_the_whole_photo(box):
    h, w = 3000, 4000
    photo = np.random.default_rng(1).integers(0, 256, (h, w), dtype=np.uint8)
    box_1x4 = jnp.asarray([box], jnp.float32)
    crop = jax.jit(geometry.crop, static_argnames=("size", "margin"))
    whole = crop(jnp.asarray(photo)[None], box_1x4, 60)
    x0, y0, x1, y1 = geometry.window(box, 60, (h, w))
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert (x1 - x0) <= box[2] + 4 and (y1 - y0) <= box[3] + 4  # the box's pixels, not the photo's
    part = crop(jnp.asarray(photo[y0:y1, x0:x1])[None], box_1x4, 60,
                origin_Bx2=jnp.array([[x0, y0]], jnp.float32))
    np.testing.assert_array_equal(part, whole)


def test_the_window_covers_every_sample_and_its_neighbour():
    rng = np.random.default_rng(2)
    # Compiled once per margin: 200 calls op by op would dispatch thousands of small programs.
    sample_points = jax.jit(geometry.sample_points, static_argnames=("size", "margin"))
    for _ in range(200):
        box = tuple(rng.uniform([-50, -50, 1, 1], [300, 300, 200, 200]))
        margin = int(rng.integers(0, 5))
        x0, y0, x1, y1 = geometry.window(box, 40, (320, 330), margin)
        x, y = (np.asarray(v) for v in sample_points(jnp.asarray([box], jnp.float32), size=40,
                                                     margin=margin))
        # Inside the photo, every sample's bilinear neighbours lie in the window.
        assert x0 == 0 or np.floor(x.min()) >= x0
        assert y0 == 0 or np.floor(y.min()) >= y0
        assert x1 == 330 or np.floor(x.max()) + 1 < x1
        assert y1 == 320 or np.floor(y.max()) + 1 < y1

"""TCDCN-Averaged: exact conv sharing, shift bookkeeping, a known answer, the ECCV fallback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax import geometry
from tcdcn_jax.model import averaging
from tcdcn_jax.model import networks
from tcdcn_jax.data import augment
from tests.support import random_params


@pytest.fixture(scope="module")
def report():
    model = networks.make_model(68, (), "report", "relu")
    # The rbg PRNG compiles init several times faster on CPU than threefry; flax's init (zero
    # biases, fan-in scaled kernels) keeps outputs at the scale the tolerances below are set for.
    init = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 60, 60, 1)))
    return model, init["params"]


def _averaged(model, params, image, box, offsets, mode="auto", microbatch=None):
    """averaging.averaged_landmarks compiled as one program, as eval.evaluate runs it (op by op,
    every layer of every call would compile on its own)."""
    return jax.jit(lambda p, i, b: averaging.averaged_landmarks(model, p, i, b, offsets, mode,
                                                                microbatch))(params, image, box)


def _faces(n: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (n, 96, 96)).astype(np.uint8)
    box = np.array([[20.0, 18.0, 50.0, 55.0], [10.5, 25.0, 61.0, 48.0]], np.float32)[:n]
    return image, box


def test_input_shift_by_8_px_shifts_conv4_by_one_cell_exactly(report):
    _, params = report
    big = jnp.asarray(np.random.default_rng(1).normal(size=(2, 76, 76, 1)), jnp.float32)
    full = averaging.conv_stack(params["trunk"], "relu", big)
    assert full.shape == (2, 5, 5, 80)
    for dy, dx in ((0, 0), (8, 16), (16, 8)):
        window = averaging.conv_stack(params["trunk"], "relu", big[:, dy:dy + 60, dx:dx + 60])
        assert window.shape == (2, 3, 3, 80)
        np.testing.assert_array_equal(full[:, dy // 8:dy // 8 + 3, dx // 8:dx // 8 + 3], window)


@pytest.mark.parametrize("step_px,radius", [(2, 2), (4, 2), (8, 1), (3, 1)])
def test_shared_equals_one_pass_per_window(report, step_px, radius):
    model, params = report
    image, box = _faces()
    offsets = averaging.grid_offsets(step_px, radius)
    shared, per_shared = _averaged(model, params, image, box, offsets, "shared")
    passes, per_passes = _averaged(model, params, image, box, offsets, "passes")
    assert per_shared.shape == (2, len(offsets), 68, 2)
    np.testing.assert_allclose(per_shared, per_passes, atol=2e-6)
    np.testing.assert_allclose(shared, passes, atol=2e-6)
    # The windows really differ: averaging is not a no-op.
    assert float(jnp.abs(per_passes[:, 1] - per_passes[:, 0]).max()) > 1e-4


def test_microbatches_change_nothing_including_a_padded_last_chunk(report):
    x = jnp.arange(7 * 3 * 3, dtype=jnp.float32).reshape(7, 3, 3, 1)
    fn = lambda c: c.sum(axis=(1, 2, 3)) * 2.0
    np.testing.assert_array_equal(averaging.in_microbatches(fn, x, 3), fn(x))
    with pytest.raises(ValueError, match="microbatch"):
        averaging.in_microbatches(fn, x, 0)
    model, params = report
    image, box = _faces(n=2)
    image, box = np.concatenate([image, image[::-1], image]), np.concatenate([box, box, box])
    offsets = averaging.grid_offsets(2, 2)
    whole, per_whole = _averaged(model, params, image, box, offsets, microbatch=6)
    chunked, per_chunked = _averaged(model, params, image, box, offsets,
                                     microbatch=4)  # 6 faces: 4 + 2 padded
    assert per_chunked.shape == (6, len(offsets), 68, 2)
    np.testing.assert_allclose(chunked, whole, atol=2e-6)
    np.testing.assert_allclose(per_chunked, per_whole, atol=2e-6)


def test_sharing_runs_conv1_and_conv2_once():
    cost = averaging.sharing_cost(averaging.grid_offsets(4, 2))
    assert cost["conv_maps_per_layer"] == {"conv1": 1, "conv2": 1, "conv3": 1, "conv4": 4}
    assert cost["crop_side"] == 76 and cost["translations"] == 21
    cost8 = averaging.sharing_cost(averaging.grid_offsets(8, 1, drop_corners=False))
    assert cost8["conv_maps_per_layer"] == {"conv1": 1, "conv2": 1, "conv3": 1, "conv4": 1}


def test_untranslated_window_is_the_single_pass(report):
    model, params = report
    image, box = _faces()
    data = augment.prepare_batch(None, dict(image=image, box=box,
                                            landmarks=np.zeros((2, 68, 2), np.float32)), 60)
    expected = model.apply({"params": params}, data["image"])["landmarks"]
    big = geometry.crop(jnp.asarray(image), jnp.asarray(box), 60, margin=4)
    np.testing.assert_allclose(big[:, 4:64, 4:64], data["image"], atol=1e-6)
    single, _ = _averaged(model, params, image, box, np.zeros((1, 2), np.int32))
    np.testing.assert_allclose(single, expected, atol=1e-5)


def test_default_offsets_are_centre_plus_20_small_shifts():
    offsets = averaging.grid_offsets()
    assert offsets.shape == (21, 2)
    assert offsets[0].tolist() == [0, 0]
    assert len({tuple(o) for o in offsets.tolist()}) == 21
    assert np.abs(offsets).max() == 4 and not np.any(np.all(np.abs(offsets) == 4, axis=1))


def _blob_image(cx: float, cy: float, size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return (200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.0 ** 2)))[None].astype(np.uint8)


def _centroid_predictor(img_NxSxSx1: jax.Array) -> jax.Array:
    """A translation-equivariant toy: the intensity centroid of a bright blob, box-normalised."""
    s = img_NxSxSx1.shape[1]
    w = jnp.maximum(img_NxSxSx1[..., 0] - 1.0, 0.0)
    grid = jnp.arange(s, dtype=jnp.float32)
    x = (w * grid[None, None, :]).sum((1, 2)) / w.sum((1, 2))
    y = (w * grid[None, :, None]).sum((1, 2)) / w.sum((1, 2))
    return jnp.stack([(x + 0.5) / s, (y + 0.5) / s], -1)[:, None, :]  # crop px -> u, v


def test_averaged_toy_recovers_the_known_point_and_bookkeeping_matters():
    size, margin = 60, 4
    box = np.array([[20.0, 20.0, 60.0, 60.0]], np.float32)  # 1 crop pixel = 1 image pixel
    image = _blob_image(48.0, 52.0)
    offsets = averaging.grid_offsets(2, 2)
    big = geometry.crop(jnp.asarray(image), jnp.asarray(box), size, margin=margin)
    per_window = averaging.passes_window_landmarks(_centroid_predictor, big, offsets, size, margin)
    in_box = geometry.shift_to_box(per_window, offsets, size)
    truth = np.array([(48.0 - 20.0) / 60.0, (52.0 - 20.0) / 60.0])  # u = (x - left) / width
    # Raw window predictions move against the shift; mapped back they all agree with the truth.
    np.testing.assert_allclose(per_window[0, :, 0] - per_window[0, 0, 0],
                               -offsets / size, atol=1e-5)
    np.testing.assert_allclose(in_box[0, :, 0], np.broadcast_to(truth, (21, 2)), atol=2e-3)
    np.testing.assert_allclose(in_box.mean(axis=1)[0, 0], truth, atol=2e-3)


def test_eccv_trunk_falls_back_to_passes_and_refuses_sharing():
    model = networks.make_model(5, (), "eccv", "abs_tanh")
    params = random_params(model)
    image, box = _faces()
    offsets = averaging.grid_offsets(2, 1, drop_corners=False)
    mean, per = _averaged(model, params, image, box, offsets)  # auto
    passes, _ = _averaged(model, params, image, box, offsets, "passes")
    assert per.shape == (2, 9, 5, 2)
    np.testing.assert_allclose(mean, passes, atol=1e-6)
    with pytest.raises(ValueError, match="not translation-equivariant"):
        averaging.averaged_landmarks(model, params, image, box, offsets, "shared")


def test_bad_offsets_are_refused(report):
    model, params = report
    big = jnp.zeros((1, 68, 68, 1))
    with pytest.raises(ValueError, match="margin"):
        averaging.window_landmarks(model, params, big, np.array([[6, 0]]), margin=4)
    with pytest.raises(ValueError, match="integer"):
        averaging.window_landmarks(model, params, big, np.array([[0.5, 0.0]]), margin=4)
    with pytest.raises(ValueError, match="step_px"):
        averaging.grid_offsets(0, 2)

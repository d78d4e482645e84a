"""The authors' released 68-point weights in our network, and their input rule: conformance with
their tool's output, and each step of the rule on its own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
from PIL import Image

from tcdcn_jax.model import averaging
from tcdcn_jax.photos import official
from tests.support import OFFICIAL_DIR

# The documented rule lands 1.04 px from output.txt (mean Euclidean distance over the 68 points;
# inter-ocular distance ~120 px). Finer is not determinable from the one reference image: nothing
# tried gets under ~0.6 px even after a best-fit similarity, a 1 px change of the crop moves the
# output 0.3-0.4 px, and output.txt predates the authors' last change to their compiled
# preprocessing (official.py's docstring, docs/official_weights.md).
MAX_MEAN_PX = 1.1


@pytest.fixture(scope="module")
def ref(official_params):
    return dict(params=official_params, mat=OFFICIAL_DIR / "model.mat")


def _mean_px(a_Kx2: np.ndarray, b_Kx2: np.ndarray) -> float:
    return float(np.linalg.norm(a_Kx2 - b_Kx2, axis=1).mean())


def test_conformance_with_the_authors_output(official_params, authors_example):
    rgb, box, points = authors_example
    pred = official.predict(official_params, rgb, [box])[0]
    assert pred.shape == (68, 2)
    assert _mean_px(pred, points) <= MAX_MEAN_PX


def test_a_unit_variance_input_or_the_rectangle_is_worse(official_params, authors_example):
    """What the rule's two choices are worth: (x - mean) / 127.5 against unit variance, the
    (w+1)-px square of the box's width against the box's rectangle."""
    rgb, box, points = authors_example
    x = official.preprocess(rgb, box)
    unit = (x - x.mean()) / x.std()
    lm = official._apply()(official_params, jnp.asarray(unit)[None, :, :, None])[0]
    assert _mean_px(official.to_pixels(np.asarray(lm), box), points) > 2.0
    left, top, width, height = box
    rect = np.asarray(Image.fromarray(official.matlab_rgb2gray(rgb)).crop(
        (left - 1, top - 1, left + width, top + height)))
    small = official.resize(rect, 60, 60)
    img = ((small - small.mean()) / official.INPUT_SCALE).astype(np.float32)
    lm = np.asarray(official._apply()(official_params, jnp.asarray(img)[None, :, :, None])[0])
    pix = np.array([left - 0.5, top - 0.5]) + lm * np.array([width + 1, height + 1])
    assert _mean_px(pix, points) > MAX_MEAN_PX


def test_crop_is_imcrop_of_a_w_plus_one_square():
    grey = (np.arange(100 * 100).reshape(100, 100) % 251).astype(np.uint8)
    out = official.crop(grey, (10.4, 20.6, 30, 5))  # rounds to l 10, t 21; the height is unused
    assert out.shape == (31, 31)
    np.testing.assert_array_equal(out, grey[20:51, 9:40])
    rgb = np.stack([grey, grey // 2, grey // 3], axis=-1)
    np.testing.assert_array_equal(official.crop(rgb, (10.4, 20.6, 30, 5)), rgb[20:51, 9:40])


def test_crop_repeats_the_edge_outside_the_image():
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = official.crop(grey, (0, 0, 5, 5))  # rows/cols -1..4
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[:, -1], out[:, -2])


def test_resize_keeps_flat_images_and_ramps():
    flat = np.full((91, 91), 77, np.uint8)
    np.testing.assert_array_equal(official.resize(flat), np.full((60, 60), 77))
    # Bicubic without antialiasing reproduces a linear ramp away from the mirrored edges.
    ramp = np.tile(np.arange(120, dtype=np.uint8), (120, 1))
    out = official.resize(ramp).astype(np.float64)
    u = np.arange(1, 61) * 2 + 0.5 * (1 - 2) - 1  # 0-based sample position of each output column
    np.testing.assert_allclose(out[5, 3:-3], u[3:-3], atol=0.51)


def test_antialiased_resize_is_matlabs_default():
    # A constant stays constant; a 2x downscale of a ramp averages neighbours symmetrically.
    flat = np.full((9, 7), 77, np.uint8)
    np.testing.assert_array_equal(official.resize(flat, 4, 3, antialias=True), 77)
    ramp = np.tile(np.arange(0, 160, 10, dtype=np.uint8), (4, 1))
    out = official.resize(ramp, 4, 8, antialias=True)
    np.testing.assert_array_equal(out[0, 1:-1], [25, 45, 65, 85, 105, 125])
    # Without antialiasing a 2x downscale samples between two pixels: the same mean, sharper.
    sharp = official.resize(ramp, 4, 8)
    np.testing.assert_array_equal(sharp[0, 1:-1], [25, 45, 65, 85, 105, 125])
    noise = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    assert official.resize(noise, 16, 16).std() > official.resize(noise, 16, 16, True).std() + 10


def test_preprocess_is_half_contrast_zero_mean(authors_example):
    rgb, box, _ = authors_example
    x = official.preprocess(rgb, box)
    assert x.shape == (60, 60) and x.dtype == np.float32
    assert abs(x.mean()) < 1e-5 and 0.1 < x.std() < 0.6 and np.abs(x).max() <= 2
    np.testing.assert_array_equal(official.preprocess(official.matlab_rgb2gray(rgb), box), x)


def test_pixel_mapping_round_trip():
    uv = np.array([[0.0, 0.0], [1.0, 1.0], [0.25, 0.5]])
    pix = official.to_pixels(uv, (100, 50, 59, 80))
    np.testing.assert_allclose(pix[:2], [[99.5, 49.5], [159.5, 109.5]])
    np.testing.assert_allclose(official.to_normalised(pix, (100, 50, 59, 80)), uv)


def test_translated_windows_are_crops_of_shifted_boxes(authors_example):
    """With w + 1 = 2 x 60, one input pixel is two image pixels: window (dx, dy) is the input of the
    box moved by (2 dx, 2 dy), up to the mirrored edge of that single crop (which also moves its
    mean a little)."""
    rgb, _, _ = authors_example
    box = (300, 290, 119, 119)
    offsets = np.array([[0, 0], [2, 0], [0, -2], [-2, 2]])
    wins = official.preprocess_windows(rgb, box, offsets)
    for (dx, dy), win in zip(offsets, wins):
        alone = official.preprocess(rgb, (300 + 2 * dx, 290 + 2 * dy, 119, 119))
        diff = win[2:-2, 2:-2] - alone[2:-2, 2:-2]
        assert np.abs(diff - diff.mean()).max() < 1e-5 and abs(diff.mean()) < 0.01


def test_averaged_prediction_stays_near_the_single_one(official_params, authors_example):
    rgb, box, ref = authors_example
    single = official.predict(official_params, rgb, [box])[0]
    avg = official.predict(official_params, rgb, [box], averaging.grid_offsets())[0]
    assert 0 < np.linalg.norm(avg - single, axis=1).mean() < 3
    assert np.linalg.norm(avg - ref, axis=1).mean() < 3


def test_param_tree_matches_model(ref):
    from tcdcn_jax.model import build

    want = jax.tree_util.tree_map(lambda x: (x.shape, np.dtype(x.dtype)),
                                  build.param_shapes(official.model()))
    got = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), ref["params"])
    assert got == want


def test_layout_permutations(ref):
    raw = scipy.io.loadmat(ref["mat"])["model"]
    w_fc = raw[4, 0]["weights"].ravel()[0]
    w_lm, b_lm = (c.ravel() if i else c for i, c in enumerate(raw[5, 0]["weights"].ravel()))
    fc = ref["params"]["trunk"]["fc"]["kernel"]
    h, w, c = 2, 1, 37  # MATLAB row h + 3w + 9c is our row (h*3 + w)*80 + c
    np.testing.assert_array_equal(fc[(h * 3 + w) * 80 + c], w_fc[h + 3 * w + 9 * c])
    head = ref["params"]["heads"]["landmarks"]
    np.testing.assert_array_equal(head["kernel"][:, 2 * 5], w_lm[:, 68 + 5])  # u5 <- x6
    np.testing.assert_array_equal(head["kernel"][:, 2 * 5 + 1], w_lm[:, 5])  # v5 <- y6
    np.testing.assert_array_equal(head["bias"][1::2], b_lm[:68])


def _save_model(path: Path, layers: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    model = np.empty((len(layers), 1), dtype=[("weights", "O"), ("layer_names", "O")])
    for i, (name, w, b) in enumerate(layers):
        cell = np.empty((2, 1), dtype=object)
        cell[0, 0], cell[1, 0] = w, b
        model[i, 0] = (cell, np.array([name]))
    scipy.io.savemat(path, {"model": model})


def _good_layers():
    return [(m, np.zeros(ws, np.float32), np.zeros((bl, 1), np.float32))
            for m, _, ws, bl in official._LAYERS]


def test_good_synthetic_mat_loads(tmp_path):
    path = tmp_path / "ok.mat"
    _save_model(path, _good_layers())
    assert official.load_official_params(path)["trunk"]["conv2"]["kernel"].shape == (5, 5, 20, 48)


def test_wrong_shape_raises(tmp_path):
    layers = _good_layers()
    layers[4] = ("ip1", np.zeros((500, 512), np.float32), np.zeros((512, 1), np.float32))
    path = tmp_path / "bad.mat"
    _save_model(path, layers)
    with pytest.raises(ValueError, match="ip1"):
        official.load_official_params(path)


def test_missing_layer_and_wrong_file_raise(tmp_path):
    path = tmp_path / "short.mat"
    _save_model(path, _good_layers()[:5])
    with pytest.raises(ValueError, match="expected layers"):
        official.load_official_params(path)
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"weights": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="'model'"):
        official.load_official_params(other)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError):
        official.load_official_params(junk)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="uint8 H x W or H x W x 3"):
        official.preprocess(np.zeros((10, 10), np.float32), (0, 0, 5, 5))
    with pytest.raises(ValueError, match="box width must be >= 1 px"):
        official.square_of((0, 0, 0.2, 5))
    with pytest.raises(ValueError, match="box must be"):
        official.square_of((0, 0, 5))

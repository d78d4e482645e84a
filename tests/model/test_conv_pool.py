"""conv_pool: equal to nn.Conv -> act -> 2x2 max pool, with nn.Conv's params."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.model import conv_pool
from tcdcn_jax.model import networks


def _reference(x, kernel, bias, act):
    """The report trunk without the fusion: nn.Conv('VALID'), act, 2x2 'VALID' max pool."""
    conv = nn.Conv(kernel.shape[-1], kernel.shape[:2], padding="VALID")
    y = act(conv.apply({"params": {"kernel": kernel, "bias": bias}}, x))
    return nn.max_pool(y, window_shape=(2, 2), strides=(2, 2), padding="VALID")


@pytest.mark.parametrize("shape,k,features", [
    ((3, 60, 60, 1), 5, 20),   # conv1 of the report trunk
    ((2, 68, 68, 1), 5, 20),   # its TCDCN-Averaged crop
    ((2, 28, 27, 6), 5, 7),    # odd conv output width: floor pooling drops a column
    ((2, 12, 13, 4), 3, 5),
    ((2, 9, 10, 3), 2, 4),     # even kernel: needs a zero row/column of padding
])
@pytest.mark.parametrize("activation", ["relu", "tanh", "abs_tanh"])
def test_equals_conv_act_pool(shape, k, features, activation):
    rng = np.random.default_rng(sum(shape) + k)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((k, k, shape[-1], features)) / k, jnp.float32)
    bias = jnp.asarray(rng.standard_normal(features), jnp.float32)
    act = networks.ACTIVATIONS[activation]
    want = np.asarray(_reference(x, kernel, bias, act))
    got = np.asarray(jax.jit(conv_pool.conv_act_pool, static_argnums=(3, 4))(
        x, kernel, bias, act, activation in conv_pool.MONOTONE_ACTIVATIONS))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pooling_before_a_non_monotone_activation_would_be_wrong():
    """abs(tanh) is not monotone: the monotone shortcut must differ, so the flag matters."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 20, 20, 1)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((5, 5, 1, 6)), jnp.float32)
    bias = jnp.zeros(6, jnp.float32)
    act = networks.ACTIVATIONS["abs_tanh"]
    want = np.asarray(_reference(x, kernel, bias, act))
    shortcut = np.asarray(conv_pool.conv_act_pool(x, kernel, bias, act, monotone=True))
    assert np.abs(shortcut - want).max() > 0.1


def test_params_are_nn_conv_params_same_names_shapes_and_init():
    x = jnp.zeros((1, 60, 60, 1), jnp.float32)
    key = jax.random.PRNGKey(3)
    ours = conv_pool.ConvPool(20, 5, nn.relu, True).init(key, x)["params"]
    theirs = nn.Conv(20, (5, 5), padding="VALID").init(key, x)["params"]
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(ours[name], theirs[name])


@pytest.mark.parametrize("activation", ["relu", "abs_tanh"])
def test_report_trunk_equals_the_plain_nn_conv_trunk(activation):
    """The whole report model against the same params run through nn.Conv + nn.max_pool."""
    model = networks.make_model(68, ["pose"], "report", activation)
    # flax's init, compiled (op by op it is most of this test) on the rbg PRNG (faster to compile)
    params = jax.jit(model.init)(jax.random.key(1, impl="rbg"), jnp.zeros((1, 60, 60, 1)))["params"]
    trunk = params["trunk"]
    assert {k: v["kernel"].shape for k, v in trunk.items()} == {
        "conv1": (5, 5, 1, 20), "conv2": (5, 5, 20, 48), "conv3": (3, 3, 48, 64),
        "conv4": (3, 3, 64, 80), "fc": (720, 512)}
    img = jnp.asarray(np.random.default_rng(2).standard_normal((4, 60, 60, 1)), jnp.float32)
    act = networks.ACTIVATIONS[activation]
    x = img
    for i in range(1, 4):
        x = _reference(x, trunk[f"conv{i}"]["kernel"], trunk[f"conv{i}"]["bias"], act)
    conv4 = nn.Conv(80, (3, 3), padding="VALID")
    x = act(conv4.apply({"params": trunk["conv4"]}, x)).reshape(4, -1)
    feat = act(x @ trunk["fc"]["kernel"] + trunk["fc"]["bias"])
    want = (feat @ params["heads"]["landmarks"]["kernel"]
            + params["heads"]["landmarks"]["bias"]).reshape(4, 68, 2)
    got = jax.jit(model.apply)({"params": params}, img)["landmarks"]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="square kernel"):
        conv_pool.phase_kernel(jnp.zeros((5, 3, 1, 2)))
    with pytest.raises(ValueError, match="too small"):
        conv_pool.conv_act_pool(jnp.zeros((1, 5, 5, 1)), jnp.zeros((5, 5, 1, 2)), jnp.zeros(2),
                                nn.relu, True)

"""tcdcn_jax.local_conv against flax: the same parameters, outputs and gradients as nn.ConvLocal and
nn.max_pool, layer by layer and for the whole ECCV model (checkpoints of either load in the other)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.model import local_conv
from tcdcn_jax.model import networks

# (input side, channels, filters, kernel): the ECCV trunk's last two layers and an odd side (the first two
# are covered by the whole-trunk test below).
LAYERS = [(8, 48, 64, 3), (3, 64, 80, 2), (7, 3, 4, 3)]


def _key(seed):
    # The rbg PRNG compiles much faster on CPU than threefry for these large kernels.
    return jax.random.key(seed, impl="rbg")


def _random(shape, seed):
    return jax.random.normal(_key(seed), shape, jnp.float32)


@pytest.mark.parametrize("side,channels,filters,k", LAYERS)
def test_local_conv_matches_flax_conv_local(side, channels, filters, k):
    x = _random((3, side, side, channels), 0)
    ref = nn.ConvLocal(filters, (k, k), padding="VALID")
    new = local_conv.LocalConv(filters, k)
    ref_vars = jax.jit(ref.init)(_key(1), x)
    new_vars = jax.jit(new.init)(_key(1), x)
    # Same names, shapes and initial values: the same initialisers under the same keys.
    jax.tree.map(np.testing.assert_array_equal, new_vars, ref_vars)
    params = {"kernel": ref_vars["params"]["kernel"],
              "bias": _random(ref_vars["params"]["bias"].shape, 2)}
    cot = _random((3, side - k + 1, side - k + 1, filters), 3)

    def loss(module, p, x_in):
        return jnp.sum(jnp.abs(jnp.tanh(module.apply({"params": p}, x_in))) * cot)

    np.testing.assert_allclose(jax.jit(new.apply)({"params": params}, x),
                               jax.jit(ref.apply)({"params": params}, x), rtol=1e-5, atol=1e-5)
    g_new = jax.jit(jax.grad(lambda p, xi: loss(new, p, xi), argnums=(0, 1)))(params, x)
    g_ref = jax.jit(jax.grad(lambda p, xi: loss(ref, p, xi), argnums=(0, 1)))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g_new, g_ref)
    assert float(jnp.abs(g_new[0]["kernel"]).max()) > 0.0


def test_local_conv_rejects_a_kernel_that_does_not_fit():
    x_HxWxCxB = jnp.zeros((8, 8, 2, 1))
    with pytest.raises(ValueError, match="does not fit"):
        local_conv.local_conv_hwcb(x_HxWxCxB, jnp.zeros((6, 6, 3 * 3 * 3, 4)), jnp.zeros((6, 6, 4)))
    with pytest.raises(ValueError, match="smaller than"):
        local_conv.LocalConv(4, 5).init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))


@pytest.mark.parametrize("shape", [(3, 6, 6, 2), (2, 7, 5, 3), (4, 36, 36, 20)])
def test_max_pool_matches_flax_with_ties(shape):
    """Values in {0, 1, 2} tie often: the gradient must go to the first maximum, as nn.max_pool's."""
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, shape), jnp.float32)
    cot = _random((shape[0], shape[1] // 2, shape[2] // 2, shape[3]), 1)

    def ref(x_in):
        return nn.max_pool(x_in, (2, 2), strides=(2, 2), padding="VALID")

    def new(x_in):
        return local_conv.to_nhwc(local_conv.max_pool_hwcb(local_conv.to_hwcb(x_in)))

    np.testing.assert_array_equal(new(x), ref(x))
    g_ref = jax.grad(lambda xi: jnp.sum(ref(xi) * cot))(x)
    for grad in (jax.grad, lambda f: jax.jit(jax.grad(f))):
        np.testing.assert_array_equal(grad(lambda xi: jnp.sum(new(xi) * cot))(x), g_ref)
    # One gradient entry per window, even where all four tie.
    assert int(jnp.sum(g_ref != 0)) == cot.size


class _FlaxEccvTrunk(nn.Module):
    """The ECCV trunk as it was written with flax's layers (the reference)."""

    @nn.compact
    def __call__(self, img):
        x = img
        for i, (filters, k) in enumerate(networks.TRUNK_SPECS["eccv"]["layers"]):
            x = networks.ACTIVATIONS["abs_tanh"](
                nn.ConvLocal(filters, (k, k), padding="VALID", name=f"conv{i + 1}")(x))
            if i < 3:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape((x.shape[0], -1))
        return networks.ACTIVATIONS["abs_tanh"](nn.Dense(100, name="fc")(x))


def test_eccv_trunk_matches_the_flax_reference():
    img = _random((4, 40, 40, 1), 5)
    trunk = networks.Trunk("eccv", "abs_tanh")
    params = jax.jit(trunk.init)(_key(0), img)["params"]
    ref_params = jax.jit(_FlaxEccvTrunk().init)(_key(0), img)["params"]
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)  # same tree, same init
    cot = _random((4, 100), 6)

    def loss(module, p):
        return jnp.sum(module.apply({"params": p}, img) * cot)

    np.testing.assert_allclose(jax.jit(trunk.apply)({"params": params}, img),
                               jax.jit(_FlaxEccvTrunk().apply)({"params": params}, img),
                               rtol=1e-5, atol=1e-5)
    g_new = jax.jit(jax.grad(lambda p: loss(trunk, p)))(params)
    g_ref = jax.jit(jax.grad(lambda p: loss(_FlaxEccvTrunk(), p)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_new, g_ref)


def test_no_transpose_of_activations_left_in_the_compiled_eccv_gradient():
    """The NHWC <-> H x W x C x B transposes around each LocalConv call cancel; only the tiny ones at
    the input (B x 40 x 40 x 1) and before the fc layer (2 x 2 x 80 x B) may remain."""
    trunk = networks.Trunk("eccv", "abs_tanh")
    img = jnp.zeros((8, 40, 40, 1))
    params = jax.eval_shape(trunk.init, jax.random.key(0), img)["params"]
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(trunk.apply({"params": p}, x))))
    hlo = grad.lower(params, img).compile().as_text()
    sizes = []
    for line in hlo.splitlines():
        if " transpose(" in line and "=" in line:
            dims = line.split("=")[1].split("[")[1].split("]")[0]
            sizes.append(int(np.prod([int(d) for d in dims.split(",") if d])))
    assert all(size <= 40 * 40 * 8 for size in sizes), sizes

"""A locally connected layer (a filter bank per output position) that is fast on XLA CPU.

Why it exists: flax's `nn.ConvLocal` builds its patches with `lax.conv_general_dilated_patches` (a
convolution with a one-hot kernel, whose gradient is a second such convolution) and contracts them
batch-major; `nn.max_pool`'s gradient lowers on XLA CPU to an argmax reduce-window over iotas plus a
scatter. Measured on the ECCV trunk's four conv+pool blocks (batch 64, 2-core AVX-512 CPU under load,
best of 40, fwd / fwd+bwd): flax 29 / 204 ms, this module 9.5 / 22.5 ms.

Here the activations live in H x W x C x B order (batch minor): a patch is a stack of k*k shifted slices
copied in contiguous runs of B floats, and each position's product is one small GEMM (K x O)^T (K x B)
batched over positions; autodiff then gives dW as (K x B)(B x O) and the patch gradient as (K x O)(O x B),
the fastest of the orientations measured. Pooling takes the four corners of each 2x2 window.

The parameters are exactly `nn.ConvLocal`'s (names, shapes, initialisers, and the (C, kh, kw) order of
the patch features), so checkpoints load either way. `LocalConv` takes and returns NHWC like
`nn.ConvLocal`; the trunk chains layers in H x W x C x B (`to_hwcb` / `to_nhwc`) and XLA cancels the
back-to-back transposes, so none is left in the compiled step (tests/test_local_conv.py checks this).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def to_hwcb(x_BxHxWxC: jax.Array) -> jax.Array:
    return jnp.transpose(x_BxHxWxC, (1, 2, 3, 0))


def to_nhwc(x_HxWxCxB: jax.Array) -> jax.Array:
    return jnp.transpose(x_HxWxCxB, (3, 0, 1, 2))


def local_conv_hwcb(x_HxWxCxB: jax.Array, kernel_HoxWoxKxO: jax.Array, bias_HoxWoxO: jax.Array
                    ) -> jax.Array:
    """VALID, stride-1 locally connected layer: H x W x C x B -> Ho x Wo x O x B.

    K = C * kh * kw with kh = H - Ho + 1, in (C, kh, kw) order, as `nn.ConvLocal` orders it.
    """
    h, w, c, b = x_HxWxCxB.shape
    ho, wo, k_feat, o = kernel_HoxWoxKxO.shape
    kh, kw = h - ho + 1, w - wo + 1
    if kh < 1 or kw < 1 or c * kh * kw != k_feat or kh != kw:
        raise ValueError(f"kernel {kernel_HoxWoxKxO.shape} does not fit input H x W x C = "
                         f"{(h, w, c)}: expected (Ho, Wo, C*k*k, O) with k = H - Ho + 1 = W - Wo + 1")
    shifted = [x_HxWxCxB[i:i + ho, j:j + wo] for i in range(kh) for j in range(kw)]
    patches_PxKxB = jnp.stack(shifted, axis=3).reshape(ho * wo, k_feat, b)
    y_PxOxB = lax.dot_general(kernel_HoxWoxKxO.reshape(ho * wo, k_feat, o), patches_PxKxB,
                              (((1,), (1,)), ((0,), (0,))))
    return y_PxOxB.reshape(ho, wo, o, b) + bias_HoxWoxO[..., None]


@jax.custom_vjp
def max_pool_hwcb(x_HxWxCxB: jax.Array) -> jax.Array:
    """Non-overlapping 2x2 max pooling over H and W; an odd side drops its last row/column.

    Same values and gradients as `nn.max_pool` (the gradient goes to the first maximum of a window in
    row-major order), but as elementwise code: XLA CPU lowers reduce_window's gradient to an
    argmax reduce-window over iotas plus a scatter: about a third of the ECCV step once the
    convolutions were fast."""
    return _pool_fwd(x_HxWxCxB)[0]


def _corners(x_HxWxCxB: jax.Array) -> tuple[jax.Array, ...]:
    h, w = x_HxWxCxB.shape[:2]
    q = x_HxWxCxB[:h // 2 * 2, :w // 2 * 2].reshape(h // 2, 2, w // 2, 2, *x_HxWxCxB.shape[2:])
    return q[:, 0, :, 0], q[:, 0, :, 1], q[:, 1, :, 0], q[:, 1, :, 1]


def _pool_fwd(x_HxWxCxB: jax.Array) -> tuple[jax.Array, jax.Array]:
    a, b, c, d = _corners(x_HxWxCxB)
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d)), x_HxWxCxB


def _pool_bwd(x_HxWxCxB: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    a, b, c, d = _corners(x_HxWxCxB)
    m = jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
    zero = jnp.zeros_like(g)
    ta, tb, tc = a == m, b == m, c == m
    ga = jnp.where(ta, g, zero)
    gb = jnp.where(tb & ~ta, g, zero)
    gc = jnp.where(tc & ~(ta | tb), g, zero)
    gd = jnp.where(ta | tb | tc, zero, g)
    h2, w2 = g.shape[:2]
    top = jnp.stack([ga, gb], axis=2)  # h2 x w2 x 2 x C x B: row 0 of each window, columns 0, 1
    bottom = jnp.stack([gc, gd], axis=2)
    dx = jnp.stack([top, bottom], axis=1).reshape(2 * h2, 2 * w2, *g.shape[2:])
    h, w = x_HxWxCxB.shape[:2]
    return (jnp.pad(dx, ((0, h - 2 * h2), (0, w - 2 * w2)) + ((0, 0),) * (g.ndim - 2)),)


max_pool_hwcb.defvjp(_pool_fwd, _pool_bwd)


class LocalConv(nn.Module):
    """Drop-in for `nn.ConvLocal(features, (k, k), padding='VALID')`: NHWC in, NHWC out."""

    features: int
    kernel_size: int

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        _, h, w, c = x_BxHxWxC.shape
        k = self.kernel_size
        if h < k or w < k:
            raise ValueError(f"input {h}x{w} is smaller than the {k}x{k} filter")
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (h - k + 1, w - k + 1, c * k * k, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(),
                          (h - k + 1, w - k + 1, self.features), jnp.float32)
        return to_nhwc(local_conv_hwcb(to_hwcb(x_BxHxWxC), kernel, bias))

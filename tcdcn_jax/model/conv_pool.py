"""Convolution + activation + 2x2 max pooling as ONE convolution: the report trunk's conv1, faster.

Why. XLA CPU hands the whole report network to one YNNPACK fusion, which runs conv1's 5x5
convolution of a single input channel (K = 25) at ~20-40 GFLOP/s (conv2: ~110-150), then makes a
second pass over its 56x56x20 output to pool it: conv1 + pool took ~30% of the time for 8% of the
FLOPs. A hand-made im2col (25 slices + one matmul) was 2-4x SLOWER than YNNPACK's convolution, for
conv1 and conv2 alike, and this trick on conv2 / conv3 (+44% / +78% FLOPs there) was slower too.

How. Space-to-depth: the input's 2x2 pixel blocks become 4 channels, and a k x k kernel becomes a
b x b kernel (b = k // 2 + 1) over blocks that emits, for every pooled cell, the conv outputs at
all four positions of its pooling window (4 x F channels, `phase_kernel`). The pool is a max over
those four channel groups in the same pass: no full-resolution map, no strided window. For conv1
(k = 5, C = 1) that is 36 instead of 25 multiply-adds per output (+1.4 MFLOPs a face) in a 3x3
conv with 4 input channels and 80 outputs, which YNNPACK runs far better. Measured on the 2-core
CPU (busy; variants alternating in one process, best of 7-9): conv1 + pool alone 144-161 ->
125-132 us a face at batch 1, 132-137 -> 94-96 us at batch 256 (micro-batches of 32); the whole
network 477-481 -> 408-424 us at batch 1, 427-484 -> 328-351 us at batch 256. For a monotone
activation (relu, tanh) the max is taken first (max_p act(y_p + b) = act(max_p y_p + b)), so the
bias and activation touch a quarter of the values (+8-12% at batch 1 over activating all four).

Equal to nn.Conv('VALID') -> act -> 2x2 'VALID' max pool (floor) up to float rounding, with
nn.Conv's param names, shapes and initialisers, so checkpoints and the authors' weights load as
before (tests/model/test_conv_pool.py).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Activations for which max pooling commutes with `act(. + bias)`.
MONOTONE_ACTIVATIONS = ("relu", "tanh")


def phase_kernel(kernel_KxKxCxF: jax.Array) -> jax.Array:
    """b x b x 4C x 4F kernel on 2x2 space-to-depth input. Output channel p * F + f is filter f
    at pooling phase p = 2 * dy + dx: the conv output at (2i + dy, 2j + dx) of pooled cell (i, j).
    """
    k, k2, c, f = kernel_KxKxCxF.shape
    if k != k2:
        raise ValueError(f"phase_kernel needs a square kernel, got {kernel_KxKxCxF.shape}")
    b = k // 2 + 1  # blocks per side covering k + 1 pixels (the window of two neighbouring outputs)
    phases = []
    for dy in range(2):
        for dx in range(2):
            padded = jnp.zeros((2 * b, 2 * b, c, f), kernel_KxKxCxF.dtype)
            padded = padded.at[dy:dy + k, dx:dx + k].set(kernel_KxKxCxF)
            # (by, y, bx, x, c, f) -> (by, bx, y, x, c, f): the channel order of space_to_depth.
            phases.append(padded.reshape(b, 2, b, 2, c, f).transpose(0, 2, 1, 3, 4, 5)
                          .reshape(b, b, 4 * c, f))
    return jnp.concatenate(phases, axis=-1)


def space_to_depth(x_BxHxWxC: jax.Array) -> jax.Array:
    """B x H/2 x W/2 x 4C: channel (2 * y + x) * C + c holds pixel (2i + y, 2j + x), channel c."""
    b, h, w, c = x_BxHxWxC.shape
    return (x_BxHxWxC.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
            .reshape(b, h // 2, w // 2, 4 * c))


def conv_act_pool(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array, bias_F: jax.Array,
                  act: Callable[[jax.Array], jax.Array], monotone: bool) -> jax.Array:
    """maxpool2x2(act(conv_VALID(x, kernel) + bias)), floor pooling: B x P x Q x F."""
    k, f = kernel_KxKxCxF.shape[0], kernel_KxKxCxF.shape[-1]
    b = k // 2 + 1
    _, h, w, _ = x_BxHxWxC.shape
    p, q = (h - k + 1) // 2, (w - k + 1) // 2  # pooled output side
    if p < 1 or q < 1:
        raise ValueError(f"input {x_BxHxWxC.shape[1:3]} too small for a {k}x{k} conv and 2x2 pool")
    # Rows/columns the pooled outputs read: 2 (p + b - 1). Cut the rest (floor pooling drops them);
    # an even k may need one zero row/column, which only meets zero taps of the phase kernel.
    need_h, need_w = 2 * (p + b - 1), 2 * (q + b - 1)
    x = x_BxHxWxC[:, :need_h, :need_w]
    x = jnp.pad(x, ((0, 0), (0, need_h - x.shape[1]), (0, need_w - x.shape[2]), (0, 0)))
    y = lax.conv_general_dilated(space_to_depth(x), phase_kernel(kernel_KxKxCxF), (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y_BxPxQx4xF = y.reshape(y.shape[:3] + (4, f))
    if monotone:
        return act(y_BxPxQx4xF.max(axis=3) + bias_F)
    return act(y_BxPxQx4xF + bias_F).max(axis=3)


class ConvPool(nn.Module):
    """nn.Conv(features, (k, k), 'VALID') -> act -> 2x2 max pool, as one convolution.

    Params {'kernel': (k, k, C, F), 'bias': (F,)}, initialised as nn.Conv's. Its captured
    intermediate is the pooled activation (B x P x Q x F), not the full-resolution conv output.
    """

    features: int
    kernel_size: int
    act: Callable[[jax.Array], jax.Array]
    monotone: bool  # act is non-decreasing: pool before the activation (see conv_act_pool)

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (k, k, x_BxHxWxC.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return conv_act_pool(x_BxHxWxC, kernel, bias, self.act, self.monotone)

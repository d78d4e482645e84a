"""TCDCN networks: a shared trunk and a dict of task heads.

Two trunks, chosen by `trunk`:
- "eccv": the ECCV 2014 model. 40x40 input, four locally connected layers (filters not shared across
  positions), max pooling after the first three, abs(tanh), a 100-wide fully connected layer.
- "report": the technical report's 68-point model, the kind the authors released. 60x60 input, shared
  convolutions of 20, 48, 64, 80 filters of size 5, 5, 3, 3, a 512-wide fully connected layer.

The parameter tree is {'trunk': {conv1..conv4, fc}, 'heads': {'landmarks', <aux task>...}}, so a
transfer swaps `params['heads']` and keeps `params['trunk']`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tcdcn_jax import tasks
from tcdcn_jax.model import conv_pool
from tcdcn_jax.model import local_conv

# (filters, kernel size) of the four convolutional layers, input side, the width of x^l, and whether
# the filters are shared across positions (convolutions) or not (locally connected layers).
TRUNK_SPECS = {
    "eccv": dict(layers=((20, 5), (48, 3), (64, 3), (80, 2)), input_size=40, features=100,
                 shared_conv=False),
    "report": dict(layers=((20, 5), (48, 5), (64, 3), (80, 3)), input_size=60, features=512,
                   shared_conv=True),
}
DEFAULT_TRUNK, DEFAULT_ACTIVATION = "eccv", "abs_tanh"  # the ECCV paper's model

ACTIVATIONS: Mapping[str, Callable[[jax.Array], jax.Array]] = {
    "abs_tanh": lambda x: jnp.abs(jnp.tanh(x)),
    "relu": nn.relu,
    "tanh": jnp.tanh,
}

LOG_LAMBDA = "log_lambda"  # the learned task weights' param in params['heads'] (read by the loss)


def input_size(trunk: str) -> int:
    """The side S of the S x S grey input a trunk expects."""
    return TRUNK_SPECS[_check_trunk(trunk)]["input_size"]


def shares_convolutions(trunk: str) -> bool:
    """Whether a trunk's filters are shared across positions, so translated windows can share maps."""
    return TRUNK_SPECS[_check_trunk(trunk)]["shared_conv"]


def forward_flops(model: "TCDCN") -> int:
    """Useful FLOPs of one face's forward pass (2 x multiply-adds of every conv, fc and head).

    Counted from the layer shapes, not from XLA's cost analysis, which also counts layout work (flax's
    ConvLocal patches were a one-hot convolution: 10.8 "MFLOPs" for the ECCV trunk's 7.9 useful).
    """
    spec = TRUNK_SPECS[_check_trunk(model.trunk)]
    side, channels, macs = spec["input_size"], 1, 0
    for i, (filters, k) in enumerate(spec["layers"]):
        side = side - k + 1
        macs += side * side * k * k * channels * filters
        channels = filters
        if i < 3:
            side //= 2
    features = model.features or spec["features"]
    macs += side * side * channels * features
    macs += features * (2 * model.num_landmarks + sum((model.aux_tasks or {}).values()))
    return 2 * macs


def _check_trunk(trunk: str) -> str:
    if trunk not in TRUNK_SPECS:
        raise ValueError(f"unknown trunk {trunk!r}; choose one of {sorted(TRUNK_SPECS)}")
    return trunk


def _max_pool(x: jax.Array) -> jax.Array:
    # Non-overlapping 2x2 max pooling; an odd side drops its last row/column (floor), as in the paper.
    return nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


class Trunk(nn.Module):
    """Shared feature extractor: img_BxSxSx1 -> x^l (B x features)."""

    kind: str = DEFAULT_TRUNK
    activation: str = DEFAULT_ACTIVATION
    features: int | None = None  # None: the width the paper uses for this trunk

    @nn.compact
    def __call__(self, img_BxSxSx1: jax.Array) -> jax.Array:
        spec = TRUNK_SPECS[_check_trunk(self.kind)]
        size = spec["input_size"]
        if img_BxSxSx1.ndim != 4 or img_BxSxSx1.shape[1:] != (size, size, 1):
            raise ValueError(
                f"{self.kind} trunk expects input of shape (B, {size}, {size}, 1), "
                f"got {img_BxSxSx1.shape}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; "
                             f"choose one of {sorted(ACTIVATIONS)}")
        act = ACTIVATIONS[self.activation]
        if not spec["shared_conv"]:
            x = self._local_maps(img_BxSxSx1, spec["layers"], act)
        else:
            # conv1 (a single input channel) runs fused with its pool: conv_pool says why.
            filters, k = spec["layers"][0]
            monotone = self.activation in conv_pool.MONOTONE_ACTIVATIONS
            x = conv_pool.ConvPool(filters, k, act, monotone, name="conv1")(img_BxSxSx1)
            for i, (filters, k) in enumerate(spec["layers"][1:], start=1):
                x = act(nn.Conv(filters, (k, k), padding="VALID", name=f"conv{i + 1}")(x))
                if i < 3:
                    x = _max_pool(x)
        x_BxF = x.reshape((x.shape[0], -1))  # row-major NHWC flattening
        width = self.features or spec["features"]
        return act(nn.Dense(width, name="fc")(x_BxF))

    def _local_maps(self, img_BxSxSx1: jax.Array, layers, act) -> jax.Array:
        """The locally connected layers, run batch-minor (H x W x C x B): ~9x faster to train on XLA CPU.

        `LocalConv` is NHWC outside (like nn.ConvLocal, so captured intermediates keep that layout);
        the transposes around each call cancel in XLA. Returns B x 2 x 2 x 80."""
        x_HxWxCxB = local_conv.to_hwcb(img_BxSxSx1)
        for i, (filters, k) in enumerate(layers):
            layer = local_conv.LocalConv(filters, k, name=f"conv{i + 1}")
            x_HxWxCxB = act(local_conv.to_hwcb(layer(local_conv.to_nhwc(x_HxWxCxB))))
            if i < 3:
                x_HxWxCxB = local_conv.max_pool_hwcb(x_HxWxCxB)
        return local_conv.to_nhwc(x_HxWxCxB)


class Heads(nn.Module):
    """Linear landmark regression plus one linear softmax head per auxiliary task."""

    num_landmarks: int
    aux_tasks: Mapping[str, int]
    learn_task_weights: bool = False  # adds params['heads']['log_lambda'] (A,), read by the loss

    @nn.compact
    def __call__(self, feat_BxF: jax.Array) -> dict[str, jax.Array]:
        if self.learn_task_weights and self.aux_tasks:
            self.param(LOG_LAMBDA, nn.initializers.zeros, (len(self.aux_tasks),), jnp.float32)
        out = {"landmarks": nn.Dense(2 * self.num_landmarks, name="landmarks")(feat_BxF)
               .reshape((feat_BxF.shape[0], self.num_landmarks, 2))}
        for task, num_classes in self.aux_tasks.items():
            out[task] = nn.Dense(num_classes, name=task)(feat_BxF)
        return out


class TCDCN(nn.Module):
    """img_BxSxSx1 -> {'landmarks': lm_BxKx2 (box-normalised u, v), task: logits_BxC}."""

    num_landmarks: int = 5
    aux_tasks: Mapping[str, int] | None = None
    trunk: str = DEFAULT_TRUNK
    activation: str = DEFAULT_ACTIVATION
    features: int | None = None
    learn_task_weights: bool = False

    def setup(self):
        self.trunk_module = Trunk(self.trunk, self.activation, self.features, name="trunk")
        self.heads = Heads(self.num_landmarks, dict(self.aux_tasks or {}), self.learn_task_weights,
                           name="heads")

    def features_of(self, img_BxSxSx1: jax.Array) -> jax.Array:
        return self.trunk_module(img_BxSxSx1)

    def __call__(self, img_BxSxSx1: jax.Array) -> dict[str, jax.Array]:
        return self.heads(self.trunk_module(img_BxSxSx1))


def make_model(num_landmarks: int, aux_tasks: Sequence[str] | Mapping[str, int], trunk: str,
               activation: str, features: int | None = None,
               learn_task_weights: bool = False) -> TCDCN:
    """Builds a TCDCN; `aux_tasks` names tasks of `tasks.TASKS` or maps any name to its classes."""
    if not isinstance(aux_tasks, Mapping):
        unknown = [t for t in aux_tasks if t not in tasks.NUM_CLASSES]
        if unknown:
            raise ValueError(f"unknown auxiliary tasks {unknown}; known: "
                             f"{sorted(tasks.NUM_CLASSES)} (pass a mapping name -> num_classes "
                             "for new tasks)")
        aux_tasks = {t: tasks.NUM_CLASSES[t] for t in aux_tasks}
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    _check_trunk(trunk)
    if num_landmarks < 1:
        raise ValueError(f"num_landmarks must be positive, got {num_landmarks}")
    return TCDCN(num_landmarks=num_landmarks, aux_tasks=dict(aux_tasks), trunk=trunk,
                 activation=activation, features=features,
                 learn_task_weights=learn_task_weights)

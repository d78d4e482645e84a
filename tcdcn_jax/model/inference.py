"""The network for inference on CPU, laid out per batch size: `make_forward`.

    forward = inference.make_forward(model, params)   # jitted img_BxSxSx1 -> {'landmarks', task...}

Outputs equal `model.apply` (softmax on the auxiliary heads) up to float rounding. The params are
compiled in as constants (XLA folds weight-only work and packs the weights once). The batch size
is static in a jitted function, so each size traces its own layout, chosen from measurements on
the 2-core CPU against ONNX Runtime and OpenVINO (experiments/benchmark_inference.py; the figures
are in README's performance section):

- conv1: the report trunk's conv1 fused with its pool through space-to-depth (model/conv_pool.py)
  up to `PLAIN_FROM - 1` faces; from there to `CHUNK_FROM` a plain convolution + reduce_window
  pool (at batch 32: +11-25% on two cores; at batch 1 3-5% slower; batch 16 not told apart).
- chunks: above `CHUNK_FROM` faces the batch runs as independent micro-batches of `CHUNK` faces
  (fused conv1), unrolled inside the one jitted function (a Python loop at trace time, then a
  concatenate), not as a `lax.map`: XLA then runs two chunks at once, one per core, instead of
  splitting one small fusion over both cores (at batch 256: +14-18% on a quiet machine, +27-37%
  busy). On a single core the same chunks cost ~7% against a lax.map: they pay for the 2nd core.

Per core, XLA's kernels match OpenVINO's (pinned to one core, single-threaded: 1.04 / 0.98 /
1.00 of its faces/s at batch 1 / 32 / 256); what is left on two cores is how a fusion spreads
over the second one. Splitting a face's filters or rows into independent convolutions, and
sharding one face's rows over two CPU devices, were slower at batch 1.

The ECCV trunk (locally connected layers) runs as `model.apply` in the same chunks.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from tcdcn_jax.model import conv_pool
from tcdcn_jax.model import networks

PLAIN_FROM = 17  # batches from this size up to CHUNK_FROM run with a plain conv1
CHUNK_FROM = 64  # batches above this run as unrolled micro-batches
CHUNK = {"fused": 16, "plain": 8}  # faces per micro-batch, per conv1 kind (the best of 8..64)
Forward = Callable[[jax.Array], dict[str, jax.Array]]


def _pool(x_BxHxWxC: jax.Array) -> jax.Array:
    # 2x2 'VALID' max pool (floor), as nn.max_pool lowers it.
    return lax.reduce_window(x_BxHxWxC, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _conv(x_BxHxWxC: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    y = lax.conv_general_dilated(x_BxHxWxC, p["kernel"], (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def report_features(params: Mapping[str, Any], img_BxSxSx1: jax.Array, activation: str,
                    conv1: str = "fused") -> jax.Array:
    """The report trunk as plain lax ops: x^l (B x F). conv1 'fused' (conv_pool) or 'plain'."""
    act = networks.ACTIVATIONS[activation]
    trunk = params["trunk"]
    if conv1 == "fused":
        x = conv_pool.conv_act_pool(img_BxSxSx1, trunk["conv1"]["kernel"], trunk["conv1"]["bias"],
                                    act, activation in conv_pool.MONOTONE_ACTIVATIONS)
    elif conv1 == "plain":
        x = _pool(act(_conv(img_BxSxSx1, trunk["conv1"])))
    else:
        raise ValueError(f"conv1 must be 'fused' or 'plain', got {conv1!r}")
    for i in (2, 3, 4):
        x = act(_conv(x, trunk[f"conv{i}"]))
        if i < 4:
            x = _pool(x)
    x_BxF = x.reshape((x.shape[0], -1))  # row-major NHWC, as the flax trunk flattens
    return act(x_BxF @ trunk["fc"]["kernel"] + trunk["fc"]["bias"])


def heads(model: networks.TCDCN, params: Mapping[str, Any], feat_BxF: jax.Array
          ) -> dict[str, jax.Array]:
    """Landmarks (B x K x 2) and softmax probabilities per auxiliary task, from x^l."""
    p = params["heads"]
    lm = feat_BxF @ p["landmarks"]["kernel"] + p["landmarks"]["bias"]
    out = {"landmarks": lm.reshape((feat_BxF.shape[0], model.num_landmarks, 2))}
    for task in model.aux_tasks or {}:
        out[task] = jax.nn.softmax(feat_BxF @ p[task]["kernel"] + p[task]["bias"], axis=-1)
    return out


def layout_for(batch: int) -> tuple[str, int]:
    """(conv1 kind, faces per micro-batch; 0 = one call) used at this batch size."""
    if batch > CHUNK_FROM:
        return "fused", CHUNK["fused"]
    return ("plain" if batch >= PLAIN_FROM else "fused"), 0


def apply(model: networks.TCDCN, params: Mapping[str, Any], img_BxSxSx1: jax.Array,
          conv1: str | None = None, chunk: int | None = None) -> dict[str, jax.Array]:
    """The network on a batch, in the layout `layout_for` picks (or the one given); traceable."""
    batch = img_BxSxSx1.shape[0]
    auto_conv1, auto_chunk = layout_for(batch)
    conv1 = auto_conv1 if conv1 is None else conv1
    chunk = auto_chunk if chunk is None else chunk

    def one(x):
        if model.trunk == "report":
            return heads(model, params, report_features(params, x, model.activation, conv1))
        out = model.apply({"params": params}, x)
        return {k: (v if k == "landmarks" else jax.nn.softmax(v, axis=-1)) for k, v in out.items()}

    if not chunk or batch <= chunk:
        return one(img_BxSxSx1)
    # Unrolled at trace time: independent calls XLA may run side by side (a ragged last chunk is
    # just a smaller call).
    parts = [one(img_BxSxSx1[i:i + chunk]) for i in range(0, batch, chunk)]
    return {k: jnp.concatenate([p[k] for p in parts]) for k in parts[0]}


def make_forward(model: networks.TCDCN, params: Mapping[str, Any], conv1: str | None = None,
                 chunk: int | None = None, devices: Sequence[jax.Device] | None = None) -> Forward:
    """jitted img_BxSxSx1 -> {'landmarks': lm_BxKx2, task: probs_BxC}, params compiled in.

    With several `devices` (CPU devices: `jax_num_cpu_devices` set before jax starts), a batch
    that divides evenly runs as one shard per device (shard_map), each in its own layout.
    """
    params = jax.tree_util.tree_map(jnp.asarray, params)
    single = jax.jit(lambda img_BxSxSx1: apply(model, params, img_BxSxSx1, conv1, chunk))
    if not devices or len(devices) < 2:
        return single
    mesh = Mesh(np.asarray(devices), ("batch",))
    spec = PartitionSpec("batch")
    sharded = jax.jit(jax.shard_map(lambda img: apply(model, params, img, conv1, chunk),
                                    mesh=mesh, in_specs=spec, out_specs=spec))

    def forward(img_BxSxSx1):
        batch = img_BxSxSx1.shape[0]
        return sharded(img_BxSxSx1) if batch % len(devices) == 0 else single(img_BxSxSx1)
    return forward

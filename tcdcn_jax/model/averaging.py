"""TCDCN-Averaged: predict from small translations of the face crop and average (report section 4.5).

Geometry. The crop of a face box is S x S (S = 60 for the report trunk). A translation d = (dx, dy)
(crop pixels) is the S x S window whose pixel (r, c) is the crop's pixel (r + dy, c + dx); the network
sees the face moved by -d. A landmark the network puts at window-normalised u_win is at
u = u_win + dx / S in the original box frame (and v = v_win + dy / S): the shift bookkeeping of
`geometry.shift_to_box`. All windows are read from one (S + 2m) x (S + 2m) crop of the same box on
the same grid, grown by m pixels per side (`geometry.crop` with a margin), so every |dx|, |dy| <= m.

Sharing (report trunk: shared 'VALID' convolutions of 5, 5, 3, 3 with 2x2 max pooling after the first
three; total stride 8). Convolutions are translation-equivariant and a pool of stride 2 maps a window
at offset o to offset o // 2 of the pooled map computed from phase o % 2 (`maxpool(map[o % 2:])`).
So the conv stack runs once on the large crop and branches only where windows need another pooling
phase (`shared_conv_windows`): shifts by multiples of 8 px need no branch at all (one conv4 map, read
at shifted cells); a 4 px grid branches once, at the last pool (4 phases of conv4); a 2 px grid
branches at the last two pools (4 phases of conv3, up to 16 of conv4). conv1 and conv2, the costly
layers, always run once (conv1 fused with its pool, as in the model, when all windows share
one pooling phase: any even grid; see conv_pool). Only fc + heads run once per window. A large
batch runs as a lax.map over micro-batches of MICROBATCH faces (`in_microbatches`), as the
predictor does.
The result is exactly (to float rounding) what N separate passes give (tested).

Standardisation. The model standardises each crop by its own mean and variance, which would make the
windows' first-layer inputs differ by more than a shift and destroy the sharing. Every window is
standardised with the statistics of the centre window instead (`geometry.crop` does so for a crop
with a margin), so the untranslated window is exactly the single-pass input and the others are its
translations.

The ECCV trunk (locally connected: a different filter at every position) is not translation-equivariant,
so nothing can be shared: `averaged_landmarks` falls back to one full pass per window there.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tcdcn_jax import geometry
from tcdcn_jax.model import conv_pool
from tcdcn_jax.model import networks
# Faces per lax.map step of a large batch, so each layer's activations stay in cache. Measured on
# the 2-core CPU at batch 256 (report trunk, default 21 windows, time over one pass at 32 faces):
# 4, 8 and 16 tie at 2.5-3.0x, 32 3.2-3.3x, one 256-face step 5.3x. A single window (one pass) is
# the predictor's network: 32 windows a step, as predictor.MICROBATCH; so are full passes per window.
MICROBATCH = 8
MICROBATCH_ONE_WINDOW = 32


def grid_offsets(step_px: int = 2, radius: int = 2, drop_corners: bool = True) -> np.ndarray:
    """(T, 2) integer translations (dx, dy) on a (2r+1)^2 grid of spacing step_px, centre first.

    The default (2 px, radius 2, no corners) gives the untranslated window plus 20 translations of up to
    4 px (6.7% of a 60 px crop), the paper's 20.
    """
    if step_px < 1 or radius < 0:
        raise ValueError(f"step_px must be >= 1 and radius >= 0, got {step_px}, {radius}")
    offsets = [(0, 0)]
    for j in range(-radius, radius + 1):
        for i in range(-radius, radius + 1):
            corner = radius > 0 and abs(i) == radius and abs(j) == radius
            if (i, j) != (0, 0) and not (drop_corners and corner):
                offsets.append((i * step_px, j * step_px))
    return np.asarray(offsets, np.int32)


def _check_offsets(offsets_Tx2: np.ndarray, margin: int) -> np.ndarray:
    offsets = np.asarray(offsets_Tx2)
    if offsets.ndim != 2 or offsets.shape[1] != 2 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be (T, 2) with T >= 1, got shape {offsets.shape}")
    if not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"offsets must be integer pixels, got {offsets.dtype}")
    if np.abs(offsets).max() > margin:
        raise ValueError(f"offsets up to {np.abs(offsets).max()} px do not fit a margin of {margin} px")
    return offsets.astype(np.int64)


def windows(img_BxLxLx1: jax.Array, offsets_Tx2: np.ndarray, size: int, margin: int) -> jax.Array:
    """img_BxTxSxSx1: the S x S window of every translation, cut from the large crop."""
    offsets = _check_offsets(offsets_Tx2, margin)
    return jnp.stack([img_BxLxLx1[:, margin + dy:margin + dy + size, margin + dx:margin + dx + size]
                      for dx, dy in offsets], axis=1)


def _conv(x: jax.Array, layer: dict[str, Any]) -> jax.Array:
    # flax nn.Conv with padding 'VALID': cross-correlation, HWIO kernel, plus bias.
    y = lax.conv_general_dilated(x, jnp.asarray(layer["kernel"]), (1, 1), "VALID",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + jnp.asarray(layer["bias"])


def _pool(x: jax.Array, phase_y: int, phase_x: int) -> jax.Array:
    x = x[:, phase_y:, phase_x:]
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    return lax.reduce_window(x[:, :h, :w], -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _conv1_pooled(trunk_params: dict[str, Any], activation: str, img_BxHxWx1: jax.Array,
                  phase_y: int, phase_x: int) -> jax.Array:
    """_pool(act(conv1(img)), phase_y, phase_x) in one fused convolution (as the model runs conv1):
    a pooling phase is the same pool of the conv of the input cropped by that phase."""
    layer = trunk_params["conv1"]
    return conv_pool.conv_act_pool(img_BxHxWx1[:, phase_y:, phase_x:], jnp.asarray(layer["kernel"]),
                                   jnp.asarray(layer["bias"]), networks.ACTIVATIONS[activation],
                                   activation in conv_pool.MONOTONE_ACTIVATIONS)


def conv_stack(trunk_params: dict[str, Any], activation: str, img_BxHxWx1: jax.Array) -> jax.Array:
    """The report trunk's conv1..conv4 (with pooling) on an input of any size >= S: B x h x w x 80."""
    act = networks.ACTIVATIONS[activation]
    x = _conv1_pooled(trunk_params, activation, img_BxHxWx1, 0, 0)
    for i in range(1, 4):
        x = act(_conv(x, trunk_params[f"conv{i + 1}"]))
        if i < 3:
            x = _pool(x, 0, 0)
    return x


def shared_conv_windows(trunk_params: dict[str, Any], activation: str, img_BxLxLx1: jax.Array,
                        offsets_Tx2: np.ndarray, size: int, margin: int
                        ) -> tuple[jax.Array, dict[str, int]]:
    """conv4 maps of every window (B x T x 3 x 3 x 80 for S = 60), sharing the conv work.

    Returns the maps and a count of the conv layers run per layer ({'conv1': 1, 'conv2': 1, ...}),
    which is the sharing actually used for these offsets.
    """
    offsets = _check_offsets(offsets_Tx2, margin)
    act = networks.ACTIVATIONS[activation]
    side = size - trunk_params["conv1"]["kernel"].shape[0] + 1  # a window's side at this layer
    wins = [((), margin + int(dy), margin + int(dx)) for dx, dy in offsets]
    first_phases = {(oy % 2, ox % 2) for _, oy, ox in wins}
    fused: dict[tuple, jax.Array] = {}
    if len(first_phases) == 1:  # one pooling phase after conv1 (even offsets): fuse conv1 with it
        phase = first_phases.pop()
        fused[(phase,)] = _conv1_pooled(trunk_params, activation, img_BxLxLx1, *phase)
        maps = {}
    else:
        maps = {(): act(_conv(img_BxLxLx1, trunk_params["conv1"]))}
    runs = {"conv1": 1}
    for layer in ("conv2", "conv3", "conv4"):
        pooled: dict[tuple, jax.Array] = {}
        new_wins = []
        for key, oy, ox in wins:
            child = key + ((oy % 2, ox % 2),)
            if child not in pooled:
                pooled[child] = fused.pop(child) if child in fused else _pool(maps[key], oy % 2,
                                                                            ox % 2)
            new_wins.append((child, oy // 2, ox // 2))
        side //= 2
        maps = {k: act(_conv(v, trunk_params[layer])) for k, v in pooled.items()}
        side = side - trunk_params[layer]["kernel"].shape[0] + 1
        wins, runs[layer] = new_wins, len(maps)
    for key, oy, ox in wins:
        if oy + side > maps[key].shape[1] or ox + side > maps[key].shape[2]:
            raise ValueError(f"window at ({oy}, {ox}) leaves a conv4 map of {maps[key].shape[1:3]}")
    out = jnp.stack([maps[k][:, oy:oy + side, ox:ox + side] for k, oy, ox in wins], axis=1)
    return out, runs


def sharing_mode(trunk: str, mode: str = "auto") -> str:
    """'shared' or 'passes': what `mode` means for a trunk ('auto': share where it can)."""
    if mode == "auto":
        return "shared" if networks.shares_convolutions(trunk) else "passes"
    if mode not in ("shared", "passes"):
        raise ValueError(f"unknown mode {mode!r}; choose 'auto', 'shared' or 'passes'")
    return mode


def _heads_of(model: networks.TCDCN, params: dict[str, Any], feat_NxF: jax.Array) -> jax.Array:
    out = model.apply({"params": params}, feat_NxF, method=lambda m, f: m.heads(f))
    return out["landmarks"]


def window_landmarks(model: networks.TCDCN, params: dict[str, Any], img_BxLxLx1: jax.Array,
                     offsets_Tx2: np.ndarray, margin: int, mode: str = "auto") -> jax.Array:
    """lm_BxTxKx2 in each window's own box-normalised frame.

    mode 'shared' (report trunk only) runs the conv stack once with pooling-phase branches; 'passes'
    runs the whole model on every window; 'auto' picks 'shared' when the trunk allows it.
    """
    size = networks.input_size(model.trunk)
    mode = sharing_mode(model.trunk, mode)
    if mode == "shared":
        if not networks.shares_convolutions(model.trunk):
            raise ValueError(f"the {model.trunk!r} trunk is locally connected, not translation-"
                             "equivariant: its translations cannot share convolutions; use 'passes'")
        trunk = params["trunk"]
        maps_BxTxhxwxC, _ = shared_conv_windows(trunk, model.activation, img_BxLxLx1, offsets_Tx2,
                                                size, margin)
        b, t = maps_BxTxhxwxC.shape[:2]
        flat = maps_BxTxhxwxC.reshape((b * t, -1))  # row-major NHWC, as the trunk flattens
        fc = trunk["fc"]
        feat = networks.ACTIVATIONS[model.activation](flat @ jnp.asarray(fc["kernel"])
                                                    + jnp.asarray(fc["bias"]))
        lm = _heads_of(model, params, feat)
        return lm.reshape((b, t) + lm.shape[1:])
    return passes_window_landmarks(
        lambda img: model.apply({"params": params}, img)["landmarks"],
        img_BxLxLx1, offsets_Tx2, size, margin)


def passes_window_landmarks(predict_fn: Callable[[jax.Array], jax.Array], img_BxLxLx1: jax.Array,
                            offsets_Tx2: np.ndarray, size: int, margin: int) -> jax.Array:
    """lm_BxTxKx2 from any predictor img_NxSxSx1 -> lm_NxKx2 run on every window (one batch of B*T)."""
    win = windows(img_BxLxLx1, offsets_Tx2, size, margin)
    b, t = win.shape[:2]
    lm = predict_fn(win.reshape((b * t,) + win.shape[2:]))
    return lm.reshape((b, t) + lm.shape[1:])


def in_microbatches(fn: Callable[[jax.Array], jax.Array], x_BxHxWx1: jax.Array,
                    microbatch: int) -> jax.Array:
    """fn(x) computed as a lax.map over chunks of `microbatch` faces (the batch zero-padded to a
    multiple and cut back), so a large batch's activations stay in cache."""
    if microbatch < 1:
        raise ValueError(f"microbatch must be >= 1, got {microbatch}")
    b = x_BxHxWx1.shape[0]
    if b <= microbatch:
        return fn(x_BxHxWx1)
    pad = -b % microbatch
    x = jnp.pad(x_BxHxWx1, ((0, pad),) + ((0, 0),) * (x_BxHxWx1.ndim - 1))
    out = lax.map(fn, x.reshape((-1, microbatch) + x.shape[1:]))
    return out.reshape((-1,) + out.shape[2:])[:b]


def averaged_landmarks(model: networks.TCDCN, params: dict[str, Any], image_BxHxW: jax.Array,
                       box_Bx4: jax.Array, offsets_Tx2: np.ndarray, mode: str = "auto",
                       microbatch: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(mean lm_BxKx2, per-translation lm_BxTxKx2), both in the original box frame.

    The network runs in micro-batches of `microbatch` faces (None: MICROBATCH for shared
    convolutions, else about MICROBATCH_ONE_WINDOW windows).
    """
    offsets = np.asarray(offsets_Tx2)
    margin = int(np.abs(offsets).max())
    size = networks.input_size(model.trunk)
    if microbatch is None:
        passes = sharing_mode(model.trunk, mode) == "passes"
        microbatch = (max(1, MICROBATCH_ONE_WINDOW // len(offsets)) if passes or len(offsets) == 1
                      else MICROBATCH)
    big = geometry.crop(jnp.asarray(image_BxHxW), jnp.asarray(box_Bx4, jnp.float32), size,
                        margin=margin)
    lm_win = in_microbatches(lambda x: window_landmarks(model, params, x, offsets, margin, mode),
                             big, microbatch)
    lm_box = geometry.shift_to_box(lm_win, offsets, size)
    return lm_box.mean(axis=1), lm_box


def sharing_cost(offsets_Tx2: np.ndarray, size: int = 60) -> dict[str, Any]:
    """How many conv maps each layer runs for these offsets (report trunk), and the large crop side."""
    margin = int(np.abs(np.asarray(offsets_Tx2)).max())
    fake = {f"conv{i}": {"kernel": np.zeros((k, k, 1, 1), np.float32), "bias": np.zeros(1, np.float32)}
            for i, k in zip(range(1, 5), (5, 5, 3, 3))}
    img = jax.ShapeDtypeStruct((1, size + 2 * margin, size + 2 * margin, 1), jnp.float32)
    runs = {}

    def count(x):
        runs.update(shared_conv_windows(fake, "relu", x, offsets_Tx2, size, margin)[1])
        return 0

    jax.eval_shape(count, img)
    return {"translations": int(len(offsets_Tx2)), "margin_px": margin,
            "crop_side": size + 2 * margin, "conv_maps_per_layer": runs}

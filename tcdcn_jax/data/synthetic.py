"""Embedded synthetic face world: grey photos of posed 3D faces with 68 iBUG landmarks and auxiliary labels.

Why: no dataset can be downloaded here, yet multi-task learning and task-wise early stopping must mean
something. So the auxiliary labels act on the landmark geometry as on real faces: yaw moves every point
(far-side jaw points slide onto the visible cheek outline, the far eye hides behind the nose), smiling widens
the mouth and lifts its corners, glasses cover the eyes, gender changes jaw, brows, hair and beard.

Geometry lives in "face units" (half the face width ~ 1, origin between the eyes, x right, y down, z toward
the camera). Each horizontal cross-section of the face at height y is the front half of a superellipse
with half-width A(y) (the jaw outline) whose back moves forward toward the chin, so the chin sits in front
and the jaw angle behind. Heads are rotated (yaw about y, pitch about x), projected orthographically,
rolled in the image plane, scaled and placed. Faces are drawn with Pillow at `ss` times the resolution into
an albedo image and a foreground mask, box-downsampled, then lit, composited over a textured background,
blurred and noised with vectorised numpy.

Sign conventions: yaw > 0 turns the nose toward the image-right (pose classes 3, 4); pitch > 0 lifts the
nose; roll > 0 rotates the face clockwise on screen (image y points down).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import pathlib
import sys
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

# Bump whenever a change alters the generated arrays: it keys the on-disk cache.
GENERATOR_VERSION = 1
CHUNK_SIZE = 256
POSE_YAW_DEG = np.array([-60.0, -30.0, 0.0, 30.0, 60.0], np.float32)
POSE_PRIOR = np.array([0.12, 0.2, 0.36, 0.2, 0.12])
YAW_JITTER_DEG = 12.0
SPLITS = ("train", "validation", "test")
DEFAULT_CACHE_DIR = "~/.cache/tcdcn_jax/synthetic"
ARRAY_KEYS = ("image", "box", "landmarks68", "landmarks5", "pose", "gender", "smile", "glasses",
              "yaw", "pitch", "roll", "occluded")

# Mean frontal 68-point shape in face units (symmetrised); jaw 0-16 is generated from JAW_PHI_DEG instead.
_TEMPLATE_17_67 = np.array([
    (-0.793, -0.187), (-0.668, -0.285), (-0.500, -0.310), (-0.328, -0.282), (-0.165, -0.213),
    (0.165, -0.213), (0.328, -0.282), (0.500, -0.310), (0.668, -0.285), (0.793, -0.187),
    (0.000, -0.016), (0.000, 0.158), (0.000, 0.332), (0.000, 0.510),
    (-0.194, 0.621), (-0.101, 0.659), (0.000, 0.692), (0.101, 0.659), (0.194, 0.621),
    (-0.595, 0.001), (-0.490, -0.061), (-0.362, -0.058), (-0.255, 0.024), (-0.373, 0.048), (-0.497, 0.046),
    (0.255, 0.024), (0.362, -0.058), (0.490, -0.061), (0.595, 0.001), (0.497, 0.046), (0.373, 0.048),
    (-0.388, 0.935), (-0.247, 0.878), (-0.103, 0.853), (0.000, 0.878), (0.103, 0.853), (0.247, 0.878),
    (0.388, 0.935), (0.253, 1.081), (0.112, 1.145), (0.000, 1.157), (-0.112, 1.145), (-0.253, 1.081),
    (-0.328, 0.945), (-0.104, 0.939), (0.000, 0.949), (0.104, 0.939), (0.328, 0.945),
    (0.106, 1.013), (0.000, 1.026), (-0.106, 1.013)], np.float32)
# Angle parameter of jaw points 0..8 on the superellipse |x/W|^n + |y/b|^n = 1 (fitted to a mean shape).
JAW_PHI_DEG = np.array([0.0, 7.0, 16.2, 25.7, 37.6, 51.2, 64.5, 77.6, 90.0])
# Depth of each landmark above the face surface (nose protrudes, eyes sit in sockets).
_DZ = np.zeros(68, np.float32)
_DZ[17:27] = 0.03
_DZ[27:36] = [0.10, 0.17, 0.25, 0.34, 0.06, 0.13, 0.17, 0.13, 0.06]
_DZ[36:48] = [-0.05, -0.09, -0.09, -0.12, -0.09, -0.09, -0.12, -0.09, -0.09, -0.05, -0.09, -0.09]
_DZ[48:68] = 0.04
_DZ[[48, 54, 60, 64]] = 0.0
_SECTION_P = 2.5  # cross-section superellipse exponent: a flat front that curves away at the sides
_U_GRID = np.linspace(0.0, 1.0, 81, dtype=np.float32)


# ----------------------------------------------------------------------------------------------- sampling


def _u(rng: np.random.Generator, lo: float, hi: float, b: int) -> np.ndarray:
    return rng.uniform(lo, hi, b).astype(np.float32)


def _sample_attributes(rng: np.random.Generator, b: int, image_size: int) -> dict[str, np.ndarray]:
    """Draws labels, pose, shape, expression and appearance for `b` faces (all vectorised)."""
    a: dict[str, np.ndarray] = {}
    a["pose"] = rng.choice(5, size=b, p=POSE_PRIOR).astype(np.int32)
    a["yaw"] = POSE_YAW_DEG[a["pose"]] + _u(rng, -YAW_JITTER_DEG, YAW_JITTER_DEG, b)
    a["pitch"] = np.clip(rng.normal(0, 7, b), -20, 20).astype(np.float32)
    a["roll"] = np.clip(rng.normal(0, 7, b), -20, 20).astype(np.float32)
    male = rng.random(b) < 0.5
    a["gender"] = male.astype(np.int32)
    a["smile"] = (rng.random(b) < 0.45).astype(np.int32)
    a["glasses"] = (rng.random(b) < np.where(male, 0.29, 0.21)).astype(np.int32)
    a["occluded"] = (rng.random(b) < 0.15).astype(np.int32)
    m = male.astype(np.float32)

    # Shape (face units).
    a["W"] = _u(rng, 0.93, 1.07, b) * (0.98 + 0.05 * m)
    a["b"] = 1.64 * _u(rng, 0.93, 1.07, b) * (0.98 + 0.05 * m)
    a["n"] = np.where(male, rng.normal(2.45, 0.12, b), rng.normal(2.0, 0.1, b)).astype(np.float32)
    a["klow"] = np.where(male, _u(rng, 0.0, 0.08, b), _u(rng, -0.08, 0.0, b))
    a["D"] = 0.95 * _u(rng, 0.9, 1.1, b)
    a["eye_dx"] = _u(rng, -0.05, 0.05, b)
    a["eye_dy"] = _u(rng, -0.04, 0.04, b)
    a["eye_scale"] = _u(rng, 0.88, 1.12, b) * (1.04 - 0.06 * m)
    a["eye_open"] = _u(rng, 0.75, 1.2, b)
    a["brow_dy"] = np.where(male, 0.05, -0.04) + _u(rng, -0.04, 0.04, b)
    a["brow_arch"] = np.where(male, _u(rng, 0.2, 0.7, b), _u(rng, 1.0, 1.5, b))
    a["brow_thick"] = np.where(male, _u(rng, 0.08, 0.12, b), _u(rng, 0.045, 0.07, b))
    a["nose_len"] = _u(rng, 0.88, 1.12, b)
    a["nose_w"] = _u(rng, 0.85, 1.15, b) * (1.0 + 0.06 * m)
    a["nose_prom"] = _u(rng, 0.8, 1.2, b)
    a["mouth_w"] = _u(rng, 0.88, 1.12, b)
    a["mouth_dy"] = _u(rng, -0.05, 0.05, b)
    a["lip_thick"] = _u(rng, 0.8, 1.25, b) * (1.1 - 0.2 * m)
    a["hairline"] = _u(rng, -1.1, -0.9, b) - 0.08 * m * (rng.random(b) < 0.3)
    a["pt_noise"] = rng.normal(0, 0.012, (b, 68, 2)).astype(np.float32)

    # Expression: smile lifts and widens the corners and often parts the lips; others sometimes talk.
    smile = a["smile"].astype(np.float32)
    a["smile_s"] = smile * _u(rng, 0.5, 1.0, b)
    talk = (rng.random(b) < 0.15) * _u(rng, 0.0, 0.08, b)
    opened = (rng.random(b) < 0.7) * _u(rng, 0.04, 0.28, b) * a["smile_s"]
    a["open"] = np.where(smile > 0, opened, talk).astype(np.float32)
    a["corner_dy"] = rng.normal(0, 0.015, b).astype(np.float32)

    # Hair and accessories (hair style depends on gender).
    long_hair = np.where(male, rng.random(b) < 0.08, rng.random(b) < 0.75)
    a["long_hair"] = long_hair
    a["bald"] = male & ~long_hair & (rng.random(b) < 0.12)
    a["beard"] = male & (rng.random(b) < 0.3)
    a["fringe"] = rng.random(b) < np.where(long_hair, 0.35, 0.1)
    a["lock_side"] = np.where(long_hair & (rng.random(b) < 0.5), rng.choice([-1, 1], b), 0)
    a["lock_w"] = _u(rng, 0.12, 0.35, b)
    a["lock_len"] = rng.integers(2, 7, b)
    a["hair_len"] = np.where(long_hair, _u(rng, 1.8, 3.2, b), 0.0).astype(np.float32)
    a["fringe_drop"] = _u(rng, 0.25, 0.5, b)
    a["sunglasses"] = (a["glasses"] > 0) & (rng.random(b) < 0.15)
    a["rim_rx"] = _u(rng, 0.26, 0.34, b)
    a["rim_ry"] = _u(rng, 0.17, 0.25, b)
    a["rim_p"] = _u(rng, 2.0, 4.0, b)
    a["frame_w"] = _u(rng, 0.025, 0.07, b)
    a["frame_v"] = _u(rng, 10, 70, b)

    # Appearance (albedo 0..255).
    a["skin"] = _u(rng, 105, 215, b)
    kind = rng.random(b)
    hair = np.where(kind < 0.6, _u(rng, 15, 60, b), np.where(kind < 0.85, _u(rng, 60, 120, b),
                                                            _u(rng, 130, 210, b)))
    a["hair"] = hair.astype(np.float32)
    a["brow"] = np.minimum(hair + 15, a["skin"] * _u(rng, 0.35, 0.65, b))
    a["beard_v"] = np.minimum(hair * _u(rng, 0.8, 1.3, b), a["skin"] * 0.6)
    a["eye_white"] = np.minimum(_u(rng, 150, 225, b), a["skin"] * 1.25 + 15)
    a["iris"] = _u(rng, 10, 70, b)
    a["lips"] = a["skin"] * np.where(~male & (rng.random(b) < 0.3), 0.45, _u(rng, 0.6, 0.8, b))
    a["cloth"] = _u(rng, 20, 230, b)
    a["occ_v"] = _u(rng, 40, 220, b)
    a["light_az"] = np.deg2rad(_u(rng, -70, 70, b))
    a["light_el"] = np.deg2rad(_u(rng, -10, 50, b))
    a["ambient"] = _u(rng, 0.25, 0.55, b)
    a["face_px"] = _u(rng, 40, 60, b) * (image_size / 96.0)
    a["pos_u"] = rng.random((b, 2)).astype(np.float32)
    a["occ"] = rng.random((b, 6)).astype(np.float32)
    return a


# ----------------------------------------------------------------------------------------------- geometry


def _half_width(y: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """A(y): half-width of the face cross-section at height y (the frontal face outline)."""
    w, bb, n, kl = (a[k][:, None] for k in ("W", "b", "n", "klow"))
    t = np.clip(y / bb, 0.0, 1.0)
    below = w * np.clip(1.0 - t ** n, 0.0, 1.0) ** (1.0 / n) * (1.0 + kl * t)
    above = w * np.sqrt(np.clip(1.0 - 0.09 * y ** 2, 0.3, 1.0))
    return np.where(y < 0, above, below).astype(np.float32)


def _surface(u: np.ndarray, y: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """3D point at signed section coordinate u in [-1, 1] and height y: (..., 3)."""
    half = _half_width(y, a)
    d = a["D"][:, None]
    zb = d * np.clip(y / a["b"][:, None], 0.0, 1.0) ** 3  # the jaw comes forward toward the chin
    au = np.clip(np.abs(u), 0.0, 1.0)
    z = zb + (d - zb) * (1.0 - au ** _SECTION_P) ** (1.0 / _SECTION_P)
    return np.stack([u * half, y, z], -1)


def _silhouette_u(y: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """Signed u of the far-side outline at height y: the section point that projects furthest out."""
    yaw = np.deg2rad(a["yaw"])[:, None, None]
    half = _half_width(y, a)[..., None]
    d = a["D"][:, None, None]
    zb = d * np.clip(y / a["b"][:, None], 0.0, 1.0)[..., None] ** 3
    g = _U_GRID
    z = zb + (d - zb) * (1.0 - g ** _SECTION_P) ** (1.0 / _SECTION_P)
    extent = g * half * np.cos(yaw) + z * np.abs(np.sin(yaw))
    return (_U_GRID[np.argmax(extent, -1)] * np.sign(a["yaw"])[:, None]).astype(np.float32)


def _outline_point(side: float, y: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """Visible face outline on `side` (-1 image-left, +1 image-right) at heights y: near edge or silhouette."""
    far = np.sign(a["yaw"])[:, None] == side
    u = np.where(far, _silhouette_u(y, a), side)
    return _surface(u, y, a)


def _frontal_landmarks(a: Mapping[str, np.ndarray]) -> np.ndarray:
    """Frontal (x, y) of the 68 points after shape and expression changes: (B, 68, 2)."""
    b = a["W"].shape[0]
    lm = np.broadcast_to(np.concatenate([np.zeros((17, 2), np.float32), _TEMPLATE_17_67]), (b, 68, 2)).copy()
    x, y = lm[..., 0], lm[..., 1]
    col = {k: a[k][:, None] for k in a if np.ndim(a[k]) == 1}
    # Brows: height, arch about the line through their ends, spacing follows the eyes.
    for lo, hi, sgn in ((17, 22, -1.0), (22, 27, 1.0)):
        ends_y = np.stack([y[:, lo], y[:, hi - 1]], -1)
        ends_x = np.stack([x[:, lo], x[:, hi - 1]], -1)
        w = (x[:, lo:hi] - ends_x[:, :1]) / (ends_x[:, 1:] - ends_x[:, :1])
        line = ends_y[:, :1] + w * (ends_y[:, 1:] - ends_y[:, :1])
        y[:, lo:hi] = line + col["brow_arch"] * (y[:, lo:hi] - line) + col["brow_dy"]
        x[:, lo:hi] += sgn * col["eye_dx"]
    # Eyes: spacing, size, openness; a smile pushes the lower lids up.
    for lo, sgn in ((36, -1.0), (42, 1.0)):
        cx, cy = x[:, lo:lo + 6].mean(1, keepdims=True), y[:, lo:lo + 6].mean(1, keepdims=True)
        x[:, lo:lo + 6] = cx + sgn * col["eye_dx"] + (x[:, lo:lo + 6] - cx) * col["eye_scale"]
        y[:, lo:lo + 6] = cy + col["eye_dy"] + (y[:, lo:lo + 6] - cy) * col["eye_scale"] * col["eye_open"]
        y[:, [lo + 4, lo + 5]] -= 0.035 * col["smile_s"]
    # Nose length and width.
    y[:, 28:36] = y[:, 27:28] + (y[:, 28:36] - y[:, 27:28]) * col["nose_len"]
    x[:, 31:36] *= col["nose_w"]
    # Mouth: closed inner lips, lip thickness, width, position, smile and opening.
    y[:, [67, 66, 65]] = y[:, [61, 62, 63]] + 0.005
    seam = 0.942
    outer = np.r_[48:60]
    y[:, outer] = seam + (y[:, outer] - seam) * col["lip_thick"]
    mw = col["mouth_w"] * (1.0 + 0.2 * col["smile_s"])
    x[:, 48:68] *= mw
    y[:, 48:68] += col["mouth_dy"] + 0.25 * (col["nose_len"] - 1.0)
    hw = np.abs(x[:, 48:49])
    rel2 = (x[:, 48:68] / hw) ** 2
    y[:, 48:68] -= (0.13 * col["smile_s"] + col["corner_dy"]) * rel2
    prof = 1.0 - 0.7 * np.clip(rel2, 0, 1)
    lower = np.r_[55:60, 65:68] - 48
    y[:, 48 + lower] += col["open"] * prof[:, lower]
    y[:, 61:64] -= 0.15 * col["open"] * prof[:, 13:16]
    # Jaw from the superellipse (consistent with _half_width).
    phi = np.deg2rad(JAW_PHI_DEG)[None, :]
    t = np.sin(phi) ** (2.0 / col["n"])
    jy = col["b"] * t
    jx = col["W"] * np.cos(phi) ** (2.0 / col["n"]) * (1.0 + col["klow"] * t)
    x[:, :9], y[:, :9] = -jx, jy
    x[:, 16:7:-1], y[:, 16:7:-1] = jx, jy
    lm += a["pt_noise"] * np.r_[np.zeros(17), np.ones(51)][None, :, None]
    return lm


def _rotation(a: Mapping[str, np.ndarray]) -> np.ndarray:
    """Head rotation (pitch after yaw): (B, 3, 3)."""
    yw, pt = np.deg2rad(a["yaw"]), np.deg2rad(a["pitch"])
    cy, sy, cp, sp = np.cos(yw), np.sin(yw), np.cos(pt), np.sin(pt)
    one, zero = np.ones_like(cy), np.zeros_like(cy)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1),
                   np.stack([-sy, zero, cy], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1),
                   np.stack([zero, sp, cp], -1)], -2)
    return np.einsum("bij,bjk->bik", rx, ry).astype(np.float32)


def _ring(c: np.ndarray, rx: np.ndarray, ry: np.ndarray, k: int, p: float | np.ndarray = 2.0,
          plane: str = "xy") -> np.ndarray:
    """k points of a superellipse ring around 3D centres c (B, 3) in a head-frame plane: (B, k, 3)."""
    t = np.linspace(0, 2 * np.pi, k, endpoint=False, dtype=np.float32)[None]
    p = np.asarray(p, np.float32).reshape(-1, 1) if np.ndim(p) else p
    ct, st = np.cos(t), np.sin(t)
    e1 = np.sign(ct) * np.abs(ct) ** (2.0 / p) * np.reshape(rx, (-1, 1))
    e2 = np.sign(st) * np.abs(st) ** (2.0 / p) * np.reshape(ry, (-1, 1))
    zero = np.zeros_like(e1 + e2)
    off = np.stack([e1 + zero, e2 + zero, zero], -1) if plane == "xy" else np.stack([zero, e2 + zero, e1 + zero], -1)
    return c[:, None, :] + off


def _ellipse2d(c: np.ndarray, rx: np.ndarray, ry: np.ndarray, k: int) -> np.ndarray:
    """k points of an axis-aligned 2D ellipse: (B, k, 2)."""
    t = np.linspace(0, 2 * np.pi, k, endpoint=False, dtype=np.float32)[None]
    return np.stack([c[:, None, 0] + rx[:, None] * np.cos(t), c[:, None, 1] + ry[:, None] * np.sin(t)], -1)


def _projected_ellipsoid(c: np.ndarray, axes: np.ndarray, rot: np.ndarray, k: int) -> np.ndarray:
    """Outline of an axis-aligned head-frame ellipsoid after rotation and orthographic projection."""
    q = np.einsum("bij,bj,bkj->bik", rot, 1.0 / axes ** 2, rot)
    s = q[:, :2, :2] - q[:, :2, 2:] @ q[:, 2:, :2] / q[:, 2:, 2:]
    lam, vec = np.linalg.eigh(s)
    t = np.linspace(0, 2 * np.pi, k, endpoint=False, dtype=np.float32)
    circ = np.stack([np.cos(t), np.sin(t)], 0)  # (2, k)
    off = np.einsum("bij,bj,jk->bki", vec, 1.0 / np.sqrt(lam), circ)
    return np.einsum("bij,bj->bi", rot, c)[:, None, :2] + off


def _interp_rows(q: np.ndarray, xk: np.ndarray, yk: np.ndarray) -> np.ndarray:
    """Piecewise-linear y(q) per row for increasing knots xk (B, K); q (B, Q)."""
    q = np.clip(q, xk[:, :1], xk[:, -1:])
    idx = np.clip((q[..., None] > xk[:, None, :]).sum(-1), 1, xk.shape[1] - 1)
    x0, x1 = np.take_along_axis(xk, idx - 1, 1), np.take_along_axis(xk, idx, 1)
    y0, y1 = np.take_along_axis(yk, idx - 1, 1), np.take_along_axis(yk, idx, 1)
    w = (q - x0) / np.maximum(x1 - x0, 1e-6)
    return y0 + w * (y1 - y0)


def _scene(a: Mapping[str, np.ndarray], image_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All point sets in pixels: ({name: (B, K, 2)}, landmarks68 (B, 68, 2))."""
    b = a["W"].shape[0]
    rot = _rotation(a)
    proj = lambda p3: np.einsum("bij,bkj->bki", rot, p3)[..., :2]  # noqa: E731
    f2 = _frontal_landmarks(a)
    lm3 = _surface(f2[..., 0] / np.maximum(_half_width(f2[..., 1], a), 1e-4), f2[..., 1], a)
    nose = (np.arange(68) >= 27) & (np.arange(68) < 36)
    lm3[..., 2] += _DZ * np.where(nose, a["nose_prom"][:, None], 1.0)
    # Far-side jaw points move onto the visible outline (300-W convention); near side stays on the jaw.
    jaw_side = np.sign(f2[:, :17, 0])
    far = jaw_side == np.sign(a["yaw"])[:, None]
    u_sil = _silhouette_u(f2[:, :17, 1], a)
    jaw_u = np.where(far, u_sil, jaw_side)
    lm3[:, :17] = _surface(jaw_u, f2[:, :17, 1], a)
    lm = proj(lm3)

    pts: dict[str, np.ndarray] = {}
    # What is drawn: far-side features clamped to the cheek outline (the landmarks themselves are not).
    sil3 = _surface(_silhouette_u(f2[..., 1], a), f2[..., 1], a)
    sil_x = proj(sil3)[..., 0]
    sgn = np.sign(a["yaw"])[:, None]
    draw = lm.copy()
    clamp = (sgn != 0) & (sgn * draw[..., 0] > sgn * sil_x - 0.02)
    draw[..., 0] = np.where(clamp, sil_x - sgn * 0.02, draw[..., 0])
    draw[:, :17] = lm[:, :17]
    pts["draw"] = draw

    # Face skin outline: jaw, sides up to the temples, hairline across the forehead.
    side_y = np.broadcast_to(np.array([-0.05, -0.35, -0.6], np.float32), (b, 3))
    hl_u = np.linspace(1.0, -1.0, 11, dtype=np.float32)[None]
    hl_y = a["hairline"][:, None] + 0.45 * np.abs(hl_u) ** 3
    hl_sil = np.abs(_silhouette_u(hl_y, a))
    far_hl = np.sign(hl_u) == sgn
    hl_u = np.where(far_hl, np.sign(hl_u) * np.minimum(np.abs(hl_u), hl_sil), hl_u)
    outline3 = np.concatenate([
        lm3[:, :17], _outline_point(1.0, side_y, a), _surface(hl_u, hl_y, a),
        _outline_point(-1.0, side_y[:, ::-1], a)], 1)
    pts["outline"] = proj(outline3)

    w = a["W"]
    pts["skull"] = _projected_ellipsoid(np.stack([0 * w, -0.6 + 0 * w, -0.25 + 0 * w], -1),
                                        np.stack([1.02 * w, 1.12 + 0 * w, 1.2 + 0 * w], -1), rot, 32)
    for name, s in (("ear_l", -1.0), ("ear_r", 1.0)):
        c = np.stack([s * (_half_width(np.full((b, 1), 0.15, np.float32), a)[:, 0] + 0.02),
                      0.17 + 0 * w, -0.12 + 0 * w], -1)
        ring = _ring(c, 0.16 * np.ones(b, np.float32), 0.3 * np.ones(b, np.float32), 10, plane="yz")
        ring[..., 0] += s * 0.12 * (1.0 - np.cos(np.linspace(0, 2 * np.pi, 10, endpoint=False)))[None] * 0.5
        pts[name] = proj(ring)
    neck3 = np.stack([np.stack([-0.5 * w, 0.8 + 0 * w, -0.35 + 0 * w], -1),
                      np.stack([-0.58 * w, 2.9 + 0 * w, -0.35 + 0 * w], -1),
                      np.stack([0.58 * w, 2.9 + 0 * w, -0.35 + 0 * w], -1),
                      np.stack([0.5 * w, 0.8 + 0 * w, -0.35 + 0 * w], -1)], 1)
    pts["neck"] = proj(neck3)
    nb = proj(np.stack([0 * w, 2.4 + 0 * w, -0.35 + 0 * w], -1)[:, None])[:, 0]
    pts["shoulders"] = _ellipse2d(nb + np.array([0.0, 1.0], np.float32), 2.7 * w, 1.1 + 0 * w, 32)

    # Long hair behind the head and neck: skull outline enlarged plus a curtain down to hair_len.
    sk = pts["skull"]
    skc = sk.mean(1, keepdims=True)
    hx0, hx1 = sk[..., 0].min(1), sk[..., 0].max(1)
    cy = skc[:, 0, 1]
    end = cy + 1.0 + a["hair_len"]
    pts["hair_top"] = skc + 1.1 * (sk - skc)
    pts["hair_curtain"] = np.stack([np.stack([hx0 - 0.08, cy], -1), np.stack([hx0 - 0.25, end], -1),
                                    np.stack([hx1 + 0.25, end], -1), np.stack([hx1 + 0.08, cy], -1)], 1)
    # Front lock over one side of the face (can hide jaw points 0.. or ..16), and a fringe.
    ol = pts["outline"]
    left_side = np.concatenate([ol[:, [31, 30, 29]], ol[:, 0:9]], 1)  # temple down to the chin
    right_side = np.concatenate([ol[:, [17, 18, 19]], ol[:, 16:7:-1]], 1)
    pts["lock_l"] = _lock(left_side, -1.0, a)
    pts["lock_r"] = _lock(right_side, 1.0, a)
    hl2 = pts["outline"][:, 20:31]
    pts["fringe"] = np.concatenate([hl2 + np.array([0, -0.15], np.float32),
                                    hl2[:, ::-1] + np.stack([0 * w, a["fringe_drop"]], -1)[:, None]], 1)

    # Brows as tapered bands, irises/pupils clipped to the eye opening, nose sides, beard.
    for name, lo in (("brow_l", 17), ("brow_r", 22)):
        c = draw[:, lo:lo + 5]
        prof = np.array([0.55, 0.8, 0.95, 1.0, 1.0], np.float32) if lo == 17 else \
            np.array([1.0, 1.0, 0.95, 0.8, 0.55], np.float32)
        th = (a["brow_thick"][:, None] * prof)[..., None] * np.array([0.0, 0.5], np.float32)
        pts[name] = np.concatenate([c - th, (c + th)[:, ::-1]], 1)
    for name, lo in (("l", 36), ("r", 42)):
        centre = lm3[:, lo:lo + 6].mean(1)
        for part, r, k in (("iris", 0.075, 16), ("pupil", 0.03, 8)):
            ring = proj(_ring(centre, r * np.ones(b, np.float32), r * np.ones(b, np.float32), k))
            e = draw[:, lo:lo + 6]
            upper, lower = e[:, [0, 1, 2, 3]], e[:, [0, 5, 4, 3]]
            order = np.argsort(upper[..., 0], 1)
            up = _interp_rows(ring[..., 0], np.take_along_axis(upper[..., 0], order, 1),
                              np.take_along_axis(upper[..., 1], order, 1))
            order = np.argsort(lower[..., 0], 1)
            dn = _interp_rows(ring[..., 0], np.take_along_axis(lower[..., 0], order, 1),
                              np.take_along_axis(lower[..., 1], order, 1))
            xs = np.clip(ring[..., 0], e[..., 0].min(1, keepdims=True), e[..., 0].max(1, keepdims=True))
            pts[f"{part}_{name}"] = np.stack([xs, np.clip(ring[..., 1], up, np.maximum(dn, up))], -1)
    base_y = np.array([-0.02, 0.2, 0.42], np.float32)
    for name, s, wing in (("nose_l", -1.0, [30, 32, 31]), ("nose_r", 1.0, [30, 34, 35])):
        bx = s * 0.12 * a["nose_w"][:, None] * np.ones(3, np.float32)
        by = f2[:, 27:28, 1] + base_y * a["nose_len"][:, None]
        base3 = _surface(bx / _half_width(by, a), by, a)
        pts[name] = np.concatenate([lm[:, 27:30], lm[:, wing], proj(base3)[:, ::-1]], 1)
    for name, lo, hi in (("nostril_l", 31, 32), ("nostril_r", 34, 35)):
        c3 = 0.5 * (lm3[:, lo] + lm3[:, hi]) + np.array([0, 0.01, -0.02], np.float32)
        pts[name] = proj(_ring(c3, 0.045 * a["nose_w"], 0.022 * np.ones(b, np.float32), 8))
    inner_xy = np.array([(0.72, 0.45), (0.5, 0.98), (0.28, 1.22), (0.0, 1.28), (-0.28, 1.22),
                         (-0.5, 0.98), (-0.72, 0.45)], np.float32)
    iy = np.broadcast_to(inner_xy[:, 1], (b, 7)) + a["mouth_dy"][:, None]
    iu = np.clip(inner_xy[:, 0] * a["mouth_w"][:, None] * 1.1 / np.maximum(_half_width(iy, a), 1e-4), -0.95, 0.95)
    iu = np.where(np.sign(iu) == sgn, np.sign(iu) * np.minimum(np.abs(iu), np.abs(_silhouette_u(iy, a))), iu)
    pts["beard"] = np.concatenate([lm[:, 2:15], proj(_surface(iu, iy, a))], 1)
    pts["moustache"] = np.concatenate([lm[:, 31:36] + np.array([0, 0.04], np.float32),
                                       lm[:, [54, 53, 52, 51, 50, 49, 48]] + np.array([0, -0.01], np.float32)], 1)

    # Glasses: rims in a plane in front of the eyes, a bridge over the nose, the near-side arm.
    zg = a["D"] + 0.12
    rims = []
    for name, lo in (("rim_l", 36), ("rim_r", 42)):
        c = lm3[:, lo:lo + 6].mean(1)
        c = np.stack([c[:, 0], c[:, 1] + 0.02, zg], -1)
        ring3 = _ring(c, a["rim_rx"], a["rim_ry"], 20, a["rim_p"])
        rims.append(ring3)
        pts[name] = proj(ring3)
    bridge3 = np.stack([rims[0][:, 18], np.stack([0 * w, rims[0][:, 18, 1] - 0.03, zg + 0.04], -1),
                        rims[1][:, 12]], 1)
    pts["bridge"] = proj(bridge3)
    for name, rim, s in (("arm_l", rims[0], -1.0), ("arm_r", rims[1], 1.0)):
        outer = rim[:, 10 if s < 0 else 0]
        ear = np.stack([s * (w + 0.05), outer[:, 1] + 0.05, -0.15 + 0 * w], -1)
        pts[name] = proj(np.stack([outer, ear], 1))

    # Random occluder ("hand"): an ellipse near a random face part.
    o = a["occ"]
    anchors = np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], 0.5 * (lm[:, 48] + lm[:, 54]),
                        lm[:, 4], lm[:, 12]], 1)
    pick = np.minimum((o[:, 0] * 6).astype(int), 5)
    oc = anchors[np.arange(b), pick] + (o[:, 1:3] - 0.5) * 0.4
    ang = o[:, 3] * np.pi
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False, dtype=np.float32)[None]
    rx, ry = (0.35 + 0.45 * o[:, 4])[:, None], (0.25 + 0.3 * o[:, 5])[:, None]
    ex, ey = rx * np.cos(t), ry * np.sin(t)
    pts["occluder"] = oc[:, None] + np.stack([ex * np.cos(ang)[:, None] - ey * np.sin(ang)[:, None],
                                              ex * np.sin(ang)[:, None] + ey * np.cos(ang)[:, None]], -1)
    pts["head_centre"] = proj(np.stack([0 * w, 0.25 + 0 * w, -0.1 + 0 * w], -1)[:, None])
    return _place(pts, lm, a, image_size)


def _lock(side: np.ndarray, s: float, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """A lock of hair hanging along one side of the face, from the temple down `lock_len` jaw points."""
    k = side.shape[1]
    keep = np.arange(k)[None] <= (2 + a["lock_len"])[:, None]
    last = np.take_along_axis(side, (2 + a["lock_len"])[:, None, None].repeat(2, -1), 1)
    side = np.where(keep[..., None], side, last + np.array([0.0, 0.3], np.float32))
    outer = side + np.array([s * 0.12, 0.0], np.float32)
    inner = side - np.stack([s * a["lock_w"], 0 * a["lock_w"]], -1)[:, None]
    return np.concatenate([outer, inner[:, ::-1]], 1)


def _place(pts: dict[str, np.ndarray], lm: np.ndarray, a: Mapping[str, np.ndarray],
           image_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Rolls, scales and translates every point set so the landmark box (plus margin) lies in the image."""
    roll = np.deg2rad(a["roll"])
    c, s = np.cos(roll), np.sin(roll)
    rot2 = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    lm_r = np.einsum("bij,bkj->bki", rot2, lm)
    lo, hi = lm_r.min(1), lm_r.max(1)
    size = hi - lo
    margin = 0.1
    scale = a["face_px"] / np.sqrt(size[:, 0] * size[:, 1])
    scale = np.minimum(scale, (image_size - 1.0) / ((1 + 2 * margin) * size.max(1)))
    box_px = size * scale[:, None]
    free = (image_size - 1.0) - (1 + 2 * margin) * box_px
    left_top = margin * box_px + a["pos_u"] * free
    shift = left_top - lo * scale[:, None]

    def tf(p: np.ndarray) -> np.ndarray:
        return (np.einsum("bij,bkj->bki", rot2, p) * scale[:, None, None] + shift[:, None]).astype(np.float32)

    out = {k: tf(v) for k, v in pts.items()}
    out["scale"] = scale.astype(np.float32)
    out["roll_rot"] = rot2.astype(np.float32)
    return out, tf(lm)


# ----------------------------------------------------------------------------------------------- drawing


def _draw_face(i: int, pts: Mapping[str, np.ndarray], a: Mapping[str, np.ndarray], size: int,
               ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterises face i at ss x resolution: (albedo, alpha) as (size, size) uint8 after box filtering."""
    big = size * ss
    alb = Image.new("L", (big, big), 0)
    msk = Image.new("L", (big, big), 0)
    da, dm = ImageDraw.Draw(alb), ImageDraw.Draw(msk)
    scale = float(pts["scale"][i])  # pts are already in supersampled pixels

    def xy(name: str, idx: Any = slice(None)) -> list[float]:
        return pts[name][i][idx].ravel().tolist()

    def poly(name: str, v: float, idx: Any = slice(None), fg: bool = False) -> None:
        p = xy(name, idx)
        da.polygon(p, fill=int(min(max(v, 0), 255)))
        if fg:
            dm.polygon(p, fill=255)

    def line(name: str, v: float, width_units: float, idx: Any = slice(None), fg: bool = False) -> None:
        w = max(1, int(round(width_units * scale)))
        p = xy(name, idx)
        da.line(p, fill=int(min(max(v, 0), 255)), width=w, joint="curve")
        if fg:
            dm.line(p, fill=255, width=w, joint="curve")

    skin, hair = float(a["skin"][i]), float(a["hair"][i])
    yaw = float(a["yaw"][i])
    poly("shoulders", a["cloth"][i], fg=True)
    if a["long_hair"][i]:
        poly("hair_curtain", hair * 0.85, fg=True)
        poly("hair_top", hair * 0.85, fg=True)
    poly("neck", skin * 0.72, fg=True)
    ears = [] if a["long_hair"][i] else [e for e, s in (("ear_l", -1), ("ear_r", 1)) if s * yaw < 20]
    poly("skull", skin if a["bald"][i] else hair, fg=True)
    for e in ears:
        poly(e, skin * 0.9, fg=True)
    poly("outline", skin, fg=True)
    if a["beard"][i]:
        poly("beard", a["beard_v"][i])
        poly("moustache", a["beard_v"][i])
    brow = float(a["brow"][i])
    poly("brow_l", brow)
    poly("brow_r", brow)
    lid = min(skin * 0.35, 60.0)
    for s, lo in (("l", 36), ("r", 42)):
        poly("draw", a["eye_white"][i], _EYE[lo])
        poly(f"iris_{s}", a["iris"][i])
        poly(f"pupil_{s}", a["iris"][i] * 0.4)
        line("draw", lid, 0.035, _EYE_LOOP[lo])
        line("draw", lid * 0.7, 0.06, _EYE_UPPER[lo])
    # Nose: the side turned away first, then the side facing the camera (it hides the far eye's corner).
    light_x = np.sin(float(a["light_az"][i]))
    order = ("nose_r", "nose_l") if yaw >= 0 else ("nose_l", "nose_r")
    for name in order:
        lit = (name == "nose_r") == (light_x > 0)
        poly(name, skin * (1.02 if lit else 0.74), fg=True)
    line("draw", skin * 0.55, 0.03, _NOSE_BASE)
    poly("nostril_l", skin * 0.3)
    poly("nostril_r", skin * 0.3)
    lips = float(a["lips"][i])
    poly("draw", lips, _UPPER_LIP)
    poly("draw", lips * 1.12, _LOWER_LIP)
    if a["open"][i] > 0.02:
        poly("draw", 25.0, _INNER_LIP)
        if a["smile"][i]:
            da.polygon(xy("draw", _SEAM) + _teeth_low(pts["draw"][i]), fill=int(min(225, skin * 1.2)))
    line("draw", lips * 0.45, 0.03, _SEAM)
    if a["lock_side"][i] != 0:
        poly("lock_l" if a["lock_side"][i] < 0 else "lock_r", hair, fg=True)
    if a["fringe"][i] and not a["bald"][i]:
        poly("fringe", hair, fg=True)
    if a["glasses"][i]:
        fv, fw = float(a["frame_v"][i]), float(a["frame_w"][i])
        for r in ("rim_l", "rim_r"):
            if a["sunglasses"][i]:
                poly(r, 30.0, fg=True)
            line(r, fv, fw, _RIM_LOOP, fg=True)
        line("bridge", fv, fw, fg=True)
        if abs(yaw) > 15:
            line("arm_l" if yaw > 0 else "arm_r", fv, fw, fg=True)
    if a["occluded"][i]:
        poly("occluder", a["occ_v"][i], fg=True)
    return np.asarray(alb.reduce(ss)), np.asarray(msk.reduce(ss))


def _teeth_low(d: np.ndarray) -> list[float]:
    """Lower edge of the visible upper teeth: part way from the upper to the lower inner lip."""
    up = d[[63, 62, 61]]
    return (up + 0.55 * (d[[65, 66, 67]] - up)).ravel().tolist()


_EYE = {lo: np.r_[lo:lo + 6] for lo in (36, 42)}
_EYE_LOOP = {lo: np.r_[lo:lo + 6, lo] for lo in (36, 42)}
_EYE_UPPER = {lo: np.r_[lo:lo + 4] for lo in (36, 42)}
_NOSE_BASE = np.r_[31:36]
_UPPER_LIP = np.r_[48:55, 64, 63, 62, 61, 60]
_LOWER_LIP = np.r_[54:60, 48, 60, 67, 66, 65, 64]
_INNER_LIP = np.r_[60:68]
_SEAM = np.r_[60:65]
_RIM_LOOP = np.r_[0:20, 0]


# ----------------------------------------------------------------------------------------------- pixels


def _upsample_matrix(k: int, size: int) -> np.ndarray:
    """Bilinear interpolation weights from a k-point grid to `size` pixels: (size, k)."""
    pos = np.linspace(0, k - 1, size)
    lo = np.clip(np.floor(pos).astype(int), 0, k - 2)
    w = pos - lo
    m = np.zeros((size, k), np.float32)
    m[np.arange(size), lo] = 1 - w
    m[np.arange(size), lo + 1] += w
    return m


def _background(rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    """Textured backgrounds: smooth blotches, finer texture, a random edge, sometimes stripes."""
    f32 = np.float32
    yy, xx = np.mgrid[0:size, 0:size].astype(f32)
    out = rng.uniform(30, 220, (b, 1, 1)).astype(f32)
    for k, (lo, hi) in ((4, (10, 45)), (12, (3, 15))):
        m = _upsample_matrix(k, size)
        field = m @ rng.normal(size=(b, k, k)).astype(f32) @ m.T
        out = out + field * rng.uniform(lo, hi, (b, 1, 1)).astype(f32)
    ang = rng.uniform(0, np.pi, (b, 1, 1)).astype(f32)
    off = (rng.uniform(0.2, 0.8, (b, 1, 1)) * size).astype(f32)
    step = (rng.uniform(-60, 60, (b, 1, 1)) * (rng.random((b, 1, 1)) < 0.5)).astype(f32)
    dist = xx * np.cos(ang) + yy * np.sin(ang) - off * (np.abs(np.cos(ang)) + np.abs(np.sin(ang)))
    out += step * (0.5 + 0.5 * np.tanh(0.5 * dist))
    freq = rng.uniform(2 * np.pi / 12, 2 * np.pi / 4, (b, 1, 1)).astype(f32)
    ang2 = rng.uniform(0, np.pi, (b, 1, 1)).astype(f32)
    amp = (rng.uniform(5, 20, (b, 1, 1)) * (rng.random((b, 1, 1)) < 0.2)).astype(f32)
    stripes = np.flatnonzero(amp[:, 0, 0])
    out[stripes] += amp[stripes] * np.sin(freq[stripes] * (xx * np.cos(ang2[stripes]) + yy * np.sin(ang2[stripes])))
    return out


def _shading(pts: Mapping[str, np.ndarray], a: Mapping[str, np.ndarray], size: int) -> np.ndarray:
    """Lambert shading of an ellipsoidal head under a directional light: (B, H, W).

    Shading is smooth, so it is evaluated on a 4x coarser grid and upsampled bilinearly (for speed).
    """
    k = max(8, size // 4)
    g = np.linspace(0, size - 1, k, dtype=np.float32)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    c = pts["head_centre"][:, 0]
    dx, dy = xx[None] - c[:, 0, None, None], yy[None] - c[:, 1, None, None]
    r = pts["roll_rot"][:, :, :, None, None]  # back into the un-rolled head frame: R^T d
    ux, uy = r[:, 0, 0] * dx + r[:, 1, 0] * dy, r[:, 0, 1] * dx + r[:, 1, 1] * dy
    sc = pts["scale"][:, None, None]
    nx, ny = ux / (1.15 * a["W"][:, None, None] * sc), uy / (1.6 * sc)
    r2 = nx ** 2 + ny ** 2
    f = np.where(r2 > 0.96, np.sqrt(0.96 / np.maximum(r2, 1e-6)), 1.0)
    nx, ny = nx * f, ny * f
    nz = np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0, 1))
    az, el = a["light_az"][:, None, None], a["light_el"][:, None, None]
    lam = np.clip(nx * np.sin(az) * np.cos(el) - ny * np.sin(el) + nz * np.cos(az) * np.cos(el), 0, 1)
    amb = a["ambient"][:, None, None]
    m = _upsample_matrix(k, size)
    return m @ (amb + (1 - amb) * 1.15 * lam).astype(np.float32) @ m.T


def _blur(img: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur with a per-image sigma (vectorised over the batch)."""
    r = 3
    k = np.exp(-0.5 * (np.arange(-r, r + 1)[None] / np.maximum(sigma[:, None], 1e-3)) ** 2)
    k = (k / k.sum(1, keepdims=True)).astype(np.float32)
    n = img.shape[-1]
    p = np.pad(img, ((0, 0), (0, 0), (r, r)), mode="edge")
    img = sum(k[:, j, None, None] * p[:, :, j:j + n] for j in range(2 * r + 1))
    p = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[:, j, None, None] * p[:, j:j + n, :] for j in range(2 * r + 1))


def _generate_chunk(seed_seq: np.random.SeedSequence, b: int, image_size: int,
                    ss: int) -> dict[str, np.ndarray]:
    """Generates one chunk of `b` faces from its own seed sequence (so workers do not change results)."""
    rng = np.random.default_rng(seed_seq)
    a = _sample_attributes(rng, b, image_size)
    pts, lm = _scene(a, image_size)
    alb, alpha = np.empty((2, b, image_size, image_size), np.float32)
    # Pillow puts pixel centres on integers, so pixel x maps to (x + 0.5) * ss - 0.5 when supersampled.
    big = {k: (v + 0.5) * ss - 0.5 if v.ndim == 3 else v for k, v in pts.items()}
    big["scale"] = pts["scale"] * ss
    for i in range(b):
        alb[i], alpha[i] = _draw_face(i, big, a, image_size, ss)
    alpha /= 255.0
    bg = _background(rng, b, image_size)
    img = bg * (1 - alpha) + alb * _shading(pts, a, image_size) * alpha
    img = img * rng.uniform(0.8, 1.15, (b, 1, 1)).astype(np.float32)
    img = _blur(img, rng.uniform(0.05, 0.9, b).astype(np.float32) * image_size / 96.0)
    img = img + rng.normal(0, 1, img.shape).astype(np.float32) * rng.uniform(1.5, 7, (b, 1, 1)).astype(np.float32)
    lo, hi = lm.min(1), lm.max(1)
    lm5 = np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], 1)
    return {
        "image": np.clip(np.rint(img), 0, 255).astype(np.uint8),
        "box": np.concatenate([lo, hi - lo], 1).astype(np.float32),
        "landmarks68": lm.astype(np.float32),
        "landmarks5": lm5.astype(np.float32),
        "pose": a["pose"], "gender": a["gender"], "smile": a["smile"], "glasses": a["glasses"],
        "yaw": a["yaw"].astype(np.float32), "pitch": a["pitch"], "roll": a["roll"],
        "occluded": a["occluded"],
    }


def _chunk_job(args: tuple[int, int, int, int, int]) -> dict[str, np.ndarray]:
    seed, index, b, image_size, ss = args
    return _generate_chunk(np.random.SeedSequence(seed, spawn_key=(index,)), b, image_size, ss)


# ----------------------------------------------------------------------------------------------- API


def generate(n: int, seed: int, image_size: int = 96, num_workers: int | None = None,
             chunk_size: int = CHUNK_SIZE, supersample: int = 4) -> dict[str, np.ndarray]:
    """Generates `n` synthetic faces; same (n, seed, image_size, chunk_size, supersample) -> same arrays.

    Returns numpy arrays: image (n, H, W) uint8; box (n, 4) float32 left, top, width, height (tight box of
    the 68 points); landmarks68 (n, 68, 2) and landmarks5 (n, 5, 2) float32 pixel (x, y); pose (n,) int32
    0..4; gender, smile, glasses, occluded (n,) int32 0/1; yaw, pitch, roll (n,) float32 degrees.
    Chunk c is drawn from SeedSequence(seed, spawn_key=(c,)), so the worker count never changes the result.
    """
    if n < 0 or seed < 0:
        raise ValueError(f"n and seed must be non-negative, got n={n}, seed={seed}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if chunk_size < 1 or supersample < 1:
        raise ValueError(f"chunk_size and supersample must be positive, got {chunk_size}, {supersample}")
    jobs = [(seed, c, min(chunk_size, n - c * chunk_size), image_size, supersample)
            for c in range(-(-n // chunk_size))]
    workers = min(os.cpu_count() or 1, len(jobs)) if num_workers is None else num_workers
    if workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {workers}")
    if workers == 1 or len(jobs) <= 1:
        parts = [_chunk_job(j) for j in jobs]
    else:
        # fork is unsafe once JAX's threads exist; spawn then needs the caller's `if __name__ == "__main__"`.
        ctx = multiprocessing.get_context("spawn" if "jax" in sys.modules else "fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = list(pool.map(_chunk_job, jobs))
    if not parts:
        empty = _chunk_job((seed, 0, 1, image_size, supersample))
        return {k: v[:0] for k, v in empty.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in ARRAY_KEYS}


def split_seed(base_seed: int, split: str) -> int:
    """Seed of a split: 3 * base_seed + {train: 0, validation: 1, test: 2}.

    The map (base_seed, split) -> seed is one-to-one, so splits never share a seed, for any base seed.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if base_seed < 0:
        raise ValueError(f"base_seed must be non-negative, got {base_seed}")
    return 3 * int(base_seed) + SPLITS.index(split)


def cache_path(seed: int, n: int, image_size: int, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where a generated set is cached: keyed by seed, n, image size and GENERATOR_VERSION."""
    root = cache_dir or os.environ.get("TCDCN_CACHE_DIR") or DEFAULT_CACHE_DIR
    name = f"synthetic-v{GENERATOR_VERSION}-seed{seed}-n{n}-size{image_size}.npz"
    return pathlib.Path(root).expanduser() / name


def load_split(split: str, n: int, base_seed: int = 0, image_size: int = 96,
               cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The `n`-face synthetic split, read from the cache or generated and cached (atomic rename)."""
    seed = split_seed(base_seed, split)
    path = cache_path(seed, n, image_size, cache_dir)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in ARRAY_KEYS}
    data = generate(n, seed, image_size=image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return data


# ----------------------------------------------------------------------------------------------- sheet


def _title(d: Mapping[str, np.ndarray], i: int) -> str:
    """Label line like '+30 M S G' (pose degrees, M/F, S smiling, G glasses, O occluded)."""
    parts = [f"{int(POSE_YAW_DEG[d['pose'][i]]):+d}", "M" if d["gender"][i] else "F"]
    parts += [t for t, k in (("S", "smile"), ("G", "glasses"), ("O", "occluded")) if d[k][i]]
    return " ".join(parts)


def save_sheet(data: Mapping[str, np.ndarray], out: str | os.PathLike, cols: int = 6) -> None:
    """Draws a grid of faces with the 68 points, the 5 points, the box and the labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(data["image"])
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(data["image"][i], cmap="gray", vmin=0, vmax=255)
        lm, l5, (x, y, w, h) = data["landmarks68"][i], data["landmarks5"][i], data["box"][i]
        ax.scatter(lm[:, 0], lm[:, 1], s=1.5, c="cyan", linewidths=0)
        ax.scatter(l5[:, 0], l5[:, 1], s=5, c="red", linewidths=0)
        ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), w + 1, h + 1, fill=False, ec="yellow", lw=0.6))
        ax.set_title(_title(data, i), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: python -m tcdcn_jax.data.synthetic --out sheet.png [--n 24 --seed 0 --image_size 96]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG path of the sample sheet")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=96)
    args = parser.parse_args(argv)
    save_sheet(generate(args.n, args.seed, image_size=args.image_size, num_workers=1), args.out)


if __name__ == "__main__":
    main()

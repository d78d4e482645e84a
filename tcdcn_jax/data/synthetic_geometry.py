"""Face geometry of the synthetic world: attribute sampling, the 3D face, pose and the 68/5 landmarks.

Geometry lives in "face units" (half the face width ~ 1, origin between the eyes, x right, y down, z toward
the camera). Each horizontal cross-section of the face at height y is the front half of a superellipse
with half-width A(y) (the jaw outline) whose back moves forward toward the chin, so the chin sits in front
and the jaw angle behind. Heads are rotated (yaw about y, pitch about x) and projected orthographically;
far-side jaw points follow the visible cheek outline. Rolling, scaling and placing in the image belong to
synthetic_render, which also draws everything else.

Sign conventions: yaw > 0 turns the nose toward the image-right (pose classes 3, 4); pitch > 0 lifts the
nose; roll > 0 rotates the face clockwise on screen (image y points down).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tcdcn_jax import tasks

POSE_YAW_DEG = np.array(tasks.POSE_YAW_DEG, np.float32)  # each pose class's yaw, before the jitter
POSE_PRIOR = np.array([0.12, 0.2, 0.36, 0.2, 0.12])
YAW_JITTER_DEG = 12.0

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


def sample_attributes(rng: np.random.Generator, b: int, image_size: int) -> dict[str, np.ndarray]:
    """Draws labels, pose, shape, expression and appearance for `b` faces (all vectorised).

    The draws happen in a fixed order (labels, shape, expression, hair, appearance): the generated
    arrays, and so the dataset cache, depend on it.
    """
    a: dict[str, np.ndarray] = {}
    male = _sample_labels(rng, b, a)
    _sample_shape(rng, b, male, a)
    _sample_expression(rng, b, a)
    _sample_hair_and_glasses(rng, b, male, a)
    _sample_appearance(rng, b, male, image_size, a)
    return a


def _sample_labels(rng: np.random.Generator, b: int, a: dict[str, np.ndarray]) -> np.ndarray:
    """The labels and the head pose; returns the boolean `male` the other draws depend on."""
    a["pose"] = rng.choice(5, size=b, p=POSE_PRIOR).astype(np.int32)
    a["yaw"] = POSE_YAW_DEG[a["pose"]] + _u(rng, -YAW_JITTER_DEG, YAW_JITTER_DEG, b)
    a["pitch"] = np.clip(rng.normal(0, 7, b), -20, 20).astype(np.float32)
    a["roll"] = np.clip(rng.normal(0, 7, b), -20, 20).astype(np.float32)
    male = rng.random(b) < 0.5
    a["gender"] = male.astype(np.int32)
    a["smile"] = (rng.random(b) < 0.45).astype(np.int32)
    a["glasses"] = (rng.random(b) < np.where(male, 0.29, 0.21)).astype(np.int32)
    a["occluded"] = (rng.random(b) < 0.15).astype(np.int32)
    return male


def _sample_shape(rng: np.random.Generator, b: int, male: np.ndarray,
                  a: dict[str, np.ndarray]) -> None:
    """Face shape in face units, and the landmark annotation noise."""
    m = male.astype(np.float32)
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


def _sample_expression(rng: np.random.Generator, b: int, a: dict[str, np.ndarray]) -> None:
    """A smile lifts and widens the corners and often parts the lips; others sometimes talk."""
    smile = a["smile"].astype(np.float32)
    a["smile_s"] = smile * _u(rng, 0.5, 1.0, b)
    talk = (rng.random(b) < 0.15) * _u(rng, 0.0, 0.08, b)
    opened = (rng.random(b) < 0.7) * _u(rng, 0.04, 0.28, b) * a["smile_s"]
    a["open"] = np.where(smile > 0, opened, talk).astype(np.float32)
    a["corner_dy"] = rng.normal(0, 0.015, b).astype(np.float32)


def _sample_hair_and_glasses(rng: np.random.Generator, b: int, male: np.ndarray,
                             a: dict[str, np.ndarray]) -> None:
    """Hair style (it depends on gender), beard, and the glasses' frames."""
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


def _sample_appearance(rng: np.random.Generator, b: int, male: np.ndarray, image_size: int,
                       a: dict[str, np.ndarray]) -> None:
    """Albedos (0..255), lighting, face size and position in the image, the occluder."""
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


# ----------------------------------------------------------------------------------------------- geometry


def half_width(y: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """A(y): half-width of the face cross-section at height y (the frontal face outline)."""
    w, bb, n, kl = (a[k][:, None] for k in ("W", "b", "n", "klow"))
    t = np.clip(y / bb, 0.0, 1.0)
    below = w * np.clip(1.0 - t ** n, 0.0, 1.0) ** (1.0 / n) * (1.0 + kl * t)
    above = w * np.sqrt(np.clip(1.0 - 0.09 * y ** 2, 0.3, 1.0))
    return np.where(y < 0, above, below).astype(np.float32)


def surface(u: np.ndarray, y: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """3D point at signed section coordinate u in [-1, 1] and height y: (..., 3)."""
    half = half_width(y, a)
    d = a["D"][:, None]
    zb = d * np.clip(y / a["b"][:, None], 0.0, 1.0) ** 3  # the jaw comes forward toward the chin
    au = np.clip(np.abs(u), 0.0, 1.0)
    z = zb + (d - zb) * (1.0 - au ** _SECTION_P) ** (1.0 / _SECTION_P)
    return np.stack([u * half, y, z], -1)


def silhouette_u(y: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """Signed u of the far-side outline at height y: the section point that projects furthest out."""
    yaw = np.deg2rad(a["yaw"])[:, None, None]
    half = half_width(y, a)[..., None]
    d = a["D"][:, None, None]
    zb = d * np.clip(y / a["b"][:, None], 0.0, 1.0)[..., None] ** 3
    g = _U_GRID
    z = zb + (d - zb) * (1.0 - g ** _SECTION_P) ** (1.0 / _SECTION_P)
    extent = g * half * np.cos(yaw) + z * np.abs(np.sin(yaw))
    return (_U_GRID[np.argmax(extent, -1)] * np.sign(a["yaw"])[:, None]).astype(np.float32)


def outline_point(side: float, y: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    """Visible face outline on `side` (-1 image-left, +1 image-right) at heights y: near edge or silhouette."""
    far = np.sign(a["yaw"])[:, None] == side
    u = np.where(far, silhouette_u(y, a), side)
    return surface(u, y, a)


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
    # Jaw from the superellipse (consistent with half_width).
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


def project(rot: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """Orthographic projection of head-frame points (B, K, 3) after rotation rot (B, 3, 3): (B, K, 2)."""
    return np.einsum("bij,bkj->bki", rot, p3)[..., :2]


def face_landmarks(a: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 68 points: (rotation (B, 3, 3), frontal (B, 68, 2), 3D (B, 68, 3), projected (B, 68, 2)), face units."""
    rot = _rotation(a)
    f2 = _frontal_landmarks(a)
    lm3 = surface(f2[..., 0] / np.maximum(half_width(f2[..., 1], a), 1e-4), f2[..., 1], a)
    nose = (np.arange(68) >= 27) & (np.arange(68) < 36)
    lm3[..., 2] += _DZ * np.where(nose, a["nose_prom"][:, None], 1.0)
    # Far-side jaw points move onto the visible outline (300-W convention); near side stays on the jaw.
    jaw_side = np.sign(f2[:, :17, 0])
    far = jaw_side == np.sign(a["yaw"])[:, None]
    u_sil = silhouette_u(f2[:, :17, 1], a)
    jaw_u = np.where(far, u_sil, jaw_side)
    lm3[:, :17] = surface(jaw_u, f2[:, :17, 1], a)
    lm = project(rot, lm3)
    return rot, f2, lm3, lm


def landmarks5(lm_Bx68x2: np.ndarray) -> np.ndarray:
    """The 5 MTFL points from the 68: eye centres (mean of 36-41, 42-47), nose tip 30, mouth corners 48, 54."""
    lm = lm_Bx68x2
    return np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], 1)

"""Rendering of the synthetic world: rasterisation, background, shading, blur.

The scene's point sets come from synthetic_scene. Faces are drawn with Pillow at `ss` times the
resolution into an albedo image and a foreground mask, box-downsampled, then lit, composited over a
textured background, blurred and noised with vectorised numpy.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw

from tcdcn_jax.data.synthetic_scene import Attrs, scene


class _Canvas:
    """Face i's point sets drawn at ss x resolution: an albedo image and a foreground mask."""

    def __init__(self, pts: Mapping[str, np.ndarray], i: int, size: int, ss: int):
        big = size * ss
        self.alb = Image.new("L", (big, big), 0)
        self.msk = Image.new("L", (big, big), 0)
        self.da, self.dm = ImageDraw.Draw(self.alb), ImageDraw.Draw(self.msk)
        self.pts, self.i, self.ss = pts, i, ss
        self.scale = float(pts["scale"][i])  # pts are already in supersampled pixels

    def xy(self, name: str, idx: Any = slice(None)) -> list[float]:
        return self.pts[name][self.i][idx].ravel().tolist()

    def poly(self, name: str, v: float, idx: Any = slice(None), fg: bool = False) -> None:
        p = self.xy(name, idx)
        self.da.polygon(p, fill=int(min(max(v, 0), 255)))
        if fg:
            self.dm.polygon(p, fill=255)

    def line(self, name: str, v: float, width_units: float, idx: Any = slice(None),
             fg: bool = False) -> None:
        w = max(1, int(round(width_units * self.scale)))
        p = self.xy(name, idx)
        self.da.line(p, fill=int(min(max(v, 0), 255)), width=w, joint="curve")
        if fg:
            self.dm.line(p, fill=255, width=w, joint="curve")

    def reduced(self) -> tuple[np.ndarray, np.ndarray]:
        """(albedo, alpha) as (size, size) uint8 after box filtering."""
        return np.asarray(self.alb.reduce(self.ss)), np.asarray(self.msk.reduce(self.ss))


def _draw_face(i: int, pts: Mapping[str, np.ndarray], a: Attrs, size: int,
               ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterises face i at ss x resolution, back to front: (albedo, alpha) as (size, size) uint8
    after box filtering."""
    canvas = _Canvas(pts, i, size, ss)
    _draw_head(canvas, i, a)
    _draw_eyes(canvas, i, a)
    _draw_nose_and_mouth(canvas, i, a)
    _draw_hair_glasses_occluder(canvas, i, a)
    return canvas.reduced()


def _draw_head(c: _Canvas, i: int, a: Attrs) -> None:
    """Shoulders, long hair behind, neck, skull, ears, the face's skin, beard and brows."""
    skin, hair = float(a["skin"][i]), float(a["hair"][i])
    yaw = float(a["yaw"][i])
    c.poly("shoulders", a["cloth"][i], fg=True)
    if a["long_hair"][i]:
        c.poly("hair_curtain", hair * 0.85, fg=True)
        c.poly("hair_top", hair * 0.85, fg=True)
    c.poly("neck", skin * 0.72, fg=True)
    ears = [] if a["long_hair"][i] else [e for e, s in (("ear_l", -1), ("ear_r", 1)) if s * yaw < 20]
    c.poly("skull", skin if a["bald"][i] else hair, fg=True)
    for e in ears:
        c.poly(e, skin * 0.9, fg=True)
    c.poly("outline", skin, fg=True)
    if a["beard"][i]:
        c.poly("beard", a["beard_v"][i])
        c.poly("moustache", a["beard_v"][i])
    brow = float(a["brow"][i])
    c.poly("brow_l", brow)
    c.poly("brow_r", brow)


def _draw_eyes(c: _Canvas, i: int, a: Attrs) -> None:
    lid = min(float(a["skin"][i]) * 0.35, 60.0)
    for s, lo in (("l", 36), ("r", 42)):
        c.poly("draw", a["eye_white"][i], _EYE[lo])
        c.poly(f"iris_{s}", a["iris"][i])
        c.poly(f"pupil_{s}", a["iris"][i] * 0.4)
        c.line("draw", lid, 0.035, _EYE_LOOP[lo])
        c.line("draw", lid * 0.7, 0.06, _EYE_UPPER[lo])


def _draw_nose_and_mouth(c: _Canvas, i: int, a: Attrs) -> None:
    skin, yaw = float(a["skin"][i]), float(a["yaw"][i])
    # Nose: the side turned away first, then the side facing the camera (it hides the far eye's corner).
    light_x = np.sin(float(a["light_az"][i]))
    order = ("nose_r", "nose_l") if yaw >= 0 else ("nose_l", "nose_r")
    for name in order:
        lit = (name == "nose_r") == (light_x > 0)
        c.poly(name, skin * (1.02 if lit else 0.74), fg=True)
    c.line("draw", skin * 0.55, 0.03, _NOSE_BASE)
    c.poly("nostril_l", skin * 0.3)
    c.poly("nostril_r", skin * 0.3)
    lips = float(a["lips"][i])
    c.poly("draw", lips, _UPPER_LIP)
    c.poly("draw", lips * 1.12, _LOWER_LIP)
    if a["open"][i] > 0.02:
        c.poly("draw", 25.0, _INNER_LIP)
        if a["smile"][i]:
            c.da.polygon(c.xy("draw", _SEAM) + _teeth_low(c.pts["draw"][i]),
                         fill=int(min(225, skin * 1.2)))
    c.line("draw", lips * 0.45, 0.03, _SEAM)


def _draw_hair_glasses_occluder(c: _Canvas, i: int, a: Attrs) -> None:
    """What lies in front of the face: a lock or fringe of hair, glasses, an occluder."""
    hair, yaw = float(a["hair"][i]), float(a["yaw"][i])
    if a["lock_side"][i] != 0:
        c.poly("lock_l" if a["lock_side"][i] < 0 else "lock_r", hair, fg=True)
    if a["fringe"][i] and not a["bald"][i]:
        c.poly("fringe", hair, fg=True)
    if a["glasses"][i]:
        fv, fw = float(a["frame_v"][i]), float(a["frame_w"][i])
        for r in ("rim_l", "rim_r"):
            if a["sunglasses"][i]:
                c.poly(r, 30.0, fg=True)
            c.line(r, fv, fw, _RIM_LOOP, fg=True)
        c.line("bridge", fv, fw, fg=True)
        if abs(yaw) > 15:
            c.line("arm_l" if yaw > 0 else "arm_r", fv, fw, fg=True)
    if a["occluded"][i]:
        c.poly("occluder", a["occ_v"][i], fg=True)


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


def render_faces(a: Attrs, rng: np.random.Generator, image_size: int,
                 ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws the sampled faces: (images (B, H, W) uint8, landmarks68 (B, 68, 2) float32 pixel (x, y)).

    `rng` then draws background, gain, blur and noise, in that order (the order is part of the output).
    """
    b = a["W"].shape[0]
    pts, lm = scene(a, image_size)
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
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lm

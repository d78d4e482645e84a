"""Rendering of the synthetic world: the scene's drawn point sets, rasterisation, background, shading, blur.

Every drawn shape (skin outline, hair, ears, irises, nose, beard, glasses, occluder) is built around the
landmarks from synthetic_geometry, then the whole scene is rolled, scaled and placed in the image. Faces are
drawn with Pillow at `ss` times the resolution into an albedo image and a foreground mask, box-downsampled,
then lit, composited over a textured background, blurred and noised with vectorised numpy.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw

from tcdcn_jax.data.synthetic_geometry import (face_landmarks, half_width, outline_point, project,
                                               silhouette_u, surface)


# ----------------------------------------------------------------------------------------------- scene


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
    rot, f2, lm3, lm = face_landmarks(a)
    proj = lambda p3: project(rot, p3)  # noqa: E731

    pts: dict[str, np.ndarray] = {}
    # What is drawn: far-side features clamped to the cheek outline (the landmarks themselves are not).
    sil3 = surface(silhouette_u(f2[..., 1], a), f2[..., 1], a)
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
    hl_sil = np.abs(silhouette_u(hl_y, a))
    far_hl = np.sign(hl_u) == sgn
    hl_u = np.where(far_hl, np.sign(hl_u) * np.minimum(np.abs(hl_u), hl_sil), hl_u)
    outline3 = np.concatenate([
        lm3[:, :17], outline_point(1.0, side_y, a), surface(hl_u, hl_y, a),
        outline_point(-1.0, side_y[:, ::-1], a)], 1)
    pts["outline"] = proj(outline3)

    w = a["W"]
    pts["skull"] = _projected_ellipsoid(np.stack([0 * w, -0.6 + 0 * w, -0.25 + 0 * w], -1),
                                        np.stack([1.02 * w, 1.12 + 0 * w, 1.2 + 0 * w], -1), rot, 32)
    for name, s in (("ear_l", -1.0), ("ear_r", 1.0)):
        c = np.stack([s * (half_width(np.full((b, 1), 0.15, np.float32), a)[:, 0] + 0.02),
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
        base3 = surface(bx / half_width(by, a), by, a)
        pts[name] = np.concatenate([lm[:, 27:30], lm[:, wing], proj(base3)[:, ::-1]], 1)
    for name, lo, hi in (("nostril_l", 31, 32), ("nostril_r", 34, 35)):
        c3 = 0.5 * (lm3[:, lo] + lm3[:, hi]) + np.array([0, 0.01, -0.02], np.float32)
        pts[name] = proj(_ring(c3, 0.045 * a["nose_w"], 0.022 * np.ones(b, np.float32), 8))
    inner_xy = np.array([(0.72, 0.45), (0.5, 0.98), (0.28, 1.22), (0.0, 1.28), (-0.28, 1.22),
                         (-0.5, 0.98), (-0.72, 0.45)], np.float32)
    iy = np.broadcast_to(inner_xy[:, 1], (b, 7)) + a["mouth_dy"][:, None]
    iu = np.clip(inner_xy[:, 0] * a["mouth_w"][:, None] * 1.1 / np.maximum(half_width(iy, a), 1e-4), -0.95, 0.95)
    iu = np.where(np.sign(iu) == sgn, np.sign(iu) * np.minimum(np.abs(iu), np.abs(silhouette_u(iy, a))), iu)
    pts["beard"] = np.concatenate([lm[:, 2:15], proj(surface(iu, iy, a))], 1)
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


def render_faces(a: Mapping[str, np.ndarray], rng: np.random.Generator, image_size: int,
                 ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws the sampled faces: (images (B, H, W) uint8, landmarks68 (B, 68, 2) float32 pixel (x, y)).

    `rng` then draws background, gain, blur and noise, in that order (the order is part of the output).
    """
    b = a["W"].shape[0]
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
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lm

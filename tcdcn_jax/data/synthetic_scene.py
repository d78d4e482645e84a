"""The synthetic world's scene: every drawn shape as point sets, placed in the image.

Every drawn shape (skin outline, hair, ears, irises, nose, beard, glasses, occluder) is built around the
landmarks from synthetic_geometry; then the whole scene is rolled, scaled and placed in the image
(`scene`). synthetic_render turns the point sets into pixels.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from tcdcn_jax.data.synthetic_geometry import (face_landmarks, half_width, outline_point, project,
                                               silhouette_u, surface)

Projection = Callable[[np.ndarray], np.ndarray]  # face-unit 3D points -> 2D
Attrs = Mapping[str, np.ndarray]  # sample_attributes' arrays


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


def scene(a: Attrs, image_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All point sets in pixels: ({name: (B, K, 2)}, landmarks68 (B, 68, 2))."""
    rot, f2, lm3, lm = face_landmarks(a)
    proj = lambda p3: project(rot, p3)  # noqa: E731
    sgn = np.sign(a["yaw"])[:, None]  # the far side of the face is -sgn
    pts = {"draw": _drawn_landmarks(a, f2, lm, proj, sgn)}
    pts.update(_head_and_body(a, rot, lm3, proj, sgn))
    pts.update(_hair(a, pts))
    pts.update(_brows_eyes_nose(a, f2, lm, lm3, pts["draw"], proj))
    pts.update(_beard(a, lm, sgn, proj))
    pts.update(_glasses(a, lm3, proj))
    pts.update(_occluder(a, lm, proj))
    return _place(pts, lm, a, image_size)


def _drawn_landmarks(a: Attrs, f2: np.ndarray, lm: np.ndarray, proj: Projection,
                     sgn: np.ndarray) -> np.ndarray:
    """The points drawn: far-side features clamped to the cheek outline (the landmarks are not)."""
    sil3 = surface(silhouette_u(f2[..., 1], a), f2[..., 1], a)
    sil_x = proj(sil3)[..., 0]
    draw = lm.copy()
    clamp = (sgn != 0) & (sgn * draw[..., 0] > sgn * sil_x - 0.02)
    draw[..., 0] = np.where(clamp, sil_x - sgn * 0.02, draw[..., 0])
    draw[:, :17] = lm[:, :17]
    return draw


def _head_and_body(a: Attrs, rot: np.ndarray, lm3: np.ndarray, proj: Projection,
                   sgn: np.ndarray) -> dict[str, np.ndarray]:
    """The face's skin outline (jaw, sides up to the temples, hairline), skull, ears, neck and
    shoulders."""
    b, w = a["W"].shape[0], a["W"]
    pts = {}
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
    return pts


def _hair(a: Attrs, pts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Long hair behind the head and neck (the skull outline enlarged plus a curtain down to
    hair_len), a front lock over either side of the face (it can hide jaw points 0.. or ..16) and a
    fringe, all from the skull and outline point sets."""
    w = a["W"]
    sk = pts["skull"]
    skc = sk.mean(1, keepdims=True)
    hx0, hx1 = sk[..., 0].min(1), sk[..., 0].max(1)
    cy = skc[:, 0, 1]
    end = cy + 1.0 + a["hair_len"]
    out = {"hair_top": skc + 1.1 * (sk - skc)}
    out["hair_curtain"] = np.stack([np.stack([hx0 - 0.08, cy], -1), np.stack([hx0 - 0.25, end], -1),
                                    np.stack([hx1 + 0.25, end], -1), np.stack([hx1 + 0.08, cy], -1)], 1)
    ol = pts["outline"]
    left_side = np.concatenate([ol[:, [31, 30, 29]], ol[:, 0:9]], 1)  # temple down to the chin
    right_side = np.concatenate([ol[:, [17, 18, 19]], ol[:, 16:7:-1]], 1)
    out["lock_l"] = _lock(left_side, -1.0, a)
    out["lock_r"] = _lock(right_side, 1.0, a)
    hl2 = ol[:, 20:31]
    out["fringe"] = np.concatenate([hl2 + np.array([0, -0.15], np.float32),
                                    hl2[:, ::-1] + np.stack([0 * w, a["fringe_drop"]], -1)[:, None]], 1)
    return out


def _brows_eyes_nose(a: Attrs, f2: np.ndarray, lm: np.ndarray, lm3: np.ndarray, draw: np.ndarray,
                     proj: Projection) -> dict[str, np.ndarray]:
    """Brows as tapered bands, irises and pupils clipped to the eye opening, nose sides and
    nostrils."""
    b = a["W"].shape[0]
    pts = {}
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
    return pts


def _beard(a: Attrs, lm: np.ndarray, sgn: np.ndarray, proj: Projection) -> dict[str, np.ndarray]:
    """Beard (jaw down from the mouth's sides, clipped to the visible cheek) and moustache."""
    b = a["W"].shape[0]
    inner_xy = np.array([(0.72, 0.45), (0.5, 0.98), (0.28, 1.22), (0.0, 1.28), (-0.28, 1.22),
                         (-0.5, 0.98), (-0.72, 0.45)], np.float32)
    iy = np.broadcast_to(inner_xy[:, 1], (b, 7)) + a["mouth_dy"][:, None]
    iu = np.clip(inner_xy[:, 0] * a["mouth_w"][:, None] * 1.1 / np.maximum(half_width(iy, a), 1e-4), -0.95, 0.95)
    iu = np.where(np.sign(iu) == sgn, np.sign(iu) * np.minimum(np.abs(iu), np.abs(silhouette_u(iy, a))), iu)
    return {"beard": np.concatenate([lm[:, 2:15], proj(surface(iu, iy, a))], 1),
            "moustache": np.concatenate([lm[:, 31:36] + np.array([0, 0.04], np.float32),
                                         lm[:, [54, 53, 52, 51, 50, 49, 48]]
                                         + np.array([0, -0.01], np.float32)], 1)}


def _glasses(a: Attrs, lm3: np.ndarray, proj: Projection) -> dict[str, np.ndarray]:
    """Rims in a plane in front of the eyes, a bridge over the nose, the arms."""
    w = a["W"]
    zg = a["D"] + 0.12
    pts, rims = {}, []
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
    return pts


def _occluder(a: Attrs, lm: np.ndarray, proj: Projection) -> dict[str, np.ndarray]:
    """A random occluder ("hand"): an ellipse near a random face part; and the head's centre."""
    b, w = a["W"].shape[0], a["W"]
    o = a["occ"]
    anchors = np.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], 0.5 * (lm[:, 48] + lm[:, 54]),
                        lm[:, 4], lm[:, 12]], 1)
    pick = np.minimum((o[:, 0] * 6).astype(int), 5)
    oc = anchors[np.arange(b), pick] + (o[:, 1:3] - 0.5) * 0.4
    ang = o[:, 3] * np.pi
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False, dtype=np.float32)[None]
    rx, ry = (0.35 + 0.45 * o[:, 4])[:, None], (0.25 + 0.3 * o[:, 5])[:, None]
    ex, ey = rx * np.cos(t), ry * np.sin(t)
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    return {"occluder": oc[:, None] + np.stack([ex * cos - ey * sin, ex * sin + ey * cos], -1),
            "head_centre": proj(np.stack([0 * w, 0.25 + 0 * w, -0.1 + 0 * w], -1)[:, None])}


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

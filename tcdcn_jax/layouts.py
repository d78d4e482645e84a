"""Landmark layouts (5-point MTFL, 68-point iBUG/300-W, 98-point WFLW) in one place.

Every module that needs eye centres, the 5-point subset or a horizontal flip asks a `Layout`, so
the inter-ocular normaliser and the mirror pairs are defined exactly once.

"left"/"right" mean image-left/image-right (the subject's right eye is on the image-left).
The eye centre is the mean of the layout's eye points; this is THE eye centre used for the
inter-ocular distance everywhere in the project.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
    """A landmark layout.

    flip_perm[i] is the index point i takes after mirroring the face left-right (in 68 points the
    image-left outer eye corner 36 becomes the image-right outer eye corner 45: flip_perm[36] = 45);
    it is an involution. five_point lists, for the 5 MTFL points in order, the points whose mean
    gives that point (five_point[0] == left_eye, five_point[1] == right_eye).
    """

    name: str
    num_points: int
    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    flip_perm: tuple[int, ...]
    groups: dict[str, tuple[int, ...]]
    five_point: tuple[tuple[int, ...], ...]
    point_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        k, name = self.num_points, self.name
        perm = np.asarray(self.flip_perm)
        if sorted(self.flip_perm) != list(range(k)):
            raise ValueError(f"{name}: flip_perm must be a permutation of 0..{k - 1}")
        if not np.array_equal(perm[perm], np.arange(k)):
            raise ValueError(f"{name}: flip_perm must be an involution (mirror twice = identity)")
        index_sets = [self.left_eye, self.right_eye, *self.groups.values(), *self.five_point]
        if any(not idx or min(idx) < 0 or max(idx) >= k for idx in index_sets):
            raise ValueError(f"{name}: eye/group/five_point indices: non-empty, in 0..{k - 1}")
        if len(self.five_point) != 5 or self.five_point[:2] != (self.left_eye, self.right_eye):
            raise ValueError(f"{name}: five_point must have 5 entries, starting with the two eyes")
        if self.point_names is not None and len(self.point_names) != k:
            raise ValueError(f"{name}: {len(self.point_names)} point_names, expected {k}")

    def __hash__(self) -> int:
        # The dict field breaks the generated hash; a hash lets a Layout be a jit static argument.
        return hash((self.name, self.num_points, self.flip_perm))


def _mirror_pairs(num_points: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    """flip_perm from left<->right pairs; unnamed points are on the midline and map to self."""
    perm = list(range(num_points))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


def _r(a: int, b: int) -> tuple[int, ...]:
    """Inclusive index range a..b."""
    return tuple(range(a, b + 1))


FIVE = Layout(
    name="mtfl5",
    num_points=5,
    left_eye=(0,),
    right_eye=(1,),
    flip_perm=(1, 0, 2, 4, 3),
    groups={"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)},
    five_point=((0,), (1,), (2,), (3,), (4,)),
    point_names=("left_eye", "right_eye", "nose", "left_mouth", "right_mouth"),
)

# iBUG 68 midline points: 8 (chin), 27-30 (nose bridge), 33, 51, 57, 62, 66.
IBUG68 = Layout(
    name="ibug68",
    num_points=68,
    left_eye=_r(36, 41),
    right_eye=_r(42, 47),
    flip_perm=_mirror_pairs(68, [
        *[(i, 16 - i) for i in range(8)],                              # jaw
        *[(17 + i, 26 - i) for i in range(5)],                         # brows
        (31, 35), (32, 34),                                            # nostrils
        (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),    # eyes
        (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),              # outer lips
        (60, 64), (61, 63), (65, 67),                                  # inner lips
    ]),
    groups={"jaw": _r(0, 16), "brows": _r(17, 26), "nose": _r(27, 35), "eyes": _r(36, 47),
            "mouth": _r(48, 67)},
    five_point=(_r(36, 41), _r(42, 47), (30,), (48,), (54,)),
)

# WFLW: the eye centre is the mean of the 8 eye-contour points (60-67, 68-75), not the pupils
# 96/97, to match the 68-point definition. Published WFLW NMEs usually normalise by the outer eye
# corners (60, 72) instead, which gives a larger distance: compare with such numbers with care.
# Midline points: 16 (chin), 51-54 (nose bridge), 57, 79, 85, 90, 94.
WFLW98 = Layout(
    name="wflw98",
    num_points=98,
    left_eye=_r(60, 67),
    right_eye=_r(68, 75),
    flip_perm=_mirror_pairs(98, [
        *[(i, 32 - i) for i in range(16)],                             # jaw
        (33, 46), (34, 45), (35, 44), (36, 43), (37, 42),              # brows, upper contour
        (38, 50), (39, 49), (40, 48), (41, 47),                        # brows, lower contour
        (55, 59), (56, 58),                                            # nostrils
        (60, 72), (61, 71), (62, 70), (63, 69),                        # eyes, corners and top
        (64, 68), (65, 75), (66, 74), (67, 73),                        # eyes, corners and bottom
        (76, 82), (77, 81), (78, 80), (83, 87), (84, 86),              # outer lips
        (88, 92), (89, 91), (93, 95),                                  # inner lips
        (96, 97),                                                      # pupils
    ]),
    groups={"jaw": _r(0, 32), "brows": _r(33, 50), "nose": _r(51, 59),
            "eyes": _r(60, 75) + (96, 97), "mouth": _r(76, 95)},
    five_point=(_r(60, 67), _r(68, 75), (54,), (76,), (82,)),
)

LAYOUTS: dict[int, Layout] = {lay.num_points: lay for lay in (FIVE, IBUG68, WFLW98)}


def get_layout(num_points: int) -> Layout:
    """The layout with this many points."""
    if num_points not in LAYOUTS:
        raise ValueError(f"no landmark layout with {num_points} points; known: {sorted(LAYOUTS)}")
    return LAYOUTS[num_points]


def _check_points(lm_NxKx2: np.ndarray, layout: Layout) -> np.ndarray:
    lm = np.asarray(lm_NxKx2)
    if lm.ndim < 2 or lm.shape[-2:] != (layout.num_points, 2):
        raise ValueError(f"landmarks of shape {lm.shape} do not fit layout {layout.name}: "
                         f"expected (..., {layout.num_points}, 2)")
    return lm


def eye_centres(lm_NxKx2: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(left_Nx2, right_Nx2): means of the image-left and image-right eye points."""
    lm = _check_points(lm_NxKx2, layout)
    return lm[..., layout.left_eye, :].mean(axis=-2), lm[..., layout.right_eye, :].mean(axis=-2)


def to_five(lm_NxKx2: np.ndarray, layout: Layout | None = None) -> np.ndarray:
    """Nx5x2 MTFL points (eye centres, nose tip, mouth corners); layout defaults to the K one."""
    lm = np.asarray(lm_NxKx2)
    if layout is None:
        layout = get_layout(lm.shape[-2] if lm.ndim >= 2 else -1)
    lm = _check_points(lm, layout)
    return np.stack([lm[..., idx, :].mean(axis=-2) for idx in layout.five_point], axis=-2)


def flip_normalised(lm_NxKx2: np.ndarray, layout: Layout) -> np.ndarray:
    """Landmarks of the mirrored face in box-normalised units: u -> 1 - u, v kept, re-indexed.

    Mirroring the crop about the box's vertical centre line maps u to 1 - u whether the crop puts
    the box edges at pixel edges or at pixel centres, so flips are done in these units only (a
    pixel-space flip would need to know which). Output point flip_perm[i] is input point i
    mirrored; flip_perm is an involution, so a gather with it does that.
    """
    lm = _check_points(lm_NxKx2, layout)
    mirrored = np.concatenate([1.0 - lm[..., :1], lm[..., 1:]], axis=-1)
    return mirrored[..., layout.flip_perm, :]

"""Tests for tcdcn_jax.layouts.

The mirror permutations are checked geometrically: toy faces are built from each dataset's point
ORDER alone (contours run left to right, eye and mouth loops start at their image-left corner and go
over the top), never from the mirror pairs, so a wrong pair shows up as a point that does not land
on its partner.
"""

import numpy as np
import pytest

from tcdcn_jax import layouts
from tcdcn_jax.layouts import FIVE, IBUG68, WFLW98


def _loop(n: int, n_top: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """n points clockwise on screen: leftmost first, n_top steps over the top to the rightmost
    point, then back right-to-left along the bottom (the rest). n_top = n - 1 gives an open arc."""
    top = np.pi - np.pi * np.arange(n_top + 1) / n_top
    n_bottom = n - n_top - 1
    bottom = -np.pi * np.arange(1, n_bottom + 1) / (n_bottom + 1)
    ang = np.concatenate([top, bottom])
    return np.stack([cx + rx * np.cos(ang), cy - ry * np.sin(ang)], axis=-1)


def _sag(n: int, cy: float, rx: float, ry: float) -> np.ndarray:
    """n points left to right along a downward arc centred on the midline (jaw, nostrils)."""
    ang = np.pi + np.pi * np.arange(n) / (n - 1)
    return np.stack([0.5 + rx * np.cos(ang), cy - ry * np.sin(ang)], axis=-1)


def _line(n: int, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) * np.array([x0, y0]) + t * np.array([x1, y1])


def _toy68() -> np.ndarray:
    return np.concatenate([
        _sag(17, 0.4, 0.5, 0.6),                      # 0-16 jaw, temple to temple
        _loop(5, 4, 0.30, 0.25, 0.12, 0.04),          # 17-21 image-left brow, left to right
        _loop(5, 4, 0.70, 0.25, 0.12, 0.04),          # 22-26
        _line(4, 0.5, 0.35, 0.5, 0.55),               # 27-30 nose bridge, top to bottom
        _sag(5, 0.60, 0.08, 0.03),                    # 31-35 nostrils, left to right
        _loop(6, 3, 0.32, 0.38, 0.08, 0.03),          # 36-41 image-left eye from its outer corner
        _loop(6, 3, 0.68, 0.38, 0.08, 0.03),          # 42-47 image-right eye from its inner corner
        _loop(12, 6, 0.5, 0.80, 0.15, 0.06),          # 48-59 outer lips from the left corner
        _loop(8, 4, 0.5, 0.80, 0.10, 0.02),           # 60-67 inner lips from the left corner
    ])


def _toy98() -> np.ndarray:
    left_eye = _loop(8, 4, 0.32, 0.38, 0.08, 0.03)
    right_eye = _loop(8, 4, 0.68, 0.38, 0.08, 0.03)
    return np.concatenate([
        _sag(33, 0.4, 0.5, 0.6),                      # 0-32 jaw
        _loop(9, 4, 0.30, 0.25, 0.12, 0.04),          # 33-41 image-left brow: top L->R, bottom R->L
        _loop(9, 4, 0.70, 0.25, 0.12, 0.04),          # 42-50
        _line(4, 0.5, 0.35, 0.5, 0.55),               # 51-54 nose bridge
        _sag(5, 0.60, 0.08, 0.03),                    # 55-59 nostrils
        left_eye, right_eye,                          # 60-67, 68-75
        _loop(12, 6, 0.5, 0.80, 0.15, 0.06),          # 76-87 outer lips
        _loop(8, 4, 0.5, 0.80, 0.10, 0.02),           # 88-95 inner lips
        left_eye.mean(0, keepdims=True), right_eye.mean(0, keepdims=True),  # 96, 97 pupils
    ])


def _toy5() -> np.ndarray:
    return np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])


TOYS = [(FIVE, _toy5), (IBUG68, _toy68), (WFLW98, _toy98)]


@pytest.mark.parametrize("layout,toy", TOYS, ids=lambda v: getattr(v, "name", ""))
def test_flip_maps_symmetric_toy_face_onto_itself(layout, toy):
    lm_Kx2 = toy()
    assert lm_Kx2.shape == (layout.num_points, 2)
    # Distinct points, and a face that is not mirror-symmetric point by point: a wrong pair fails.
    dists = np.linalg.norm(lm_Kx2[:, None] - lm_Kx2[None], axis=-1) + np.eye(len(lm_Kx2))
    assert dists.min() > 1e-3
    mirrored_unpermuted = np.stack([1 - lm_Kx2[:, 0], lm_Kx2[:, 1]], axis=-1)
    assert not np.allclose(mirrored_unpermuted, lm_Kx2)
    np.testing.assert_allclose(layouts.flip_normalised(lm_Kx2[None], layout)[0], lm_Kx2,
                               atol=1e-12)


@pytest.mark.parametrize("layout", [FIVE, IBUG68, WFLW98], ids=lambda l: l.name)
def test_flip_perm_is_involution_and_groups_partition_points(layout):
    perm = np.array(layout.flip_perm)
    np.testing.assert_array_equal(perm[perm], np.arange(layout.num_points))
    assert sorted(sum(layout.groups.values(), ())) == list(range(layout.num_points))
    # Mirroring swaps the two eyes as sets.
    assert sorted(perm[list(layout.left_eye)]) == sorted(layout.right_eye)


def test_named_pairs_from_the_brief():
    assert [IBUG68.flip_perm[i] for i in (0, 8, 17, 21, 30, 31, 36, 39, 40, 48, 51, 55, 60, 65)] \
        == [16, 8, 26, 22, 30, 35, 45, 42, 47, 54, 51, 59, 64, 67]
    assert [WFLW98.flip_perm[i] for i in (0, 16, 33, 38, 41, 54, 55, 60, 64, 65, 76, 83, 88, 93,
                                          96)] \
        == [32, 16, 46, 50, 47, 54, 59, 72, 68, 75, 82, 87, 92, 95, 97]


@pytest.mark.parametrize("layout,toy", TOYS, ids=lambda v: getattr(v, "name", ""))
def test_flip_commutes_with_to_five_and_swaps_eye_centres(layout, toy):
    rng = np.random.default_rng(0)
    lm_NxKx2 = toy()[None] + 0.02 * rng.normal(size=(3, layout.num_points, 2))
    flipped = layouts.flip_normalised(lm_NxKx2, layout)
    np.testing.assert_allclose(layouts.flip_normalised(flipped, layout), lm_NxKx2)
    np.testing.assert_allclose(layouts.to_five(flipped, layout),
                               layouts.flip_normalised(layouts.to_five(lm_NxKx2, layout), FIVE))
    left, right = layouts.eye_centres(lm_NxKx2, layout)
    f_left, f_right = layouts.eye_centres(flipped, layout)
    np.testing.assert_allclose(f_left, np.stack([1 - right[:, 0], right[:, 1]], -1))
    np.testing.assert_allclose(f_right, np.stack([1 - left[:, 0], left[:, 1]], -1))


def test_to_five_from_68_and_98_by_hand():
    rng = np.random.default_rng(1)
    lm68 = rng.uniform(size=(2, 68, 2))
    five = layouts.to_five(lm68)
    assert five.shape == (2, 5, 2)
    np.testing.assert_allclose(five[:, 0], lm68[:, 36:42].mean(1))
    np.testing.assert_allclose(five[:, 1], lm68[:, 42:48].mean(1))
    np.testing.assert_array_equal(five[:, 2:], lm68[:, [30, 48, 54]])
    lm98 = rng.uniform(size=(2, 98, 2))
    five = layouts.to_five(lm98)
    np.testing.assert_allclose(five[:, 0], lm98[:, 60:68].mean(1))
    np.testing.assert_allclose(five[:, 1], lm98[:, 68:76].mean(1))
    np.testing.assert_array_equal(five[:, 2:], lm98[:, [54, 76, 82]])
    np.testing.assert_array_equal(layouts.to_five(lm98[:, :5]), lm98[:, :5])


def test_eye_centres_by_hand():
    lm = np.zeros((1, 68, 2))
    lm[0, 36:42] = [[0, 0], [1, 0], [2, 0], [3, 0], [4, 2], [2, 4]]
    lm[0, 42:48] = 10.0
    left, right = layouts.eye_centres(lm, IBUG68)
    np.testing.assert_allclose(left, [[2.0, 1.0]])
    np.testing.assert_allclose(right, [[10.0, 10.0]])


def test_get_layout_and_bad_inputs():
    assert layouts.get_layout(68) is IBUG68
    assert layouts.get_layout(98) is WFLW98 and layouts.get_layout(5) is FIVE
    with pytest.raises(ValueError, match=r"\[5, 68, 98\]"):
        layouts.get_layout(21)
    with pytest.raises(ValueError, match="known"):
        layouts.to_five(np.zeros((2, 21, 2)))
    with pytest.raises(ValueError, match="ibug68"):
        layouts.flip_normalised(np.zeros((2, 5, 2)), IBUG68)
    with pytest.raises(ValueError, match="involution"):
        layouts.Layout("bad", 3, (0,), (1,), (1, 2, 0), {"all": (0, 1, 2)},
                       ((0,), (1,), (2,), (2,), (2,)))
    with pytest.raises(ValueError, match="permutation"):
        layouts.Layout("bad", 3, (0,), (1,), (1, 0), {"all": (0, 1, 2)},
                       ((0,), (1,), (2,), (2,), (2,)))


def test_layout_is_hashable_and_frozen():
    assert hash(IBUG68) == hash(layouts.get_layout(68))
    assert len({FIVE, IBUG68, WFLW98}) == 3
    with pytest.raises(AttributeError):
        IBUG68.num_points = 5

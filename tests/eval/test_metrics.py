"""Tests for tcdcn_jax.metrics against cases worked out by hand."""

import json

import numpy as np
import pytest

from tcdcn_jax.eval import metrics
from tcdcn_jax.layouts import FIVE, IBUG68

# One 5-point face, IOD 10: errors per point 5 (3-4-5 triangle), 0, 1, 10 (6-8-10), 0.
TRUE5 = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [2.0, 10.0], [8.0, 10.0]])
PRED5 = TRUE5 + np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -1.0], [6.0, 8.0], [0.0, 0.0]])


def _three_faces():
    """Face A above; face B = A scaled x2 and shifted (same NME); face C predicted exactly."""
    true = np.stack([TRUE5, 2 * TRUE5 + 100, TRUE5 + 7])
    pred = np.stack([PRED5, 2 * PRED5 + 100, TRUE5 + 7])
    return pred, true


def test_nme_five_points_by_hand():
    pred, true = _three_faces()
    np.testing.assert_allclose(metrics.interocular(true, FIVE), [10.0, 20.0, 10.0])
    # (5 + 0 + 1 + 10 + 0) / 5 / 10 = 0.32
    np.testing.assert_allclose(metrics.nme_per_face(pred, true, FIVE), [0.32, 0.32, 0.0])
    np.testing.assert_allclose(metrics.nme_per_landmark(pred, true, FIVE),
                               [1 / 3, 0.0, 0.2 / 3, 2 / 3, 0.0])


def test_nme_68_points_uses_eye_contour_means():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 100, size=(1, 68, 2))
    # Eye contours whose centres are (30, 40) and (70, 40), but whose corners are not symmetric,
    # so a corner-based normaliser would give a different number.
    eye = np.array([[-10, 0], [-4, -3], [4, -3], [6, 0], [4, 3], [0, 3]], float)
    eye -= eye.mean(0)
    true[0, 36:42] = eye + [30, 40]
    true[0, 42:48] = eye + [70, 40]
    pred = true + [1.2, -1.6]  # every point off by 2
    np.testing.assert_allclose(metrics.interocular(true, IBUG68), [40.0])
    np.testing.assert_allclose(metrics.nme_per_face(pred, true, IBUG68), [0.05])
    np.testing.assert_allclose(metrics.nme_per_landmark(pred, true, IBUG68), np.full(68, 0.05))


def test_coincident_eyes_raise_naming_the_faces():
    pred, true = _three_faces()
    true[2, 1] = true[2, 0]
    with pytest.raises(ValueError, match=r"faces \[2\]"):
        metrics.nme_per_face(pred, true, FIVE)
    true[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"faces \[0, 2\]"):
        metrics.interocular(true, FIVE)


def test_shape_mismatch_raises():
    pred, true = _three_faces()
    with pytest.raises(ValueError, match="mtfl5"):
        metrics.nme_per_face(pred[:2], true, FIVE)
    with pytest.raises(ValueError, match="ibug68"):
        metrics.nme_per_face(pred, true, IBUG68)


def test_failure_rate_is_strictly_above_threshold():
    assert metrics.failure_rate(np.array([0.1, 0.1000001, 0.05, 0.3])) == 0.5
    assert metrics.failure_rate(np.array([0.2, 0.3]), threshold=0.25) == 0.5
    with pytest.raises(ValueError, match="NaN"):
        metrics.failure_rate(np.array([0.1, np.nan]))


def test_ced_by_hand():
    thresholds, frac = metrics.ced(np.array([0.0, 0.05, 0.2]), max_error=0.1, num_bins=4)
    np.testing.assert_allclose(thresholds, [0.0, 0.025, 0.05, 0.075, 0.1])
    np.testing.assert_allclose(frac, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    with pytest.raises(ValueError, match="max_error"):
        metrics.ced(np.array([0.1]), max_error=0.0)


def test_auc_hand_cases():
    assert metrics.auc(np.zeros(7), 0.1) == 1.0
    assert metrics.auc(np.array([0.1, 0.2, 5.0]), 0.1) == 0.0
    # (1 + 0.5 + 0) / 3
    assert metrics.auc(np.array([0.0, 0.05, 0.2]), 0.1) == pytest.approx(0.5)
    # Errors uniform on [0, 2M]: half the faces count, with mean (1 - e/M) = 1/2 among them.
    assert metrics.auc(np.linspace(0.0, 0.16, 100001), 0.08) == pytest.approx(0.25, abs=1e-4)
    assert metrics.auc(np.linspace(0.0, 0.08, 100001), 0.08) == pytest.approx(0.5, abs=1e-4)


def test_auc_matches_trapezoid_of_ced():
    nme = np.random.default_rng(1).gamma(2.0, 0.03, size=500)
    thresholds, frac = metrics.ced(nme, max_error=0.08, num_bins=4000)
    trapezoid = np.sum((frac[1:] + frac[:-1]) / 2 * np.diff(thresholds)) / 0.08
    assert metrics.auc(nme, 0.08) == pytest.approx(trapezoid, abs=1e-3)
    assert 0.2 < metrics.auc(nme, 0.08) < 0.8


def test_per_group_mean():
    out = metrics.per_group_mean(np.array([1.0, 2.0, 3.0, 4.0, 10.0]),
                                 np.array([0, 0, 2, 2, 4]), 5)
    np.testing.assert_allclose(out, [1.5, np.nan, 3.5, np.nan, 10.0])
    with pytest.raises(ValueError, match="0..4"):
        metrics.per_group_mean(np.ones(2), np.array([0, 5]), 5)
    with pytest.raises(ValueError, match="integers"):
        metrics.per_group_mean(np.ones(2), np.array([0.0, 1.0]), 5)


def test_accuracy():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert metrics.accuracy(logits, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    assert metrics.accuracy(probs, np.array([1, 0])) == 1.0
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        metrics.accuracy(np.array([0.2, 0.9]), np.array([0, 1]))


def test_landmark_report():
    pred, true = _three_faces()
    report = metrics.landmark_report(pred, true, FIVE, pose_N=np.array([2, 2, 0]),
                                     max_error=0.4)
    json.dumps(report)  # JSON-ready: plain floats, lists and None only
    assert report["num_faces"] == 3
    assert report["nme"] == pytest.approx(0.64 / 3)
    assert report["failure_rate"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(report["per_landmark_nme"], [1 / 3, 0.0, 0.2 / 3, 2 / 3, 0.0])
    assert report["auc"] == pytest.approx((0.2 + 0.2 + 1.0) / 3)  # 1 - 0.32/0.4 = 0.2
    assert report["per_pose_nme"][1] is None and report["per_pose_nme"][3] is None
    np.testing.assert_allclose([report["per_pose_nme"][i] for i in (0, 2)], [0.0, 0.32])
    assert "per_pose_nme" not in metrics.landmark_report(pred, true, FIVE)

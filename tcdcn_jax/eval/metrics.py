"""The paper's evaluation metrics, in numpy (host side, at evaluation time).

NME: for each face, the mean over its K points of the Euclidean distance between prediction and
truth, divided by the inter-ocular distance (IOD) of the true shape, i.e. the distance between the
two eye centres as `layouts.eye_centres` defines them. A face with NME > 0.10 is a failure.

Units: NME is scale-free, so pred and true may be in pixels or box-normalised units as long as both
share them. But box normalisation divides x and y by different numbers when the box is not square,
which distorts distances; pass pixel coordinates (or square boxes) for numbers comparable to papers.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tcdcn_jax import tasks
from tcdcn_jax.layouts import Layout, eye_centres


def _check_pair(pred_NxKx2: np.ndarray, true_NxKx2: np.ndarray,
                layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred_NxKx2, np.float64), np.asarray(true_NxKx2, np.float64)
    expected = (layout.num_points, 2)
    if pred.shape != true.shape or true.ndim != 3 or true.shape[1:] != expected:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must both be "
                         f"(N, {layout.num_points}, 2) for layout {layout.name}")
    return pred, true


def _check_errors(nme_N: np.ndarray) -> np.ndarray:
    nme = np.asarray(nme_N, np.float64)
    if nme.ndim != 1 or nme.size == 0:
        raise ValueError(f"per-face errors must be a non-empty 1-D array, got shape {nme.shape}")
    if not np.all(nme >= 0):  # also catches NaN
        raise ValueError("per-face errors must be >= 0; found negative or NaN values")
    return nme


def interocular(lm_true_NxKx2: np.ndarray, layout: Layout, min_iod: float = 1e-6) -> np.ndarray:
    """(N,) distance between the eye centres; ValueError naming faces with IOD <= min_iod or NaN."""
    left, right = eye_centres(np.asarray(lm_true_NxKx2, np.float64), layout)
    iod = np.linalg.norm(left - right, axis=-1)
    bad = np.flatnonzero(~(iod > min_iod))
    if bad.size:
        raise ValueError(f"inter-ocular distance is ~0 (<= {min_iod}) or not finite for faces "
                         f"{bad.tolist()}: coincident eye centres cannot normalise the error")
    return iod


def point_errors(pred_NxKx2: np.ndarray, true_NxKx2: np.ndarray, layout: Layout) -> np.ndarray:
    """(N, K) Euclidean error of every point divided by its face's inter-ocular distance."""
    pred, true = _check_pair(pred_NxKx2, true_NxKx2, layout)
    return np.linalg.norm(pred - true, axis=-1) / interocular(true, layout)[:, None]


def nme_per_face(pred_NxKx2: np.ndarray, true_NxKx2: np.ndarray, layout: Layout) -> np.ndarray:
    """(N,) mean over points of the normalised point error."""
    return point_errors(pred_NxKx2, true_NxKx2, layout).mean(axis=1)


def nme_per_landmark(pred_NxKx2: np.ndarray, true_NxKx2: np.ndarray,
                     layout: Layout) -> np.ndarray:
    """(K,) mean over faces of each point's normalised error (the paper's per-landmark bars)."""
    return point_errors(pred_NxKx2, true_NxKx2, layout).mean(axis=0)


def failure_rate(nme_N: np.ndarray, threshold: float = 0.10) -> float:
    """Fraction of faces whose NME is strictly above threshold."""
    return float(np.mean(_check_errors(nme_N) > threshold))


def ced(nme_N: np.ndarray, max_error: float = 0.10,
        num_bins: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds (num_bins + 1 points evenly from 0 to max_error)
    and, for each, the fraction of faces with NME <= threshold."""
    if max_error <= 0 or num_bins < 1:
        raise ValueError(f"need max_error > 0 and num_bins >= 1, got {max_error}, {num_bins}")
    nme = np.sort(_check_errors(nme_N))
    thresholds = np.linspace(0.0, max_error, num_bins + 1)
    return thresholds, np.searchsorted(nme, thresholds, side="right") / nme.size


def auc(nme_N: np.ndarray, max_error: float = 0.10) -> float:
    """Area under the CED from 0 to max_error, divided by max_error: 1 = every face perfect,
    0 = every face at or beyond max_error.

    Computed exactly, not from bins: the integral of 1[e <= t] over t in [0, M] is max(0, M - e),
    so AUC = mean(clip(1 - e / M, 0, 1)). Binned trapezoid versions differ by O(max_error/bins).
    """
    if max_error <= 0:
        raise ValueError(f"max_error must be > 0, got {max_error}")
    return float(np.mean(np.clip(1.0 - _check_errors(nme_N) / max_error, 0.0, 1.0)))


def per_group_mean(values_N: np.ndarray, groups_N: np.ndarray, num_groups: int) -> np.ndarray:
    """(num_groups,) mean of values in each group (e.g. NME per pose class); NaN where empty."""
    values, groups = np.asarray(values_N, np.float64), np.asarray(groups_N)
    if values.ndim != 1 or groups.shape != values.shape:
        raise ValueError(f"values {values.shape} and groups {groups.shape} must be equal 1-D")
    if groups.size == 0:
        groups = groups.astype(np.int64)
    if not np.issubdtype(groups.dtype, np.integer) or np.any((groups < 0) | (groups >= num_groups)):
        raise ValueError(f"groups must be integers in 0..{num_groups - 1}, got {groups.dtype} "
                         f"values {np.unique(groups)[:10].tolist()}")
    counts = np.bincount(groups, minlength=num_groups)
    sums = np.bincount(groups, weights=values, minlength=num_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def accuracy(logits_NxC: np.ndarray, labels_N: np.ndarray) -> float:
    """Fraction of rows whose argmax (of logits or probabilities alike) equals the label."""
    logits, labels = np.asarray(logits_NxC), np.asarray(labels_N)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or labels.size == 0:
        raise ValueError(f"expected logits (N, C) and labels (N,), N > 0; got {logits.shape} "
                         f"and {labels.shape}")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def slice_report(nme_N: np.ndarray, masks: Mapping[str, np.ndarray]) -> dict:
    """{name: {num_faces, nme, failure_rate}} of the faces each boolean mask picks (an empty mask
    is left out)."""
    nme = _check_errors(nme_N)
    return {name: {"num_faces": int(mask.sum()), "nme": float(nme[mask].mean()),
                   "failure_rate": failure_rate(nme[mask])}
            for name, mask in masks.items() if np.any(mask)}


def landmark_report(pred_NxKx2: np.ndarray, true_NxKx2: np.ndarray, layout: Layout,
                    pose_N: np.ndarray | None = None, max_error: float = 0.10,
                    slices: Mapping[str, np.ndarray] | None = None) -> dict:
    """JSON-ready summary: mean NME, failure rate (> 0.10), per-landmark NME, AUC up to max_error,
    given pose classes, per-pose NME (None for a pose with no faces), and given boolean masks of
    faces, a `slice_report` of them."""
    errors_NxK = point_errors(pred_NxKx2, true_NxKx2, layout)
    nme = errors_NxK.mean(axis=1)
    report = {
        "num_faces": int(nme.size),
        "nme": float(nme.mean()),
        "failure_rate": failure_rate(nme),
        "per_landmark_nme": [float(v) for v in errors_NxK.mean(axis=0)],
        "auc": auc(nme, max_error),
        "auc_max_error": float(max_error),
    }
    if pose_N is not None:
        per_pose = per_group_mean(nme, pose_N, tasks.NUM_CLASSES["pose"])
        report["per_pose_nme"] = [None if np.isnan(v) else float(v) for v in per_pose]
    if slices is not None:
        report["slices"] = slice_report(nme, slices)
    return report

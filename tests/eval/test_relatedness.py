"""Pearson analysis of head weights (Fig. 5b) on weights built by hand."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tcdcn_jax.eval import relatedness


def test_pearson_columns_by_hand():
    a = np.array([[1.0], [2.0], [3.0], [4.0]])
    b = np.array([[2, 4, 1], [4, 3, -1], [6, 2, 1], [8, 1, -1]], np.float64)
    r = relatedness.pearson_columns(a, b)
    # b0 = 2a: +1; b1 = 5 - a: -1; b2: centred a (-1.5, -.5, .5, 1.5) . (1, -1, 1, -1) = -2,
    # |a_c| = sqrt(5), |b2| = 2 -> -1/sqrt(5).
    np.testing.assert_allclose(r, [[1.0, -1.0, -1 / np.sqrt(5)]], atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 10.0), st.floats(-5.0, 5.0))
def test_pearson_matches_numpy_and_ignores_affine_changes(seed, scale, shift):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    r = relatedness.pearson_columns(a, b)
    np.testing.assert_allclose(r, np.corrcoef(a.T, b.T)[:3, 3:], atol=1e-10)
    np.testing.assert_allclose(relatedness.pearson_columns(scale * a + shift, b), r, atol=1e-9)


def test_pearson_rejects_constant_and_mismatched_vectors():
    with pytest.raises(ValueError, match="constant"):
        relatedness.pearson_columns(np.ones((4, 1)), np.arange(4.0)[:, None])
    with pytest.raises(ValueError, match="same F"):
        relatedness.pearson_columns(np.ones((4, 1)), np.ones((5, 1)))
    with pytest.raises(ValueError, match="finite"):
        relatedness.pearson_columns(np.array([[0.0], [np.nan]]), np.array([[0.0], [1.0]]))


def _hand_params(f: int = 6, seed: int = 0) -> tuple[dict, np.ndarray]:
    """A 5-point head whose 'left_mouth x' column is the smile:S vector, 'nose y' its negative."""
    rng = np.random.default_rng(seed)
    smile = rng.normal(size=(f, 2))
    lm = rng.normal(size=(f, 10))
    lm[:, 6] = 3.0 * smile[:, 1] + 1.0   # column 2k + 0 of point 3 (left_mouth): x
    lm[:, 5] = -smile[:, 1]              # column 2k + 1 of point 2 (nose): y
    heads = {"smile": {"kernel": smile, "bias": np.zeros(2)},
             "landmarks": {"kernel": lm, "bias": np.zeros(10)},
             "pose": {"kernel": rng.normal(size=(f, 5)), "bias": np.zeros(5)}}
    return {"trunk": {}, "heads": heads}, lm


def test_head_correlations_on_hand_built_heads():
    params, lm = _hand_params()
    out = relatedness.head_correlations(params)
    assert out["rows"][5] == "nose y" and out["rows"][6] == "left_mouth x"
    assert len(out["rows"]) == 10
    # Heads come in the paper's task order whatever the dict order.
    assert out["columns"] == ["pose:-60", "pose:-30", "pose:0", "pose:+30", "pose:+60",
                              "smile:NS", "smile:S"]
    assert out["tasks"] == ["pose"] * 5 + ["smile"] * 2
    r = np.asarray(out["r"])
    assert r.shape == (10, 7)
    np.testing.assert_allclose(r[6, 6], 1.0, atol=1e-12)
    np.testing.assert_allclose(r[5, 6], -1.0, atol=1e-12)
    pose = params["heads"]["pose"]["kernel"]
    np.testing.assert_allclose(r[0, 2], np.corrcoef(lm[:, 0], pose[:, 2])[0, 1], atol=1e-12)
    only_smile = relatedness.head_correlations(params, tasks=["smile"])
    np.testing.assert_allclose(np.asarray(only_smile["r"]), r[:, 5:], atol=1e-12)


def test_head_correlations_errors():
    params, _ = _hand_params()
    with pytest.raises(ValueError, match="no head for tasks"):
        relatedness.head_correlations(params, tasks=["gender"])
    lm_only = {"heads": {"landmarks": params["heads"]["landmarks"]}}
    with pytest.raises(ValueError, match="no auxiliary heads"):
        relatedness.head_correlations(lm_only)
    with pytest.raises(ValueError, match="no landmark head"):
        relatedness.head_correlations({"heads": {"smile": params["heads"]["smile"]}})


def test_mean_correlations_over_models():
    a = relatedness.head_correlations(_hand_params(seed=0)[0])
    b = relatedness.head_correlations(_hand_params(seed=1)[0])
    m = relatedness.mean_correlations([a, b])
    np.testing.assert_allclose(m["r"], (np.asarray(a["r"]) + np.asarray(b["r"])) / 2)
    np.testing.assert_allclose(m["r_sd"], np.abs(np.asarray(a["r"]) - np.asarray(b["r"])) / 2,
                               atol=1e-12)
    assert m["num_models"] == 2
    with pytest.raises(ValueError, match="share rows and columns"):
        relatedness.mean_correlations([a, relatedness.head_correlations(_hand_params()[0],
                                                                        tasks=["smile"])])


def test_coordinate_names():
    names = relatedness.coordinate_names(68)
    assert len(names) == 136 and names[0] == "p0 x" and names[-1] == "p67 y"

"""Re-crop refinement: the pure box rule, the loop, and the authors' weights from perturbed boxes."""

from __future__ import annotations

import numpy as np
import pytest

from tcdcn_jax.photos import box_maps, official, photo_eval, refine

SHAPE = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.4], [0.2, 1.0], [0.8, 1.0]])  # unit tight box


def _toy_model(face_Kx2: np.ndarray, pull: float):
    """A model that predicts the face's points moved towards the box's own frame by `pull`: the
    further the box from the face's tight box, the worse its points (as a real model's)."""
    def predict(boxes_Nx4):
        out = []
        for box in np.asarray(boxes_Nx4, np.float64):
            guess = box[:2] + SHAPE * box[2:]
            out.append((1 - pull) * face_Kx2 + pull * guess)
        return np.stack(out)
    return predict


def test_next_box_is_pure_and_follows_the_rule():
    lm = (np.array([10.0, 20.0]) + SHAPE * [40, 60])[None]
    rule = refine.RecropRule(box_maps.BoxMap(0.0, 0.1, 1.2, 1.2), "square")
    box = refine.next_box(rule, lm)
    np.testing.assert_allclose(box, [[30 - 36, 50 + 6 - 36, 72, 72]], atol=1e-4)
    np.testing.assert_array_equal(refine.next_box(rule, lm), box)
    np.testing.assert_allclose(refine.next_box(refine.RecropRule(refine.IDENTITY), lm),
                               [[10, 20, 40, 60]])


def test_refine_converges_to_the_faces_box_and_stops_early():
    face = np.array([100.0, 80.0]) + SHAPE * [50, 50]
    predict = _toy_model(face, pull=0.5)
    start = np.array([[120, 70, 60, 60]], np.float64)
    lm0 = predict(start)[0]
    lm, boxes, passes = refine.refine(predict, start, refine.RecropRule(refine.IDENTITY), passes=20)
    assert np.abs(lm[0] - face).max() < 0.02 * 50 < np.abs(lm0 - face).max()
    assert 1 <= passes[0] < 20  # stopped once the box stood still
    np.testing.assert_allclose(boxes[0], [100, 80, 50, 50], atol=1.5)


def test_zero_passes_is_one_prediction():
    calls = []
    predict = lambda b: (calls.append(len(b)), np.zeros((len(b), 5, 2)) + b[:, None, :2])[1]  # noqa: E731
    lm, boxes, passes = refine.refine(predict, np.ones((3, 4)), refine.RecropRule(refine.IDENTITY), 0)
    assert calls == [3] and passes.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="passes must be >= 0"):
        refine.refine(predict, np.ones((1, 4)), refine.RecropRule(refine.IDENTITY), -1)


def test_fit_rule_recovers_the_box_from_predictions():
    rng = np.random.default_rng(1)
    lm = rng.uniform(0, 1, (30, 1, 2)) * 200 + SHAPE[None] * rng.uniform(40, 80, (30, 1, 1))
    ideal = box_maps.BoxMap(-0.02, 0.05, 1.1, 1.1).apply(refine.source_box(lm, "square"))
    rule = refine.fit_rule(lm, ideal, "square")
    np.testing.assert_allclose(refine.next_box(rule, lm), ideal, atol=1e-2)


def test_stored_rule_is_the_fitted_square_rule():
    rule = refine.load_rule("official")
    assert rule.source == "square" and 1.0 < rule.box_map.sw < 1.2
    assert refine.load_rule("tight") == refine.RecropRule(refine.IDENTITY, "tight")
    with pytest.raises(ValueError, match="source must be one of"):
        refine.RecropRule(refine.IDENTITY, "round")


def test_refinement_reaches_a_fixed_point_on_the_authors_image(official_params, authors_example):
    rgb, box, _ = authors_example
    rule = refine.load_rule("official")
    predict = lambda b: official.predict(official_params, rgb, b)  # noqa: E731
    _, boxes, passes = refine.refine(predict, np.asarray([box]), rule, passes=8)
    assert passes[0] < 8
    lm = predict(boxes)
    assert refine.box_change(boxes, refine.next_box(rule, lm))[0] < refine.TOLERANCE


def test_refinement_shrinks_the_spread_from_perturbed_boxes(authors_example):
    from tcdcn_jax.photos.predictor import Predictor
    from tests.photos.test_predictor import official_dir

    rgb, box, _ = authors_example
    r = photo_eval.robustness(Predictor.from_path(official_dir() / "model.mat"), rgb, box)
    assert r["spread_refined_px"] < 0.5 * r["spread_px"]


def test_refine_many_batches_images_and_stops_each_face_on_its_own():
    """Two images' faces: one call per pass for all of them, each image its own pass limit, each
    face stopping when its box stands still; the points are what refine gives each image alone."""
    faces = [np.array([100.0, 80.0]) + SHAPE * [50, 50], np.array([10.0, 20.0]) + SHAPE * [30, 40]]
    models = [_toy_model(f, pull=0.5) for f in faces]
    starts = [np.array([[120, 70, 60, 60], [100, 80, 50, 50]], np.float64),
              np.array([[0, 10, 40, 50]], np.float64)]
    calls = []

    def predict(asks):
        calls.append([(i, len(b)) for i, b in asks])
        return [{"landmarks": models[i](b), "tag": np.full(len(b), len(calls))} for i, b in asks]

    rule = refine.RecropRule(refine.IDENTITY)
    outs, boxes, done = refine.refine_many(predict, starts, rule, [5, 1])
    assert calls[0] == [(0, 2), (1, 1)] and calls[1] == [(0, 1), (1, 1)]  # face 0/1 stood still
    assert all(i == 0 for call in calls[2:] for i, _ in call)  # image 1 ran its single pass
    assert done[1].tolist() == [1] and done[0][1] == 0 and 1 <= done[0][0] <= 5
    for i in range(2):
        want, want_boxes, _ = refine.refine(models[i], starts[i], rule, [5, 1][i])
        np.testing.assert_allclose(outs[i]["landmarks"], want)
        np.testing.assert_allclose(boxes[i], want_boxes)
    assert outs[0]["tag"][1] == 1 and outs[0]["tag"][0] == len(calls)  # other keys follow rows

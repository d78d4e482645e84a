"""Box maps: the fit recovers known maps, the stored maps cover every installed detector and
reproduce a fit on the dev photos, the authors' box is a local optimum of their model's NME."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tcdcn_jax.photos import box_fit, box_maps, detectors, dev_set


def test_fit_recovers_a_known_map_on_fixture_boxes():
    rng = np.random.default_rng(0)
    src = np.concatenate([rng.uniform(0, 300, (40, 2)), rng.uniform(30, 90, (40, 2))], axis=1)
    true_map = box_maps.BoxMap(0.03, 0.15, 1.05, 0.8)
    noisy = true_map.apply(src) + rng.normal(0, 0.3, (40, 4))
    fitted = box_maps.fit(src, noisy)
    np.testing.assert_allclose([fitted.dx, fitted.dy, fitted.sw, fitted.sh],
                               [0.03, 0.15, 1.05, 0.8], atol=0.01)
    assert 0 < max(fitted.spread) < 0.02 and fitted.num_faces == 40


def test_coefficients_invert_apply():
    src = np.array([[10, 20, 50, 60], [0, 0, 30, 30]], np.float64)
    m = box_maps.BoxMap(-0.1, 0.2, 1.3, 0.7)
    np.testing.assert_allclose(box_maps.coefficients(src, m.apply(src)),
                               [[-0.1, 0.2, 1.3, 0.7]] * 2, atol=1e-5)


def test_fit_needs_faces():
    with pytest.raises(ValueError, match="at least 3 faces"):
        box_maps.fit(np.ones((2, 4)), np.ones((2, 4)))


def test_official_box_is_a_square_around_the_points():
    lm = np.array([[[0, 0], [100, 0], [50, 80]]], np.float64)  # tight box 100 x 80
    box = box_maps.OfficialBox(0.0, 0.1, 1.2).from_points(lm)[0]
    np.testing.assert_allclose(box, [50 - 60, 40 + 10 - 60, 120, 120], atol=1e-4)


@pytest.mark.parametrize("convention", box_maps.CONVENTIONS)
def test_every_installed_detector_has_maps(convention):
    for name in detectors.available():
        m = box_maps.load(name, convention)
        assert 0.5 < m.sw < 1.5 and 0.5 < m.sh < 1.5 and m.num_faces >= 40, name
        assert all(0 < s < 0.2 for s in m.spread), name


def test_unknown_detector_or_convention_is_a_clear_error():
    with pytest.raises(ValueError, match="no box map for detector 'yolo'"):
        box_maps.load("yolo", "tight")
    with pytest.raises(ValueError, match="convention must be one of"):
        box_maps.load("haar", "loose")


def test_unreadable_map_file_names_it(tmp_path):
    bad = tmp_path / "maps.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="maps.json: not a readable box map file"):
        box_maps.load("haar", "tight", str(bad))


@pytest.mark.parametrize("name", detectors.names())
def test_stored_maps_reproduce_a_fit_on_the_dev_photos(name, dev):
    if name not in detectors.available():
        pytest.skip(f"optional detector {name!r} is not installed")
    stored = json.load(open(box_maps.MAPS_FILE))["maps"][name]
    run = dev_set.run_detectors(dev, [detectors.create(name)], rounds=1, min_score=-np.inf,
                                min_size=0)[0]
    boxes, _, true, _ = run.matched(dev)
    targets = {"tight": box_maps.tight_box(true),
               "official": box_maps.official_box().from_points(true)}
    for conv, target in targets.items():
        refit = box_maps.fit(boxes, target)
        m = box_maps.entry_to_map(stored[conv])
        np.testing.assert_allclose([refit.dx, refit.dy, refit.sw, refit.sh],
                                   [m.dx, m.dy, m.sw, m.sh], atol=2e-3, err_msg=f"{name} {conv}")
        assert refit.num_faces == m.num_faces


def test_official_box_is_a_local_optimum_of_the_released_model(dev, official_params):
    """Moving the stored box's side or centre one grid step makes the model's NME68 worse."""
    best = box_maps.official_box()
    photos, true = box_fit.labelled_faces(dev)

    def nme(rule):
        pred = box_fit.predict_faces(official_params, dev, photos, rule.from_points(true))
        return box_fit.nme(pred, true).mean()

    at_best = nme(best)
    assert at_best == pytest.approx(json.load(open(box_maps.MAPS_FILE))["official_box_nme"],
                                    abs=1e-3)
    for a, b, k in ((0, 0.02, 0), (0, -0.02, 0), (0, 0, 0.05), (0, 0, -0.05)):
        assert nme(box_maps.OfficialBox(best.a + a, best.b + b, best.k + k)) > at_best


def test_detector_map_lands_the_released_model_near_the_ideal_box(dev, official_params):
    """From the default detector's mapped box the model agrees with the labels about as well as
    from the ideal (fitted) box of the labels themselves."""
    run = dev_set.run_detectors(dev, [detectors.create("auto")], rounds=1)[0]
    boxes, _, true, ids = run.matched(dev)
    photos = [p for p, _ in ids]
    mapped = box_maps.to_convention(run.name, "official", boxes)
    from_det = box_fit.nme(box_fit.predict_faces(official_params, dev, photos, mapped), true)
    ideal = box_maps.official_box().from_points(true)
    from_ideal = box_fit.nme(box_fit.predict_faces(official_params, dev, photos, ideal), true)
    assert from_det.mean() < from_ideal.mean() + 0.01

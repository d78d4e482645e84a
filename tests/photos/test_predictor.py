"""Predictor: the same crops as training's evaluation path, batching that changes nothing, pixel
mapping, aux probabilities, the imported official model, the detector and bad input."""

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

from tcdcn_jax import images, tasks
from tcdcn_jax.model import build
from tcdcn_jax.train import checkpoints
from tcdcn_jax.photos import detect
from tcdcn_jax.photos import export
from tcdcn_jax.model import networks
from tcdcn_jax.photos import official
from tcdcn_jax.photos import predictor as predictor_lib
from tcdcn_jax.data import augment
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
def predictor(workdir) -> predictor_lib.Predictor:
    return predictor_lib.Predictor.from_checkpoint(workdir, microbatch=4)


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_crops_equal_prepare_batch_including_edges(predictor):
    grey = _noise(70, 90)
    boxes = np.array([[10, 5, 40, 44], [-8, -6, 30, 30], [75, 50, 30, 35]], np.float32)
    got = predictor.preprocess(grey, boxes)
    batch = {"image": np.repeat(grey[None], 3, 0), "box": boxes,
             "landmarks": np.zeros((3, 1, 2), np.float32)}
    want = np.asarray(augment.prepare_batch(None, batch, 40)["image"])
    assert got.shape == (3, 40, 40, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_big_photo_is_cropped_from_windows_around_the_boxes(predictor, monkeypatch):
    photo = np.random.default_rng(6).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    boxes = np.array([[1500.5, 900.0, 120.0, 130.0], [3950.0, -20.0, 90.0, 80.0]], np.float32)
    seen = []
    crop_windows = predictor_lib._crop_windows
    monkeypatch.setattr(predictor_lib, "_crop_windows",
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
    out = model.apply({"params": params}, jnp.asarray(img))
    lm = np.asarray(out["landmarks"][0])
    np.testing.assert_allclose(face.landmarks[:, 0], 12.5 + lm[:, 0] * 50, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(face.landmarks[:, 1], 9.0 + lm[:, 1] * 60, rtol=1e-5, atol=1e-4)
    assert face.landmarks.shape == (5, 2)
    assert set(face.aux) == set(TASKS)
    for task in TASKS:
        probs = np.asarray(jax.nn.softmax(out[task][0]))
        np.testing.assert_allclose(face.aux[task]["probs"], probs, atol=1e-5)
        assert face.aux[task]["label"] == int(np.argmax(probs))
        assert face.aux[task]["name"] == tasks.TASKS[task].names[face.aux[task]["label"]]
    doc = json.loads(json.dumps(face.to_json()))
    assert len(doc["landmarks"]) == 5 and doc["aux"]["pose"]["name"] in tasks.TASKS["pose"].names


def test_batching_across_images_and_microbatches_changes_nothing(predictor):
    images = [_noise(64, 64, 2), _noise(100, 70, 3), np.stack([_noise(50, 60, 4)] * 3, -1)]
    boxes = [[(5, 5, 40, 40), (10, 12, 30, 33)], [(0, 0, 70, 90)], [(3, 4, 40, 38)]]
    together = predictor.predict_many(images, boxes)
    for image, box_list, faces in zip(images, boxes, together):
        alone = predictor.predict(image, box_list)
        assert len(alone) == len(faces) == len(box_list)
        for a, b in zip(alone, faces):
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-4)
    # 11 faces: padded to 12 = three micro-batches of 4, against one plain batch.
    img = np.random.default_rng(5).normal(size=(11, 40, 40, 1)).astype(np.float32)
    looped = predictor.run(img)
    plain = predictor_lib.Predictor(predictor.model, predictor.params, microbatch=64).run(img)
    for key in plain:
        assert looped[key].shape[0] == 11
        np.testing.assert_allclose(looped[key], plain[key], atol=1e-5)


def test_imported_official_model_matches_the_authors_output(tmp_path):
    image, box, points = official_example()
    workdir = export.import_official(official_dir() / "model.mat", tmp_path / "official")
    config = json.loads((Path(workdir) / "config.json").read_text())
    assert (config["trunk"], config["activation"], config["num_landmarks"], config["aux_tasks"]) == (
        "report", "relu", 68, "")
    assert config["preprocessing"] == "official"
    model, _, _ = checkpoints.load_model(workdir)
    assert model.num_landmarks == 68 and not model.aux_tasks
    pred = predictor_lib.Predictor.from_checkpoint(workdir)
    (face,) = pred.predict(str(image), [box])
    ref = official.tool_landmarks(official.load_official_params(official_dir() / "model.mat"),
                                    image, box)
    np.testing.assert_allclose(face.landmarks, ref, atol=1e-3)
    assert np.linalg.norm(face.landmarks - points, axis=1).mean() < 2.5
    assert face.aux == {}
    with pytest.raises(ValueError, match="already holds checkpoints"):
        export.import_official(official_dir() / "model.mat", workdir)


def test_haar_detector_box_lands_on_the_known_box():
    image, box, points = official_example()
    grey = images.to_grey(images.load_image(str(image)))
    found = detect.detect_faces(grey)
    assert len(found) >= 1
    left, top, width, height = found[0]
    tight = np.array([points[:, 0].min(), points[:, 1].min(), np.ptp(points[:, 0]),
                      np.ptp(points[:, 1])])
    # Within 5 % of the face size of both the released box and the landmarks' tight box.
    for ref in (np.array(box), tight):
        assert np.all(np.abs(found[0] - ref) < 0.05 * ref[2]), (found[0], ref)
    assert len(detect.detect_faces(np.full((120, 120), 128, np.uint8))) == 0
    np.testing.assert_allclose(detect.detector_to_box([[100, 200, 50, 50]]),
                               [[102.5, 211.5, 42.0, 41.0]])


def test_bad_input_is_refused_clearly(tmp_path, predictor, workdir):
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file"):
        predictor.predict(tmp_path / "missing.jpg")
    for box, message in [((0, 0, 0, 10), "below 1 px"), ((200, 5, 10, 10), "outside"),
                         ((-30, 0, 20, 20), "outside"), ((1, 2, 3), "4 finite"),
                         ((0, np.nan, 5, 5), "4 finite")]:
        with pytest.raises(ValueError, match=message):
            predictor.predict(_noise(50, 50), [box])
    report_model = networks.make_model(5, TASKS, "report", "abs_tanh")
    _, params, _ = checkpoints.load_model(str(workdir))
    with pytest.raises(ValueError,
                       match=r"does not fit a report TCDCN: param .* has shape .* the model needs"):
        predictor_lib.Predictor(report_model, params)


def test_package_import_is_light_and_exports_predictor():
    code = ("import sys, tcdcn_jax; assert 'jax' not in sys.modules; "
            "from tcdcn_jax import Predictor; assert Predictor.__name__ == 'Predictor'; "
            "assert 'jax' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)

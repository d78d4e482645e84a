"""report.evaluate_workdir (and the experiments.evaluate main) on a checkpoint whose heads are set
by hand: the landmark head outputs the training mean shape whatever the face, the pose head always says
frontal, so every number is known."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tcdcn_jax import geometry
from tcdcn_jax.data import sources
from tcdcn_jax.eval import evaluate
from tcdcn_jax.eval import metrics
from tcdcn_jax.eval import report
from tcdcn_jax.train import setup
from tcdcn_jax.train import steps as steps_lib
from tcdcn_jax.layouts import get_layout
from tcdcn_jax.model import build
from tcdcn_jax.train import checkpoints
from tests.support import REPO, assert_drawn_png, random_params, tiny_config

FRONTAL = 2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    c = tiny_config(num_val=24, num_test=40)
    splits = sources.load(c)
    params = random_params(build.from_config(c, 5))
    mean_Kx2 = sources.mean_shape(splits.train)
    heads = params["heads"]
    heads["landmarks"] = {"kernel": np.zeros_like(heads["landmarks"]["kernel"]),
                          "bias": mean_Kx2.reshape(-1).astype(np.float32)}
    heads["pose"] = {"kernel": np.zeros_like(heads["pose"]["kernel"]),
                     "bias": np.eye(5, dtype=np.float32)[FRONTAL] * 5}
    path = checkpoints.write_weights(str(tmp_path_factory.mktemp("eval") / "run"), params, c)
    return path, splits, mean_Kx2, c


def test_evaluate_numbers_match_the_hand_set_model(workdir):
    path, splits, mean_Kx2, _ = workdir
    r = report.evaluate_workdir(path, num_faces=6)
    test = splits.test
    true_px = test["landmarks"].astype(np.float64)
    mean_px = geometry.to_pixels(np.broadcast_to(mean_Kx2, true_px.shape),
                                 test["box"].astype(np.float64))
    expected_N = metrics.nme_per_face(mean_px, true_px, get_layout(5))
    assert r["num_faces"] == 40 and r["split"] == "test" and r["checkpoint_step"] == 0
    np.testing.assert_allclose(r["per_face_nme"], expected_N, rtol=1e-5)
    np.testing.assert_allclose(r["nme"], r["mean_shape_nme"], rtol=1e-5)
    np.testing.assert_allclose(r["failure_rate"], np.mean(expected_N > 0.10))
    np.testing.assert_allclose(r["auc"], metrics.auc(expected_N), rtol=1e-5, atol=1e-9)
    assert r["accuracy"]["pose"] == pytest.approx(np.mean(test["pose"] == FRONTAL))
    assert set(r["accuracy"]) == {"pose", "gender", "glasses", "smile"}
    assert len(r["per_landmark_nme"]) == 5 and len(r["per_pose_nme"]) == 5
    assert r["point_names"] == ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"]
    ced = r["ced"]
    assert ced["thresholds"][0] == 0 and ced["thresholds"][-1] == pytest.approx(0.10)
    assert np.all(np.diff(ced["fraction"]) >= 0)
    assert ced["fraction"][-1] == pytest.approx(1 - r["failure_rate"])

    out = os.path.join(path, "eval_synthetic_test")
    saved = json.loads(open(os.path.join(out, "eval.json")).read())
    assert saved["nme"] == r["nme"]
    for name in ("ced.png", "per_landmark.png", "faces.png"):
        assert_drawn_png(os.path.join(out, name))


def test_evaluate_other_split_and_bad_split(workdir, tmp_path):
    path, splits, _, _ = workdir
    r = report.evaluate_workdir(path, split="validation", out_dir=str(tmp_path / "val"),
                                     num_faces=3)
    assert r["num_faces"] == len(splits.validation) == 24
    assert (tmp_path / "val" / "faces.png").exists()
    with pytest.raises(ValueError, match="unknown split"):
        report.evaluate_workdir(path, split="holdout", out_dir=str(tmp_path / "x"))


def test_command_line(workdir, tmp_path):
    path, _, _, _ = workdir
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--workdir={path}", "--split=validation",
         f"--out_dir={out}", "--num_faces=4"], capture_output=True, text=True,
        cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "eval.json").read_text())["num_faces"] == 24


def test_predict_dataset_is_the_loops_eval_pass_compiled_once(workdir):
    _, splits, _, config = workdir
    model, step_cfg, state = setup.build(config, splits)  # freshly initialised: every head is live
    runner = steps_lib.Steps(step_cfg, steps_lib.make_mesh())
    test = splits.test
    loop_pass = evaluate.eval_outputs(runner, state.params, state.apply_fn, test, 16)
    ours = evaluate.predict_dataset(model, state.params, test["image"], test["box"], batch_size=16)
    assert set(ours) == {"landmarks", "pose", "gender", "glasses", "smile"}
    for key in ours:
        np.testing.assert_allclose(ours[key], loop_pass[key], atol=1e-5)
    # Other params, another dataset size, the same batch: no new compilation.
    fn = evaluate._batch_fn(model, None, "auto")
    compiled = fn._cache_size()
    other = jax.tree_util.tree_map(lambda p: p * 0.5, state.params)
    val = splits.validation
    again = evaluate.predict_dataset(model, other, val["image"], val["box"], batch_size=16)
    assert again["landmarks"].shape == (len(val), 5, 2)
    assert evaluate._batch_fn(model, None, "auto") is fn and fn._cache_size() == compiled
    with pytest.raises(ValueError, match="need faces and a batch_size >= 1, got 0 faces"):
        evaluate.predict_dataset(model, state.params, val["image"][:0], val["box"][:0])


def test_the_step_reported_is_the_checkpoint_read_not_a_newer_bad_one(workdir, tmp_path):
    import shutil

    path, *_ = workdir
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    bad = copy / "checkpoints" / "7"  # a newer step folder that never got its commit marker
    shutil.copytree(copy / "checkpoints" / "0", bad)
    (bad / "commit_success.txt").unlink()
    assert checkpoints.manager(str(copy)).latest_step() == 7
    r = report.evaluate_workdir(str(copy), num_faces=2, out_dir=str(tmp_path / "eval"))
    assert r["checkpoint_step"] == 0

"""Weights from a path: every kind loads, and every near miss is one readable line naming the path
(FileNotFoundError or ValueError), never orbax's or numpy's wording."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcdcn_jax.photos import weights
from tests.photos.test_predictor import make_workdir, official_dir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("tiny") / "run")


def _one_line(err: BaseException) -> str:
    text = str(err.value if hasattr(err, "value") else err)
    assert "\n" not in text and "np." not in text and "Traceback" not in text, text
    return text


def _damaged(workdir: Path, tmp_path: Path, name: str, damage) -> Path:
    copy = tmp_path / name
    shutil.copytree(workdir, copy)
    damage(copy)
    return copy


def test_kinds_of_weights_load(workdir, tmp_path):
    net = weights.load(workdir)
    assert (net.input_size, net.preprocessing, net.num_landmarks, net.backend) == (
        40, "standard", 5, "jax")
    assert net.aux_tasks == {"pose": 5, "gender": 2} and net.model is not None
    mat = weights.load(official_dir() / "model.mat")
    assert (mat.input_size, mat.preprocessing, mat.num_landmarks, mat.aux_tasks) == (
        60, "official", 68, {})
    out = net.run(np.zeros((3, 40, 40, 1), np.float32))
    assert out["landmarks"].shape == (3, 5, 2) and out["pose"].shape == (3, 5)


# orbax's reader thread may report its closed event loop after a damaged read; it is not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_near_misses_are_one_line_naming_the_path(workdir, tmp_path):
    holder = tmp_path / "release"
    holder.mkdir()
    (holder / "model.mat").symlink_to(official_dir() / "model.mat")
    empty = tmp_path / "empty"
    empty.mkdir()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(photo)
    (tmp_path / "notes.mat").write_text("not a mat file")
    cases = [
        (tmp_path / "nope", FileNotFoundError, "nope: no such file or folder"),
        (holder, ValueError, f"{holder} is not a workdir .* holds model.mat: pass "
                             f"{holder / 'model.mat'}"),
        (empty, ValueError, "empty is not a workdir .* holds no weights file; pass a workdir"),
        (workdir / "config.json", ValueError,
         f"config.json is a file inside the workdir {workdir}: pass the workdir folder"),
        (next((workdir / "checkpoints").glob("*/_CHECKPOINT_METADATA")), ValueError,
         f"_CHECKPOINT_METADATA is a file inside the workdir {workdir}: pass the workdir folder"),
        (photo, ValueError, "photo.png: not a weights file; pass a workdir folder, the authors' "
                            "model.mat, an ONNX file"),
        (tmp_path / "notes.mat", ValueError, "notes.mat: not a readable MATLAB .mat file"),
        (_damaged(workdir, tmp_path, "bad_data", lambda d: [
            p.write_bytes(b"x" * 10) for p in (d / "checkpoints").rglob("*")
            if p.is_file() and p.parent.name == "d" and "ocdbt" in str(p)]),
         ValueError, "bad_data: its checkpoint is damaged or incomplete"),
        (_damaged(workdir, tmp_path, "no_data", lambda d: [
            shutil.rmtree(p) for p in (d / "checkpoints").glob("*/default")]),
         ValueError, "no_data: its checkpoint is damaged or incomplete"),
        (_damaged(workdir, tmp_path, "no_ckpt", lambda d: shutil.rmtree(d / "checkpoints")),
         FileNotFoundError, "no checkpoint under .*no_ckpt"),
        (_damaged(workdir, tmp_path, "bad_config", lambda d: (d / "config.json").write_text("{")),
         ValueError, "bad_config/config.json: not valid JSON"),
    ]
    for path, kind, words in cases:
        with pytest.raises(kind, match=words) as err:
            weights.load(path)
        assert type(err.value) is kind, (path, err.value)
        _one_line(err)


def test_params_that_do_not_fit_their_config_say_so(workdir, tmp_path):
    wrong = _damaged(workdir, tmp_path, "wrong", lambda d: None)
    config = json.loads((wrong / "config.json").read_text())
    config["trunk"] = "report"  # eccv params under a report config: shapes differ
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="wrong'? does not fit a report TCDCN: param") as err:
        weights.load(wrong)
    _one_line(err)


def test_bad_backends_and_sidecars(workdir, tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tflite'; choose one of jax, "):
        weights.load(workdir, backend="tflite")
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not onnx at all")
    Path(str(fake) + ".json").write_text(json.dumps({"format": "tcdcn_jax.onnx/1"}))
    with pytest.raises(ValueError, match="model.onnx: its sidecar lacks input_shape") as err:
        weights.load(fake, backend="onnxruntime")
    _one_line(err)

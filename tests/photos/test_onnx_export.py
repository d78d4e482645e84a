"""ONNX export: ONNX Runtime gives our outputs (max abs difference <= 1e-5) for the authors' weights
and for random models of both trunks with auxiliary heads, at any batch size; `tcdcn export
--format onnx` writes the file and a sidecar a user outside Python can follow; bad export options
fail before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tcdcn_jax.photos import cli
from tcdcn_jax.photos import official
from tcdcn_jax.photos import onnx_export
from tests.model.test_inference import assert_outputs_equal, images, random_model, reference
from tests.photos.test_predictor import make_workdir, official_dir

TOLERANCE = 1e-5  # max abs difference, ONNX Runtime against our network


def run_onnxruntime(proto_or_path, img_BxSxSx1: np.ndarray) -> dict[str, np.ndarray]:
    data = proto_or_path.SerializeToString() if hasattr(proto_or_path, "SerializeToString") \
        else str(proto_or_path)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {onnx_export.INPUT_NAME: img_BxSxSx1})))


def test_official_weights_round_trip():
    model = official.model()
    params = official.load_official_params(official_dir() / "model.mat")
    proto = onnx_export.to_onnx(model, params)
    for batch in (1, 5):
        img = images(batch, 60, seed=batch)
        want = reference(model, params, img)
        got = run_onnxruntime(proto, img)
        assert_outputs_equal(got, want, atol=TOLERANCE)
        assert np.ptp(want["landmarks"]) > 0.5  # a real face's spread of points, not a constant


@pytest.mark.parametrize("trunk,activation", [("report", "relu"), ("report", "tanh"),
                                              ("eccv", "abs_tanh")])
def test_random_models_with_aux_heads_round_trip(trunk, activation):
    model, params = random_model(trunk, activation, learn_task_weights=True)
    proto = onnx_export.to_onnx(model, params)
    outputs = [o.name for o in proto.graph.output]
    assert outputs == ["landmarks", "pose", "gender", "smile", "glasses"]
    img = images(7, 60 if trunk == "report" else 40)
    assert_outputs_equal(run_onnxruntime(proto, img), reference(model, params, img),
                         atol=TOLERANCE)


def test_batch_is_dynamic_and_the_graph_is_the_layer_list():
    model, params = random_model("report", "relu", aux=("pose",))
    proto = onnx_export.to_onnx(model, params)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [60, 60, 1]
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 4 and ops.count("MaxPool") == 3 and "ScatterND" not in ops


def test_cli_exports_onnx_with_a_sidecar(tmp_path, capsys):
    workdir = make_workdir(tmp_path / "tiny", trunk="report")
    out = tmp_path / "tiny.onnx"
    assert cli.main(["export", "--weights", str(workdir), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    meta = json.loads(Path(str(out) + ".json").read_text())
    assert printed["out"] == str(out) and meta["format"] == "tcdcn_jax.onnx/1"
    proto = onnx.load(str(out))
    stored = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(stored[onnx_export.METADATA_KEY]) == meta
    assert meta["input_shape"] == ["batch", 60, 60, 1] and meta["input_name"] == "image"
    assert meta["aux_tasks"] == {"pose": 5, "gender": 2}
    assert meta["decode"]["classes"]["pose"][2] == "frontal"
    assert meta["decode"]["point_names"][0] == "left_eye"
    assert any("standardise" in step for step in meta["preprocess"])
    from tcdcn_jax.photos.predictor import Predictor

    live = Predictor.from_checkpoint(workdir)
    img = images(3, 60)
    assert_outputs_equal(run_onnxruntime(out, img), live.run(img), atol=TOLERANCE)


def test_cli_official_sidecar_says_how_to_crop(tmp_path, capsys):
    out = tmp_path / "official.bin"
    assert cli.main(["export", "--weights", str(official_dir() / "model.mat"), "--out", str(out),
                     "--format", "onnx"]) == 0
    meta = json.loads(Path(str(out) + ".json").read_text())
    assert meta["preprocessing"] == "official"
    assert "input_gain" not in meta
    assert any("127.5" in step for step in meta["preprocess"])
    assert meta["decode"]["layout"] == "ibug68" and meta["decode"]["point_groups"]["jaw"][-1] == 16
    assert any("rgb2gray" in step for step in meta["preprocess"])
    assert "(w + 1)" in meta["decode"]["landmarks"]


@pytest.mark.parametrize("extra,words", [
    (["--platforms", "tpu,foo"], "--platforms: platforms must be distinct names among cpu, cuda"),
    (["--platforms", "cpu,cpu"], "got cpu,cpu"),
    (["--format", "onnx", "--platforms", "cpu"], "--platforms applies to --format stablehlo"),
])
def test_bad_export_options_exit_2(tmp_path, capsys, extra, words):
    out = tmp_path / "m.bin"
    code = cli.main(["export", "--weights", str(tmp_path / "never-read"), "--out", str(out),
                     *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not out.exists()


def test_missing_output_folder_exits_2_before_loading_weights(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "model.onnx"
    code = cli.main(["export", "--weights", str(tmp_path / "never-read"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not exist" in err[0] and "no/such" in err[0]

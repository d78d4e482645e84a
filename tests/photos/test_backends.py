"""backends.make_runner: jax, ONNX Runtime and OpenVINO give the same outputs at any batch size,
from (model, params) or from an exported ONNX file; bad requests fail with one clear line."""

from __future__ import annotations

import numpy as np
import pytest

from tcdcn_jax.photos import backends
from tcdcn_jax.photos import onnx_export
from tests.model.test_inference import assert_outputs_equal, images, random_model, reference


@pytest.fixture(scope="module")
def model_params():
    return random_model("report", "relu")


@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_backends_agree_at_any_batch(backend, model_params):
    model, params = model_params
    run = backends.make_runner(backend, model=model, params=params, threads=2)
    for batch in (1, 3, 70):  # 70: the jax path's unrolled micro-batches, ragged at the end
        img = images(batch, 60, seed=batch)
        assert_outputs_equal(run(img), reference(model, params, img))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runner_from_an_exported_file(backend, tmp_path):
    model, params = random_model("eccv", "abs_tanh", aux=("pose",))
    path = tmp_path / "eccv.onnx"
    path.write_bytes(onnx_export.to_onnx(model, params).SerializeToString())
    img = images(4, 40)
    assert_outputs_equal(backends.make_runner(backend, onnx_file=path)(img),
                         reference(model, params, img))


def test_bad_requests(tmp_path, model_params):
    model, params = model_params
    with pytest.raises(ValueError, match="unknown backend 'tflite'; choose one of jax, "):
        backends.make_runner("tflite", model=model, params=params)
    with pytest.raises(ValueError, match="backend 'jax' needs model and params"):
        backends.make_runner("jax", onnx_file=tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError, match="m.onnx: no such file"):
        backends.make_runner("onnxruntime", onnx_file=tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="give onnx_file, or model and params"):
        backends.make_runner("openvino")
    (tmp_path / "junk.onnx").write_bytes(b"not a model" * 20)
    for backend, words in (("onnxruntime", "ONNX Runtime cannot load"),
                           ("openvino", "OpenVINO cannot read")):
        with pytest.raises(ValueError, match=words):
            backends.make_runner(backend, onnx_file=tmp_path / "junk.onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The authors' weights exported both ways: {'onnx': path, 'stablehlo': path}."""
    from tcdcn_jax.photos import export
    from tcdcn_jax.photos.predictor import Predictor
    from tests.photos.test_predictor import official_dir

    folder = tmp_path_factory.mktemp("exported")
    live = Predictor.from_path(official_dir() / "model.mat")
    export.export_model(live, folder / "official.onnx", format="onnx")
    export.export_model(live, folder / "official.bin", platforms=("cpu",))
    return {"onnx": folder / "official.onnx", "stablehlo": folder / "official.bin"}


def test_the_same_faces_through_every_backend_and_export(exported, authors_example):
    """Detection, the authors' rule, refinement from given boxes and Averaged give the same points
    (<= 1e-4 px) whichever runtime runs the network, from model.mat or from an exported file."""
    from tcdcn_jax.photos.predictor import Predictor
    from tests.photos.test_predictor import official_dir

    rgb, box, _ = authors_example
    mat = official_dir() / "model.mat"
    runs = {"jax": Predictor.from_path(mat)}
    runs.update({b: Predictor.from_path(mat, backend=b) for b in ("onnxruntime", "openvino")})
    runs["onnx file"] = Predictor.from_path(exported["onnx"])
    runs["onnx file, openvino"] = Predictor.from_path(exported["onnx"], backend="openvino")
    runs["jax.export file"] = Predictor.from_path(exported["stablehlo"])
    assert runs["onnx file"].backend == "onnxruntime" and runs["onnx file"].network.model is None
    want = None
    for name, pred in runs.items():
        got = [pred.predict(rgb), pred.predict(rgb, [box]),
               pred.replace(averaged=True).predict(rgb, [box])]
        lm = np.concatenate([f.landmarks for faces in got for f in faces])
        if want is None:
            want = lm
            assert len(got[0]) >= 1 and lm.shape == ((len(got[0]) + 2) * 68, 2)
        np.testing.assert_allclose(lm, want, atol=1e-4, err_msg=name)


def test_exported_files_refuse_the_wrong_backend(exported):
    from tcdcn_jax.photos.predictor import Predictor

    with pytest.raises(ValueError, match="is an ONNX model: run it with backend 'onnxruntime'"):
        Predictor.from_path(exported["onnx"], backend="jax")
    with pytest.raises(ValueError, match="jax.export .* runs on backend 'jax' only"):
        Predictor.from_path(exported["stablehlo"], backend="openvino")
    with pytest.raises(ValueError, match="exported model already"):
        from tcdcn_jax.photos import export

        export.export_model(Predictor.from_path(exported["onnx"]),
                            exported["onnx"].parent / "x.onnx", format="onnx")


def test_openvino_sends_no_usage_report_for_a_user_who_never_chose(tmp_path):
    """Imported through our backend with no consent file (a fresh home), OpenVINO's import takes its
    no-op telemetry stub: no forked sender, nothing written to the user's home; openvino's API and
    openvino_telemetry stay usable."""
    import os
    import subprocess
    import sys

    from tests.support import REPO

    code = ("import sys, multiprocessing; from tcdcn_jax.photos import backends; "
            "ov = backends._import_openvino(); import openvino.tools.ovc.telemetry_utils as tu; "
            "import openvino_telemetry; "
            "print(tu.tm.__name__, callable(ov.convert_model), "
            "len(multiprocessing.active_children()))")
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(REPO))
    env.pop("CI", None)
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], env=env,
                         capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "True", "0"], out
    assert list(tmp_path.iterdir()) == []

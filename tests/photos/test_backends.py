"""backends.make_runner: jax, ONNX Runtime and OpenVINO give the same outputs at any batch size,
from (model, params) or from an exported ONNX file; bad requests fail with one clear line."""

from __future__ import annotations

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

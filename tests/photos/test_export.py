"""jax.export round trip: a model serialised by `tcdcn export` and loaded in a fresh process (plain
jax, none of our modules) gives the live model's outputs, at any batch size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcdcn_jax.photos import cli
from tcdcn_jax.photos import export
from tcdcn_jax.photos.predictor import Predictor
from tests.photos.test_predictor import make_workdir, official_dir

_LOADER = """
import sys, numpy as np, jax
exported = jax.export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))
inputs = np.load(sys.argv[2])
outs = {}
for name in inputs.files:
    for key, value in exported.call(inputs[name]).items():
        outs[f'{name}/{key}'] = np.asarray(value)
assert not any(m.startswith('tcdcn_jax') or m == 'flax' for m in sys.modules)
np.savez(sys.argv[3], **outs)
"""


def test_export_round_trip_in_a_fresh_process(tmp_path):
    workdir = make_workdir(tmp_path / "tiny")
    model_bin = tmp_path / "model.bin"
    assert cli.main(["export", "--weights", str(workdir), "--out", str(model_bin),
                     "--platforms", "cpu"]) == 0
    meta = json.loads(Path(str(model_bin) + ".json").read_text())
    assert meta["input_shape"] == ["batch", 40, 40, 1] and meta["aux_tasks"] == {"pose": 5,
                                                                                 "gender": 2}
    rng = np.random.default_rng(0)
    inputs = {f"b{n}": rng.normal(size=(n, 40, 40, 1)).astype(np.float32) for n in (1, 3, 17)}
    np.savez(tmp_path / "in.npz", **inputs)
    subprocess.run([sys.executable, "-c", _LOADER, str(model_bin), str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz")], check=True, cwd=tmp_path)
    loaded = np.load(tmp_path / "out.npz")
    live = Predictor.from_path(workdir)
    for name, img in inputs.items():
        want = live.run(img)
        assert set(want) == {"landmarks", "pose", "gender"}
        for key, value in want.items():
            got = loaded[f"{name}/{key}"]
            assert got.shape == value.shape
            np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6)


def test_official_model_exports_for_cpu_and_cuda(tmp_path):
    out = tmp_path / "official.bin"
    live = Predictor.from_path(official_dir() / "model.mat")
    meta = export.export_model(live, out, platforms=("cpu", "cuda"))
    assert meta["platforms"] == ["cpu", "cuda"] and meta["preprocessing"] == "official"
    call, sidecar = export.load_exported(out)
    assert sidecar == meta
    img = np.random.default_rng(1).normal(size=(2, 60, 60, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(call(img)["landmarks"]), live.run(img)["landmarks"],
                               rtol=1e-5, atol=1e-6)


def test_loading_something_else_fails_clearly(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"definitely not stablehlo" * 10)
    with pytest.raises(ValueError, match="not a jax.export serialisation"):
        export.load_exported(tmp_path / "junk.bin")

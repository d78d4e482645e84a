"""model/inference.py: every layout (fused or plain conv1, one call or unrolled micro-batches,
ragged last chunk) gives model.apply's outputs, for both trunks and every activation."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.model import inference
from tcdcn_jax.model import networks
from tests.support import REPO

AUX = ("pose", "gender", "smile", "glasses")


def random_model(trunk: str = "report", activation: str = "relu", aux=AUX, seed: int = 0,
                 num_landmarks: int = 5, learn_task_weights: bool = False
                 ) -> tuple[networks.TCDCN, dict[str, Any]]:
    """A model and fan-in-scaled random numpy params (drawn on eval_shape: no init compile)."""
    model = networks.make_model(num_landmarks, aux, trunk, activation,
                                learn_task_weights=learn_task_weights)
    size = networks.input_size(trunk)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, size, size, 1), jnp.float32))["params"]
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(
        lambda s: (rng.normal(0, 1 / np.sqrt(max(1, np.prod(s.shape[:-1]))), s.shape)
                   .astype(np.float32)), shapes)
    return model, params


def reference(model: networks.TCDCN, params, img_BxSxSx1: np.ndarray) -> dict[str, np.ndarray]:
    """model.apply with softmax on the auxiliary heads: what every backend must give. Compiled as
    one program with the params as arguments (op by op, every layer compiles on its own), so a
    model and batch size seen before load from the session's compilation cache."""
    out = jax.jit(model.apply)({"params": params}, jnp.asarray(img_BxSxSx1))
    return {k: np.asarray(v if k == "landmarks" else jax.nn.softmax(v, axis=-1))
            for k, v in out.items()}


def images(batch: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, size, size, 1)).astype(np.float32)


def assert_outputs_equal(got, want, atol: float = 1e-5) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert np.shape(got[key]) == value.shape, key
        np.testing.assert_allclose(np.asarray(got[key]), value, rtol=0, atol=atol, err_msg=key)


@pytest.mark.parametrize("activation", ["relu", "abs_tanh"])
@pytest.mark.parametrize("conv1,chunk,batch", [
    ("fused", 0, 3), ("plain", 0, 3), ("plain", 8, 19), ("fused", 16, 40)])
def test_report_layouts_equal_the_flax_model(activation, conv1, chunk, batch):
    model, params = random_model("report", activation)
    img = images(batch, 60)
    forward = inference.make_forward(model, params, conv1=conv1, chunk=chunk)
    assert_outputs_equal(forward(img), reference(model, params, img))


def test_eccv_in_chunks_equals_the_flax_model():
    model, params = random_model("eccv", "abs_tanh")
    img = images(11, 40)
    assert_outputs_equal(inference.make_forward(model, params, chunk=4)(img),
                         reference(model, params, img))


def test_layout_per_batch_size():
    assert inference.layout_for(1) == ("fused", 0)
    assert inference.layout_for(32) == ("plain", 0)
    assert inference.layout_for(256) == ("fused", inference.CHUNK["fused"])


def test_default_layout_at_a_chunked_batch_size():
    model, params = random_model("report", "relu", aux=())
    img = images(inference.CHUNK_FROM + 5, 60)  # chunked, ragged last chunk
    assert_outputs_equal(inference.make_forward(model, params)(img), reference(model, params, img))


def test_unknown_conv1_fails_clearly():
    model, params = random_model("report", "relu", aux=())
    with pytest.raises(ValueError, match="conv1 must be 'fused' or 'plain'"):
        inference.make_forward(model, params, conv1="im2col")(images(1, 60))


_SHARDED = """
import jax
jax.config.update("jax_num_cpu_devices", 2)
import numpy as np
from tcdcn_jax.model import inference
from tests.model.test_inference import assert_outputs_equal, images, random_model, reference
model, params = random_model("report", "relu")
forward = inference.make_forward(model, params, devices=jax.devices())
for batch in (6, 3):  # one shard per device; an odd batch runs on one device
    img = images(batch, 60)
    out = forward(img)
    assert len(out["landmarks"].sharding.device_set) == (2 if batch == 6 else 1)
    assert_outputs_equal(out, reference(model, params, img))
"""


def test_one_shard_per_cpu_device():
    subprocess.run([sys.executable, "-c", _SHARDED], check=True, cwd=REPO)

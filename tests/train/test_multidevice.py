"""Data parallel on CPU: 1 vs 4 fake devices, and two jax.distributed processes on localhost."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import REPO as ROOT

# A few train steps of a tiny config on a fixed synthetic set; writes the loss trace and params.
WORKER = r"""
import sys, numpy as np, jax
from tcdcn_jax.configs.pretrain import get_config
from tcdcn_jax.train import steps as steps_lib
from tcdcn_jax.train import loop
from tcdcn_jax.data import sources
from tcdcn_jax.data.pipeline import BatchIterator
c = get_config()
c.num_train, c.num_val, c.num_test, c.batch_size, c.num_steps, c.warmup_steps = 64, 16, 16, 16, 3, 0
splits = sources.load(c)
_, step_cfg, state = loop.build(c, splits)
runner = steps_lib.Steps(step_cfg, steps_lib.make_mesh())
state = runner.put_state(state)
it = BatchIterator(splits.train, c.batch_size, c.seed)
loss = []
for step in range(c.num_steps):
    state, m = runner.train(state, runner.put_batch(it.batch_at(step)))
    loss.append(float(m["loss"]))
flat = {"/".join(str(getattr(p, "key", p)) for p in path): np.asarray(v) for path, v in
        jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
np.savez(sys.argv[1], loss=np.asarray(loss), devices=len(jax.devices()), **flat)
"""


def _run_worker(tmp_path, name, devices):
    out = tmp_path / f"{name}.npz"
    env = dict(os.environ, TCDCN_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    subprocess.run([sys.executable, "-c", WORKER, str(out)], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    return np.load(out)


def test_one_and_four_devices_agree(tmp_path):
    one = _run_worker(tmp_path, "one", 1)
    four = _run_worker(tmp_path, "four", 4)
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    np.testing.assert_allclose(one["loss"], four["loss"], rtol=1e-5)
    for key in one.files:
        if key not in ("loss", "devices"):
            # Summation order differs across devices; a near-zero weight can move by ~2e-6 after Adam.
            np.testing.assert_allclose(one[key], four[key], rtol=1e-4, atol=1e-5, err_msg=key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_localhost_agree_with_one(tmp_path):
    flags = ["--config=tcdcn_jax/configs/pretrain.py", "--config.num_train=128",
             "--config.num_val=32", "--config.num_test=32", "--config.batch_size=16",
             "--config.num_steps=6", "--config.eval_every=3", "--config.log_every=3",
             "--config.checkpoint_every=6", "--config.eval_batch_size=16",
             "--config.warmup_steps=0"]
    env = dict(os.environ, TCDCN_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "experiments.pretrain", f"--workdir={single}", *flags],
                   env=env, cwd=ROOT, check=True, capture_output=True)

    multi = tmp_path / "multi"
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.pretrain", f"--workdir={multi}", *flags,
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert "process 0 of 2" in outs[0] and "process 1 of 2" in outs[1]

    a = json.loads((single / "summary.json").read_text())["test"]
    b = json.loads((multi / "summary.json").read_text())["test"]
    np.testing.assert_allclose(a["nme"], b["nme"], rtol=1e-4)
    np.testing.assert_allclose(a["per_landmark_nme"], b["per_landmark_nme"], rtol=1e-4)

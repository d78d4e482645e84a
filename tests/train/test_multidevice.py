"""Data parallel on CPU: 1 vs 4 fake devices, and two jax.distributed processes on localhost, each
against the same run in this (one-device) process."""

import json
import socket
import subprocess
import sys

import jax
import numpy as np

from tcdcn_jax.train import loop
from tests.support import REPO, tiny_config, tiny_flags

STEPS = dict(num_steps=3)


def train_a_few_steps(out: str) -> None:
    """A few train steps of the tiny config on its synthetic data; saves the losses and params."""
    from tcdcn_jax.data import sources
    from tcdcn_jax.data.pipeline import BatchIterator
    from tcdcn_jax.train import setup
    from tcdcn_jax.train import steps as steps_lib

    c = tiny_config(**STEPS)
    splits = sources.load(c)
    built = {}

    def fresh_state():
        _, built["step_cfg"], state = setup.build(c, splits)
        return state

    # One compiled init instead of model.init's op-by-op dispatch, whose many small programs a
    # process with another device count cannot load from the session's compilation cache.
    state = jax.jit(fresh_state)()
    runner = steps_lib.Steps(built["step_cfg"], steps_lib.make_mesh())
    state = runner.put_state(state)
    it = BatchIterator(splits.train, c.batch_size, c.seed)
    loss = []
    for step in range(c.num_steps):
        state, m = runner.train(state, runner.put_batch(it.batch_at(step)))
        loss.append(float(m["loss"]))
    flat = {jax.tree_util.keystr(path): np.asarray(v) for path, v in
            jax.tree_util.tree_leaves_with_path(jax.device_get(state.params))}
    np.savez(out, loss=np.asarray(loss), devices=len(jax.devices()), **flat)


def test_one_and_four_devices_agree(tmp_path, subprocess_env):
    train_a_few_steps(str(tmp_path / "one.npz"))
    env = dict(subprocess_env, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    code = ("import sys; from tests.train.test_multidevice import train_a_few_steps; "
            "train_a_few_steps(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "four.npz")], env=env, cwd=REPO,
                   check=True, capture_output=True)
    one, four = np.load(tmp_path / "one.npz"), np.load(tmp_path / "four.npz")
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


def test_two_processes_on_localhost_agree_with_one(tmp_path, subprocess_env):
    # Two evaluations and the test pass: every program of a run, each across the two processes.
    run = dict(num_steps=4, eval_every=2, log_every=2, checkpoint_every=4)
    single = loop.train_and_evaluate(tiny_config(**run), str(tmp_path / "single"))

    multi = tmp_path / "multi"
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.pretrain", f"--workdir={multi}", *tiny_flags(**run),
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        env=subprocess_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert "process 0 of 2" in outs[0] and "process 1 of 2" in outs[1]
    assert "2 global devices" in outs[0]

    a, b = single["test"], json.loads((multi / "summary.json").read_text())["test"]
    np.testing.assert_allclose(a["nme"], b["nme"], rtol=1e-4)
    np.testing.assert_allclose(a["per_landmark_nme"], b["per_landmark_nme"], rtol=1e-4)
    # Only process 0 writes the run's files; process 1 logs beside them.
    assert not (multi / "process_1" / "summary.json").exists()
    assert (multi / "process_1" / "metrics.jsonl").exists()

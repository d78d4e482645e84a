"""Never lose a run: SIGKILL + restart is bit-identical, SIGTERM checkpoints, guards refuse bad resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.configs.pretrain import get_config
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import losses
from tcdcn_jax.train import loop

from tests.support import REPO as ROOT
TINY_FLAGS = [
    "--config=tcdcn_jax/configs/pretrain.py", "--config.num_train=256", "--config.num_val=64",
    "--config.num_test=64", "--config.batch_size=16", "--config.eval_every=10",
    "--config.log_every=10", "--config.eval_batch_size=32", "--config.warmup_steps=2",
]


def _cmd(workdir, *extra):
    return [sys.executable, "-m", "experiments.pretrain", f"--workdir={workdir}", *TINY_FLAGS, *extra]


def _env(cache):
    return dict(os.environ, TCDCN_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu")


def _wait_for(predicate, proc, timeout=600):
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"run ended (rc {proc.returncode}) before the condition:\n{out}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.2)


def _steps_saved(workdir):
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def test_sigkill_then_restart_is_bit_identical_to_an_unbroken_run(tmp_path):
    cache = tmp_path / "cache"
    steps = ["--config.num_steps=40", "--config.checkpoint_every=10"]
    subprocess.run(_cmd(tmp_path / "unbroken", *steps), env=_env(cache), cwd=ROOT, check=True,
                   capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(killed, *steps), env=_env(cache), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: any(s >= 20 for s in _steps_saved(killed)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it was killed"
    subprocess.run(_cmd(killed, *steps), env=_env(cache), cwd=ROOT, check=True, capture_output=True)

    a = json.loads((tmp_path / "unbroken" / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a["test"] == b["test"] and a["task_stopped_at"] == b["task_stopped_at"]
    _, pa = checkpoints.restore_params(str(tmp_path / "unbroken"))
    _, pb = checkpoints.restore_params(str(killed))
    jax.tree_util.tree_map(np.testing.assert_array_equal, pa, pb)
    records = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert records == [10, 20, 30, 40], "a resumed run must not duplicate metrics records"


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path):
    workdir = tmp_path / "run"
    # No periodic checkpoint before step 10000: only the SIGTERM handler can write one.
    proc = subprocess.Popen(_cmd(workdir, "--config.num_steps=10000",
                                 "--config.checkpoint_every=10000"),
                            env=_env(tmp_path / "cache"), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: (workdir / "metrics.jsonl").exists()
              and (workdir / "metrics.jsonl").read_text().strip(), proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    saved = _steps_saved(workdir)
    assert saved and saved[-1] >= 10, out[-2000:]
    assert "interrupted: saving a checkpoint" in out


def _tiny_config(**overrides):
    c = get_config()
    c.num_train, c.num_val, c.num_test = 256, 64, 64
    c.num_steps, c.batch_size, c.eval_every, c.log_every, c.checkpoint_every = 10, 16, 5, 5, 5
    c.eval_batch_size, c.warmup_steps = 32, 2
    c.update(overrides)
    return c


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCDCN_CACHE_DIR", str(tmp_path / "cache"))


def test_a_workdir_with_another_config_refuses_to_resume(tmp_path, cache):
    loop.train_and_evaluate(_tiny_config(), str(tmp_path))
    with pytest.raises(loop.ConfigMismatchError, match=r"learning_rate: 0.002 -> 0.01"):
        loop.train_and_evaluate(_tiny_config(learning_rate=0.01), str(tmp_path))
    # Bookkeeping fields may change, and the user may insist.
    loop.train_and_evaluate(_tiny_config(log_every=2), str(tmp_path))
    summary = loop.train_and_evaluate(_tiny_config(learning_rate=0.01, num_steps=12),
                                       str(tmp_path), allow_config_change=True)
    assert summary["steps"] == 12


def test_non_finite_loss_stops_with_the_step_and_keeps_the_good_checkpoint(tmp_path, cache,
                                                                           monkeypatch):
    loop.train_and_evaluate(_tiny_config(), str(tmp_path))
    assert _steps_saved(tmp_path)[-1] == 10
    good = checkpoints.restore_params(str(tmp_path))[1]

    real = losses.landmark_loss
    monkeypatch.setattr(losses, "landmark_loss", lambda *a, **k: real(*a, **k) * jnp.nan)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 15 in .*landmark_loss"):
        loop.train_and_evaluate(_tiny_config(num_steps=20), str(tmp_path),
                                 allow_config_change=True)
    assert _steps_saved(tmp_path)[-1] == 10
    jax.tree_util.tree_map(np.testing.assert_array_equal, good,
                           checkpoints.restore_params(str(tmp_path))[1])

"""Never lose a run: SIGKILL + restarting the same command is bit-identical to an unbroken run, and
SIGTERM checkpoints before the run exits. (The resume guard: tests/train/test_setup.py.)"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from tcdcn_jax.train import checkpoints
from tests.support import REPO, tiny_flags

# The tiny config's constant learning rate leaves num_steps out of the compiled step, so both tests
# (and every process of each) run the same programs, compiled once into the session's cache.
RUN = dict(num_steps=40, eval_every=10, log_every=10, checkpoint_every=5)


def _cmd(workdir, **overrides):
    return [sys.executable, "-m", "experiments.pretrain", f"--workdir={workdir}",
            *tiny_flags(**{**RUN, **overrides})]


def _wait_for(predicate, proc, timeout=600):
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"run ended (rc {proc.returncode}) before the condition:\n{out}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def _steps_saved(workdir):
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def test_sigkill_then_restart_is_bit_identical_to_an_unbroken_run(tmp_path, subprocess_env):
    unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
    subprocess.run(_cmd(unbroken), env=subprocess_env, cwd=REPO, check=True, capture_output=True)

    proc = subprocess.Popen(_cmd(killed), env=subprocess_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # After the first evaluation (step 10), so the restart also restores a part-filled Eq. 5 strip.
    _wait_for(lambda: any(s >= 10 for s in _steps_saved(killed)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it was killed"
    subprocess.run(_cmd(killed), env=subprocess_env, cwd=REPO, check=True, capture_output=True)

    a = json.loads((unbroken / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a["steps"] == b["steps"] == 40
    assert a["test"] == b["test"] and a["task_stopped_at"] == b["task_stopped_at"]
    _, pa = checkpoints.load_params(str(unbroken))
    _, pb = checkpoints.load_params(str(killed))
    jax.tree_util.tree_map(np.testing.assert_array_equal, pa, pb)
    records = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40], "a resumed run must not duplicate records"
    # Every logged figure matches, except the period's mean landmark training loss, which after a
    # resume part-way through a period averages the steps since the resume (it is logged, not state).
    expected = [json.loads(l) for l in (unbroken / "metrics.jsonl").read_text().splitlines()]
    for r in records + expected:
        r["train_loss"].pop("landmarks")
    assert records == expected


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path, subprocess_env):
    workdir = tmp_path / "run"
    # No periodic checkpoint before step 10000: only the SIGTERM handler can write one.
    proc = subprocess.Popen(_cmd(workdir, num_steps=10000, checkpoint_every=10000),
                            env=subprocess_env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: (workdir / "metrics.jsonl").exists()
              and (workdir / "metrics.jsonl").read_text().strip(), proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    saved = _steps_saved(workdir)
    assert len(saved) == 1 and 10 <= saved[0] < 10000, out[-2000:]
    assert f"interrupted: saving a checkpoint at step {saved[0]}" in out
    assert not (workdir / "summary.json").exists()

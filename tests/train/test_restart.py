"""Never lose a run: SIGKILL + restarting the same command is bit-identical to an unbroken run, and
SIGTERM or SIGINT checkpoints before the run exits. (The resume guard: tests/train/test_setup.py;
the lock, Ctrl-C inside a step, a full disk and the other faults: test_workdir_faults.py.)"""

import signal
import subprocess

import pytest

from tests.support import REPO, assert_same_run, pretrain_cmd, steps_saved, wait_for


def test_sigkill_then_restart_is_bit_identical_to_an_unbroken_run(tmp_path, subprocess_env,
                                                                   unbroken_run):
    killed = tmp_path / "killed"

    proc = subprocess.Popen(pretrain_cmd(killed), env=subprocess_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # After the first evaluation (step 10), so the restart also restores a part-filled Eq. 5 strip.
    wait_for(lambda: any(s >= 10 for s in steps_saved(killed)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it was killed"
    subprocess.run(pretrain_cmd(killed), env=subprocess_env, cwd=REPO, check=True,
                   capture_output=True)
    assert_same_run(unbroken_run, killed)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_a_checkpoint_before_exiting(signum, tmp_path, subprocess_env):
    """Sent from outside while the run trains (tests/train/test_workdir_faults.py places one inside a
    step and between two, and resumes bit-identical)."""
    workdir = tmp_path / "run"
    # No periodic checkpoint before step 10000: only the signal handler can write one.
    proc = subprocess.Popen(pretrain_cmd(workdir, num_steps=10000, checkpoint_every=10000),
                            env=subprocess_env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (workdir / "metrics.jsonl").exists()
             and (workdir / "metrics.jsonl").read_text().strip(), proc)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, out[-2000:]
    saved = steps_saved(workdir)
    assert len(saved) == 1 and 10 <= saved[0] < 10000, out[-2000:]
    assert f"interrupted: saving a checkpoint at step {saved[0]}" in out
    assert "Traceback" not in out
    assert out.splitlines()[-1] == (
        f"stopped at step {saved[0]} by {signal.Signals(signum).name}: checkpoint saved at "
        f"{workdir / 'checkpoints' / str(saved[0])}; run the same command to resume")
    assert not (workdir / "summary.json").exists()

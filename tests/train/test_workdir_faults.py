"""Never lose a run, under the faults an operator meets: a second process on the workdir, Ctrl-C
between steps and inside one, a cut metrics line, a full disk, a read-only checkpoints/, a batch
that does not split over the devices, a bad command line. Each run that recovers is compared with one
unbroken run to the last bit (support.assert_same_run); each refusal is one line with its exit code.

Where a fault must land at an exact moment (inside a step, between two), a wrapper starts the same
main with that moment's function patched to send the signal itself, so no test races its run.
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from experiments import common
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import loop
from tcdcn_jax.train import setup
from tcdcn_jax.train import workdir as workdir_lib
from tests.support import (REPO, assert_same_run, pretrain_cmd, steps_saved, tiny_config,
                           wait_for)

# experiments.pretrain with one fault placed: argv[1] is the mode, argv[2] the step, argv[3] a
# path (the gate file), then the main's own flags.
WRAPPER = r"""
import os, runpy, signal, sys, time
from tcdcn_jax.data import pipeline
from tcdcn_jax.train import steps
mode, at, gate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.argv = ["pretrain", *sys.argv[4:]]
if mode == "sigint_in_step":  # after the step ran: its input state is donated by now
    real_init = steps.Steps.__init__
    def init(self, *args):
        real_init(self, *args)
        jitted = self.train
        def train(state, batch):
            out = jitted(state, batch)
            if int(out[0].step) == at:
                os.kill(os.getpid(), signal.SIGINT)
            return out
        self.train = train
    steps.Steps.__init__ = init
else:  # while the batch of step `at` + 1 is drawn: between two steps
    real_batch_at = pipeline.BatchIterator.batch_at
    def batch_at(self, step):
        if step == at and mode == "sigint_between_steps":
            os.kill(os.getpid(), signal.SIGINT)
        if step == at and mode == "wait_for_gate":
            open(gate + ".waiting", "w").close()
            while not os.path.exists(gate):
                time.sleep(0.05)
        return real_batch_at(self, step)
    pipeline.BatchIterator.batch_at = batch_at
runpy.run_module("experiments.pretrain", run_name="__main__")
"""


def _wrapped(mode, step, workdir, **overrides):
    return [sys.executable, "-c", WRAPPER, mode, str(step), str(workdir.parent / "gate"),
            *pretrain_cmd(workdir, **overrides)[3:]]


def _run(cmd, env, **kwargs):
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
                          **kwargs)


def _last_line(proc) -> str:
    """The one line a refused or stopped run ends with, after checking that no traceback came."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def test_a_second_process_on_the_workdir_exits_2_naming_the_first(tmp_path, subprocess_env,
                                                                  unbroken_run):
    workdir = tmp_path / "run"
    first = subprocess.Popen(_wrapped("wait_for_gate", 20, workdir), env=subprocess_env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (tmp_path / "gate.waiting").exists(), first)  # the first is mid-run
        second = _run(pretrain_cmd(workdir), subprocess_env)
        assert second.returncode == 2, second.stderr[-3000:]
        assert _last_line(second) == (
            f"error: {os.path.realpath(workdir)} is in use by process {first.pid} (lock "
            f"{os.path.realpath(workdir)}/.lock); wait for it to end or use another --workdir")
    finally:
        (tmp_path / "gate").touch()
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    assert_same_run(unbroken_run, workdir)  # the refused process wrote nothing into it


def test_the_lock_dies_with_its_process_and_is_reentrant_within_one(tmp_path, subprocess_env):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tcdcn_jax.train import workdir; "
         "lock = workdir.hold(sys.argv[1]); lock.__enter__(); print('held', flush=True); "
         "time.sleep(600)",
         str(tmp_path)], env=subprocess_env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lib.WorkdirInUse, match=f"in use by process {holder.pid} "):
        with workdir_lib.hold(str(tmp_path)):
            pass
    holder.kill()  # SIGKILL: no handler runs, yet the kernel drops the lock
    holder.wait()
    with workdir_lib.hold(str(tmp_path)):
        with workdir_lib.hold(str(tmp_path / ".")):  # the same folder: a main, then its loop
            assert workdir_lib.is_held(str(tmp_path))
        assert workdir_lib.is_held(str(tmp_path))
    assert not workdir_lib.is_held(str(tmp_path))


@pytest.mark.parametrize("mode, at, stopped_at", [("sigint_in_step", 13, 13),
                                                  ("sigint_between_steps", 26, 27)])
def test_ctrl_c_saves_at_the_step_boundary_and_the_rerun_is_bit_identical(
        mode, at, stopped_at, tmp_path, subprocess_env, unbroken_run):
    workdir = tmp_path / "run"
    stopped = _run(_wrapped(mode, at, workdir), subprocess_env)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert _last_line(stopped) == (
        f"stopped at step {stopped_at} by SIGINT: checkpoint saved at "
        f"{workdir / 'checkpoints' / str(stopped_at)}; run the same command to resume")
    assert steps_saved(workdir)[-1] == stopped_at and not (workdir / "summary.json").exists()
    if mode == "sigint_between_steps":
        # And a kill that cut the metrics line being written: the rerun drops it with a notice.
        with open(workdir / "metrics.jsonl", "a") as f:
            f.write('{"step": 30, "train_loss": {"landm')
    rerun = _run(pretrain_cmd(workdir), subprocess_env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    if mode == "sigint_between_steps":
        assert f"{workdir / 'metrics.jsonl'}: dropped 1 cut line(s) (line 3)" in rerun.stderr
    assert_same_run(unbroken_run, workdir)


def test_a_read_only_checkpoints_folder_is_refused_at_preflight(tmp_path, subprocess_env):
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    cmd = pretrain_cmd(workdir)
    if os.geteuid() != 0:
        os.chmod(workdir / "checkpoints", 0o500)
    elif shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"]).returncode == 0:
        # root writes through permission bits: a read-only bind mount in a private mount namespace
        ro = str(workdir / "checkpoints")
        cmd = ["unshare", "-rm", "sh", "-c", f'mount --bind -o ro "{ro}" "{ro}" && exec "$@"',
               "sh", *cmd]
    else:
        pytest.skip("as root without unshare no folder here refuses writes")
    proc = _run(cmd, subprocess_env)  # before any step: the first save would hang on it for minutes
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = _last_line(proc)
    assert line.startswith(f"error: cannot write in {workdir / 'checkpoints'} (")
    assert line.endswith("); fix its permissions or use another --workdir")
    assert sorted(os.listdir(workdir)) == [".lock", "checkpoints"]  # no config.json to refuse later


def test_a_batch_that_does_not_split_is_refused_and_leaves_nothing_that_refuses_the_fix(
        tmp_path, subprocess_env):
    workdir = tmp_path / "run"
    env = dict(subprocess_env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = _run(pretrain_cmd(workdir, batch_size=15), env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert _last_line(proc) == ("error: config.batch_size=15 does not split over 2 devices: use a "
                                "multiple of 2")
    assert os.listdir(workdir) == [".lock"]
    setup.check_resumable(tiny_config(batch_size=16), str(workdir))  # the corrected command starts


@pytest.mark.parametrize("flag, line", [
    ("--flagfile=no_such.flags", "error: Unable to open flagfile: [Errno 2] No such file or "
     "directory: 'no_such.flags' (run with --helpfull for the flags)"),
    ("--config.batch_size=-4", "error: config.batch_size must be >= 1, got -4"),
])
def test_command_line_errors_are_one_line_exit_2(flag, line, tmp_path, subprocess_env):
    workdir = tmp_path / "run"
    proc = _run([*pretrain_cmd(workdir), flag], subprocess_env)
    assert proc.returncode == 2 and _last_line(proc) == line
    assert not (workdir / "config.json").exists()
    verbose = _run([*pretrain_cmd(workdir), flag, "--verbose"], subprocess_env)
    assert verbose.returncode == 2 and verbose.stderr.strip().splitlines()[-1] == line
    if flag.startswith("--config."):  # a flagfile fails before --verbose is read
        assert "Traceback" in verbose.stderr


def _train_exit_and_lines(workdir, splits, capsys) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of a tiny in-process run through the mains' one-line errors."""
    with pytest.raises(SystemExit) as exit_:
        common.one_line_errors(lambda: loop.train_and_evaluate(tiny_config(), str(workdir), splits))
    return exit_.value.code, capsys.readouterr().err.splitlines()


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_at_start_says_so_with_the_path_and_leaves_no_empty_config(
        tmp_path, splits5, monkeypatch, capsys):
    monkeypatch.setattr(os, "fsync", _disk_full)  # the config.json write is the first to fsync
    assert _train_exit_and_lines(tmp_path, splits5, capsys) == (1, [
        f"error: disk full writing {tmp_path / 'config.json'} (No space left on device); free "
        "some space and run the same command to resume"])
    assert sorted(os.listdir(tmp_path)) == [".lock"]  # neither config.json nor its temporary file


def test_a_full_disk_inside_a_checkpoint_save_is_one_line_naming_the_folder(
        tmp_path, splits5, monkeypatch, capsys):
    def save(mngr, state, config=None):  # as orbax raises it: the OSError two levels down the chain
        try:
            _disk_full()
        except OSError as e:
            try:
                raise ValueError("tensorstore write failed") from e
            except ValueError as wrapped:
                raise RuntimeError("async save failed") from wrapped

    monkeypatch.setattr(checkpoints, "save", save)
    assert _train_exit_and_lines(tmp_path, splits5, capsys) == (1, [
        f"error: disk full writing {tmp_path / 'checkpoints'} (No space left on device); free "
        "some space and run the same command to resume"])


# A real full disk: a 200 MB tmpfs in a private mount namespace (room for the preflight's three
# checkpoints), filled by a file once the checkpoint of step 10 is there; then freed for the rerun.
FULL_DISK = r"""
set -u
M=$1; OUT=$2; shift 2
mount -t tmpfs -o size=200m tmpfs "$M" || exit 97
"$@" --workdir="$M/run" > "$OUT/first.log" 2>&1 &
pid=$!
while [ ! -d "$M/run/checkpoints/10" ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done
dd if=/dev/zero of="$M/filler" bs=1M count=400 2>/dev/null
wait $pid; echo $? > "$OUT/first.rc"
rm "$M/filler"
"$@" --workdir="$M/run" > "$OUT/second.log" 2>&1; echo $? > "$OUT/second.rc"
cp -r "$M/run" "$OUT/run"
"""


def _can_mount_tmpfs(tmp_path) -> bool:
    (tmp_path / "probe").mkdir()
    return bool(shutil.which("unshare")) and subprocess.run(
        ["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
         str(tmp_path / "probe")], capture_output=True).returncode == 0


def test_a_real_full_disk_during_a_save_is_one_line_and_the_rerun_is_bit_identical(
        tmp_path, subprocess_env, unbroken_run):
    if not _can_mount_tmpfs(tmp_path):  # the simulated disk-full tests above run everywhere
        pytest.skip("no user namespace to mount a small tmpfs in")
    (tmp_path / "mnt").mkdir()
    cmd = [a for a in pretrain_cmd(tmp_path / "unused") if not a.startswith("--workdir=")]
    subprocess.run(["unshare", "-rm", "sh", "-c", FULL_DISK, "sh", str(tmp_path / "mnt"),
                    str(tmp_path), *cmd], env=subprocess_env, cwd=REPO, check=True, timeout=900)
    first = (tmp_path / "first.log").read_text()
    assert (tmp_path / "first.rc").read_text().strip() == "1", first[-3000:]
    assert "Traceback" not in first, first[-3000:]
    # The checkpoint or the metrics line, whichever write meets the full disk first.
    assert re.fullmatch(rf"error: disk full writing {re.escape(str(tmp_path / 'mnt' / 'run'))}/"
                        r"(checkpoints|metrics\.jsonl) \(No space left on device\); free some "
                        r"space and run the same command to resume",
                        first.strip().splitlines()[-1]), first[-3000:]
    second = (tmp_path / "second.log").read_text()
    assert (tmp_path / "second.rc").read_text().strip() == "0", second[-3000:]
    assert_same_run(unbroken_run, tmp_path / "run")


def test_preflight_says_how_much_disk_the_checkpoints_need(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=100 * 2**20))
    folder = str(tmp_path / "checkpoints")
    workdir_lib.check_free_space(folder, 30 * 2**20, kept=2)  # 3 x 33 MB fit in 100 MB
    with pytest.raises(workdir_lib.DiskFull, match=(
            r"not enough free disk for .*checkpoints: 2 checkpoints kept plus one being written, "
            r"about 40.0 MB each, need 132.0 MB more, 100.0 MB free")):
        workdir_lib.check_free_space(folder, 40 * 2**20, kept=2)
    for step in ("4", "8"):  # a resumed run: two already there, one more is written
        os.makedirs(os.path.join(folder, step))
    workdir_lib.check_free_space(folder, 40 * 2**20, kept=2)


def test_small_files_are_replaced_whole_and_a_cut_metrics_line_is_dropped(tmp_path, caplog):
    path = tmp_path / "summary.json"
    workdir_lib.write_json(str(path), {"a": 1})
    workdir_lib.write_json(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and os.listdir(tmp_path) == ["summary.json"]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 10}\n{"step": 20}\n{"step": 30, "val')
    assert workdir_lib.read_metrics(str(metrics), 20) == ['{"step": 10}\n', '{"step": 20}\n']
    assert f"{metrics}: dropped 1 cut line(s) (line 3)" in caplog.text


def test_the_first_fault_is_the_one_named():
    """A log closed on the same full disk while the failed save unwinds must not hide the save."""
    try:
        try:
            raise workdir_lib.DiskFull("disk full writing checkpoints")
        except workdir_lib.DiskFull:
            raise workdir_lib.DiskFull("disk full writing metrics.jsonl")
    except workdir_lib.DiskFull as e:
        assert str(workdir_lib.fault_in(e)) == "disk full writing checkpoints"
    assert workdir_lib.fault_in(ValueError("x")) is None

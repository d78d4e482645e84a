"""Damaged checkpoints and a missing or stale config.json, each on a copy of one finished tiny run
(checkpoints at 8 and 12 kept): a bad newest checkpoint is set aside with one line and the re-run
resumes from the one before, ending bit-identical to the unbroken run; the resume guard reads the
config saved inside the checkpoint. (Kills and SIGTERM: tests/train/test_restart.py.)"""

import json
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import loop
from tcdcn_jax.train import setup
from tests.support import tiny_config

RUN = dict(num_steps=12, eval_every=4, log_every=4, checkpoint_every=4)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, splits5):
    """(workdir, summary) of the run every fault is compared with."""
    workdir = tmp_path_factory.mktemp("unbroken") / "run"
    summary = loop.train_and_evaluate(tiny_config(**RUN), str(workdir), splits5)
    assert checkpoints.manager(str(workdir)).all_steps() == [8, 12]
    return workdir, summary


def _copy(unbroken, tmp_path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(unbroken[0], workdir)
    (workdir / "summary.json").unlink()
    return workdir


def _data_file(step_dir: Path) -> Path:
    """The largest array file of a step: the params' bytes."""
    return max((p for p in (step_dir / "default").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def _flip_a_bit(step_dir: Path) -> None:
    path = _data_file(step_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _truncate(step_dir: Path) -> None:
    path = _data_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _no_commit_marker(step_dir: Path) -> None:
    (step_dir / checkpoints.COMMIT_MARKER).unlink()


def _no_digest(step_dir: Path) -> None:
    """A kill between orbax's commit and the digest."""
    (step_dir / checkpoints.DIGEST_FILE).unlink()


def _resume(workdir: Path, splits, caplog) -> dict:
    caplog.set_level(logging.INFO, logger="absl")
    return loop.train_and_evaluate(tiny_config(**RUN), str(workdir), splits)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.pathname.endswith("train/checkpoints.py")]


def _assert_same_run(unbroken, workdir: Path, summary: dict) -> None:
    expected = unbroken[1]
    assert summary["steps"] == expected["steps"] == 12
    assert summary["test"] == expected["test"]
    assert summary["task_stopped_at"] == expected["task_stopped_at"]
    _, want = checkpoints.load_params(str(unbroken[0]))
    step, got = checkpoints.load_params(str(workdir))
    assert step == 12
    jax.tree_util.tree_map(np.testing.assert_array_equal, want, got)


@pytest.mark.parametrize("damage, name, reason", [
    (_flip_a_bit, "digest-mismatch", "differs from its digest"),
    (_truncate, "digest-mismatch", "differs from its digest"),
    (_no_commit_marker, "no-commit-marker", "no commit_success.txt"),
    (_no_digest, "no-digest", "no digest.json"),
])
def test_a_bad_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
        unbroken, splits5, tmp_path, caplog, damage, name, reason):
    workdir = _copy(unbroken, tmp_path)
    newest = workdir / "checkpoints" / "12"
    damage(newest)
    kept = checkpoints.latest_step_path(checkpoints.manager(str(workdir)))
    assert kept == str(workdir / "checkpoints" / "8") and newest.is_dir(), "naming moves nothing"

    summary = _resume(workdir, splits5, caplog)
    _assert_same_run(unbroken, workdir, summary)
    aside = workdir / "checkpoints_set_aside" / f"12.{name}"
    assert aside.is_dir(), "set aside, never deleted"
    lines = _warnings(caplog)
    assert len(lines) == 1 and lines[0].startswith(f"checkpoint {newest} is bad (") and (
        reason in lines[0])
    assert lines[0].endswith(f"set aside as {aside}; trying the one before")
    assert "resumed from step 8" in caplog.text
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12]


def test_with_every_checkpoint_bad_the_run_starts_again_from_step_0(unbroken, splits5, tmp_path,
                                                                     caplog):
    workdir = _copy(unbroken, tmp_path)
    _flip_a_bit(workdir / "checkpoints" / "12")
    _truncate(workdir / "checkpoints" / "8")
    summary = _resume(workdir, splits5, caplog)
    _assert_same_run(unbroken, workdir, summary)
    assert sorted(p.name for p in (workdir / "checkpoints_set_aside").iterdir()) == [
        "12.digest-mismatch", "8.digest-mismatch"]
    assert len(_warnings(caplog)) == 3 and _warnings(caplog)[-1] == (
        f"no good checkpoint left under {workdir / 'checkpoints'}: training starts from step 0")
    assert "resumed from" not in caplog.text


def test_deleting_config_json_leaves_the_resume_guard_on(unbroken, splits5, tmp_path):
    workdir = _copy(unbroken, tmp_path)
    (workdir / "config.json").unlink()
    with pytest.raises(setup.ConfigMismatchError, match=r"learning_rate: 0.002 -> 0.01"):
        loop.train_and_evaluate(tiny_config(**RUN, learning_rate=0.01), str(workdir), splits5)
    assert checkpoints.manager(str(workdir)).all_steps() == [8, 12]


def test_the_config_json_of_a_run_that_never_saved_refuses_nothing(unbroken, splits5, tmp_path,
                                                                     caplog):
    """What a run that failed before its first checkpoint leaves: config.json alone (here with
    another batch size, as after a batch the devices cannot split)."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    checkpoints.write_config(str(workdir), tiny_config(**RUN, batch_size=15))
    summary = _resume(workdir, splits5, caplog)
    _assert_same_run(unbroken, workdir, summary)


def test_a_good_checkpoint_that_does_not_fit_the_run_raises_and_stays(unbroken, splits5, tmp_path):
    """Its files are the ones saved: the model changed, not the checkpoint; setting it aside would
    silently restart the run."""
    workdir = _copy(unbroken, tmp_path)
    with pytest.raises(ValueError, match=r"checkpoints/12 verifies but does not fit this run's"):
        loop.train_and_evaluate(tiny_config(**RUN, aux_tasks="pose"), str(workdir), splits5,
                                allow_config_change=True)
    assert checkpoints.manager(str(workdir)).all_steps() == [8, 12]
    assert not (workdir / "checkpoints_set_aside").exists()

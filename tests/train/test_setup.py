"""Before the first step: config checks, what build makes, the resume guard and finished runs, and the
log filter; none of it trains."""

import json
import logging
import shutil

import numpy as np
import pytest

from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import loop
from tcdcn_jax.train import setup
from tests.support import tiny_config


def test_build_makes_the_model_step_config_and_state_the_config_describes(splits5):
    config = tiny_config(aux_tasks="pose,smile", task_lambda=0.3, augment={"flip": True})
    model, step_cfg, state = setup.build(config, splits5)
    assert (model.trunk, model.num_landmarks, dict(model.aux_tasks)) == ("eccv", 5, {"pose": 5,
                                                                                      "smile": 2})
    assert step_cfg.aux_tasks == ("pose", "smile") and step_cfg.task_lambdas == (0.3, 0.3)
    assert step_cfg.input_size == 40 and step_cfg.flip_perm == (1, 0, 2, 4, 3)
    assert int(state.step) == 0 and state.task_stop.stopped_A.shape == (2,)
    assert sorted(state.params["heads"]) == ["landmarks", "pose", "smile"]


def test_bad_config_fails_clearly(splits5):
    with pytest.raises(ValueError, match="no labels for auxiliary tasks"):
        setup.build(tiny_config(aux_tasks="pose,age"), splits5)
    with pytest.raises(ValueError, match="strip_length"):
        setup.build(tiny_config(es_strip=1), splits5)
    with pytest.raises(ValueError, match="batch_size"):
        setup.build(tiny_config(batch_size=0), splits5)


def _checkpointed(workdir, config):
    """A workdir whose checkpoint holds `config` (the params do not matter to the guard)."""
    checkpoints.write_weights(str(workdir), {"w": np.zeros(2, np.float32)}, config)


def test_check_resumable_refuses_another_config_and_names_the_fields(tmp_path):
    setup.check_resumable(tiny_config(), str(tmp_path))  # an empty workdir takes any config
    _checkpointed(tmp_path, tiny_config())
    setup.check_resumable(tiny_config(), str(tmp_path))
    # Bookkeeping fields may change: they do not change what is trained.
    setup.check_resumable(tiny_config(log_every=2, eval_batch_size=8, data_dir="/elsewhere"),
                          str(tmp_path))
    with pytest.raises(setup.ConfigMismatchError,
                       match=r"learning_rate: 0.002 -> 0.01; num_steps: 8 -> 9; from its newest "
                             r"checkpoint\)"):
        setup.check_resumable(tiny_config(learning_rate=0.01, num_steps=9), str(tmp_path))
    with pytest.raises(setup.ConfigMismatchError, match=r"augment: .*'flip': True"):
        setup.check_resumable(tiny_config(augment={"flip": True}), str(tmp_path))
    setup.check_resumable(tiny_config(learning_rate=0.01), str(tmp_path), allow_config_change=True)


def test_check_resumable_reads_the_checkpoint_not_the_loose_config(tmp_path):
    """Deleting config.json leaves the guard on; a config.json without a checkpoint (a run that
    failed before its first save) refuses nothing."""
    _checkpointed(tmp_path / "run", tiny_config())
    (tmp_path / "run" / "config.json").unlink()
    with pytest.raises(setup.ConfigMismatchError, match=r"learning_rate: 0.002 -> 0.01"):
        setup.check_resumable(tiny_config(learning_rate=0.01), str(tmp_path / "run"))
    checkpoints.write_config(str(tmp_path), tiny_config(batch_size=7))
    setup.check_resumable(tiny_config(), str(tmp_path))


def test_a_run_refuses_another_config_before_it_starts(splits5, tmp_path):
    _checkpointed(tmp_path, tiny_config())
    with pytest.raises(setup.ConfigMismatchError, match=r"learning_rate: 0.002 -> 0.01"):
        loop.train_and_evaluate(tiny_config(learning_rate=0.01), str(tmp_path), splits5)
    assert checkpoints.manager(str(tmp_path)).all_steps() == [0]


def test_finished_summary_keeps_a_finished_run_of_the_same_config_only(tmp_path):
    config = tiny_config()
    assert setup.finished_summary(config, str(tmp_path)) is None  # nothing there: train
    _checkpointed(tmp_path, config)
    assert setup.finished_summary(config, str(tmp_path)) is None  # half done: resume
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 8}))
    assert setup.finished_summary(config, str(tmp_path)) == {"steps": 8}
    other = tiny_config(num_steps=9)
    with pytest.raises(setup.ConfigMismatchError, match="num_steps: 8 -> 9"):
        setup.finished_summary(other, str(tmp_path))
    # Allowed: the run trains on (from its checkpoint) under the new config.
    assert setup.finished_summary(other, str(tmp_path), allow_config_change=True) is None
    # Its checkpoints gone, the workdir's config.json tells whose summary it is; with neither, it
    # is taken as it is.
    shutil.rmtree(tmp_path / "checkpoints")
    assert setup.finished_summary(config, str(tmp_path)) == {"steps": 8}
    with pytest.raises(setup.ConfigMismatchError, match=r"num_steps: 8 -> 9; from config.json"):
        setup.finished_summary(other, str(tmp_path))
    (tmp_path / "config.json").unlink()
    assert setup.finished_summary(other, str(tmp_path)) == {"steps": 8}


def test_quiet_library_logs_drops_orbax_info_and_tracebacks_only_and_is_added_once():
    absl_logger = logging.getLogger("absl")
    setup.quiet_library_logs()
    setup.quiet_library_logs()
    assert absl_logger.filters.count(setup._not_orbax_info) == 1

    def record(level, path):
        return logging.LogRecord("absl", level, path, 1, "m", None, None)

    assert not absl_logger.filter(record(logging.INFO, "/x/orbax/checkpoint/manager.py"))
    assert absl_logger.filter(record(logging.WARNING, "/x/orbax/checkpoint/manager.py"))
    assert absl_logger.filter(record(logging.INFO, "/x/tcdcn_jax/train/loop.py"))
    error = record(logging.ERROR, "/x/orbax/checkpoint/manager.py")
    error.exc_info = (OSError, OSError(28, "No space left on device"), None)
    assert absl_logger.filter(error) and error.exc_info is None  # one line, no traceback

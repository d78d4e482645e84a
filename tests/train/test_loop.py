"""The training path: one step's golden values, no recompile when a task stops, save/resume, outputs."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.configs.pretrain import get_config
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import early_stopping
from tcdcn_jax.train import steps as steps_lib
from tcdcn_jax.train import loop
from tcdcn_jax.data.pipeline import ArrayDataset, BatchIterator
from tcdcn_jax.data.sources import Splits

TASKS = ("pose", "gender", "glasses", "smile")


def _dataset(n: int, seed: int) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    box = np.tile(np.array([16, 16, 48, 48], np.float32), (n, 1))
    lm = box[:, None, :2] + rng.uniform(0.2, 0.8, (n, 5, 2)).astype(np.float32) * 48
    arrays = dict(image=rng.integers(0, 255, (n, 80, 80), dtype=np.uint8), box=box, landmarks=lm)
    for task, classes in zip(TASKS, (5, 2, 2, 2)):
        arrays[task] = rng.integers(0, classes, n).astype(np.int32)
    return ArrayDataset(arrays)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return Splits(_dataset(128, 0), _dataset(40, 1), _dataset(40, 2), num_landmarks=5)


def tiny_config(**overrides):
    c = get_config()
    c.num_steps, c.batch_size, c.eval_every, c.log_every, c.checkpoint_every = 8, 16, 4, 4, 4
    c.eval_batch_size, c.warmup_steps, c.es_strip = 16, 2, 2
    c.update(overrides)
    return c


def _steps_and_state(config, splits):
    _, step_cfg, state = loop.build(config, splits)
    runner = steps_lib.Steps(step_cfg, steps_lib.make_mesh())
    return runner, runner.put_state(state)


def _batch(config, splits, runner, step):
    batch = BatchIterator(splits.train, config.batch_size, config.seed).batch_at(step)
    return runner.put_batch(batch)


def test_one_train_step_golden_values(splits):
    config = tiny_config()
    runner, state = _steps_and_state(config, splits)
    state, m = runner.train(state, _batch(config, splits, runner, 0))
    fc = np.asarray(state.params["trunk"]["fc"]["kernel"])
    # Golden values for seed 0 on jax 0.10 / flax 0.12 (CPU). If a dependency upgrade or a deliberate
    # change of init, augmentation or loss moves them, check the change is intended, then update.
    np.testing.assert_allclose(float(m["loss"]), GOLDEN["loss"], rtol=1e-4)
    np.testing.assert_allclose(float(m["landmark_loss"]), GOLDEN["landmark_loss"], rtol=1e-4)
    np.testing.assert_allclose(float(np.abs(fc).sum()), GOLDEN["fc_abs_sum"], rtol=1e-4)
    assert int(state.step) == 1
    assert int(state.task_stop.period_steps) == 1


GOLDEN = {"loss": 1.891710, "landmark_loss": 1.519470, "fc_abs_sum": 1478.2334}


def test_stopping_a_task_does_not_recompile_and_freezes_its_head(splits):
    config = tiny_config()
    runner, state = _steps_and_state(config, splits)
    state, _ = runner.train(state, _batch(config, splits, runner, 0))
    traces = steps_lib.TRACE_COUNT["train_step"]
    stopped = state.task_stop.stopped_A.at[TASKS.index("glasses")].set(True)
    state = state.replace(task_stop=state.task_stop._replace(stopped_A=stopped))
    head_before = jax.device_get(state.params["heads"]["glasses"])
    pose_before = jax.device_get(state.params["heads"]["pose"])
    for step in range(1, 4):
        state, _ = runner.train(state, _batch(config, splits, runner, step))
    assert steps_lib.TRACE_COUNT["train_step"] == traces, "stopping a task recompiled the step"
    head_after = jax.device_get(state.params["heads"]["glasses"])
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(head_after[name], head_before[name])
    assert not np.allclose(jax.device_get(state.params["heads"]["pose"])["kernel"],
                           pose_before["kernel"])


def test_stopped_tasks_leave_the_trunk_gradient(splits):
    """With every task stopped, the trunk moves exactly as in a landmarks-only run of the same batch."""
    config = tiny_config(weight_decay=0.0, warmup_steps=0)
    runner, state = _steps_and_state(config, splits)
    params = jax.device_get(state.params)  # a host copy: the step donates the state's buffers
    lm_params = {"trunk": params["trunk"], "heads": {"landmarks": params["heads"]["landmarks"]}}
    rng = jax.device_get(state.rng)
    all_stopped = state.task_stop._replace(stopped_A=jnp.ones_like(state.task_stop.stopped_A))
    s_stopped, _ = runner.train(state.replace(task_stop=all_stopped),
                                _batch(config, splits, runner, 0))

    lm_runner, lm_state = _steps_and_state(tiny_config(weight_decay=0.0, warmup_steps=0,
                                                       aux_tasks=""), splits)
    lm_state = lm_runner.put_state(lm_state.replace(
        params=lm_params, opt_state=lm_state.tx.init(lm_params), rng=rng))
    s_lm, _ = lm_runner.train(lm_state, _batch(config, splits, lm_runner, 0))
    moved = jax.device_get(s_lm.params["trunk"])
    assert not np.allclose(moved["fc"]["kernel"], params["trunk"]["fc"]["kernel"])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           jax.device_get(s_stopped.params["trunk"]), moved)


def _run(config, splits, workdir):
    summary = loop.train_and_evaluate(config, str(workdir), splits)
    _, params = checkpoints.restore_params(str(workdir))
    return summary, params


def test_run_outputs_and_resume_is_bit_identical(splits, tmp_path, monkeypatch):
    config = tiny_config()
    full, full_params = _run(config, splits, tmp_path / "full")

    # The same run, killed right after its checkpoint at step 4, then restarted with the same command.
    class Killed(Exception):
        pass

    real_save = checkpoints.save

    def save_then_die(mngr, state, **kw):
        real_save(mngr, state, **kw)
        if int(state.step) == 4:
            raise Killed

    monkeypatch.setattr(checkpoints, "save", save_then_die)
    with pytest.raises(Killed):
        loop.train_and_evaluate(config, str(tmp_path / "resumed"), splits)
    monkeypatch.setattr(checkpoints, "save", real_save)
    resumed, resumed_params = _run(config, splits, tmp_path / "resumed")

    jax.tree_util.tree_map(np.testing.assert_array_equal, full_params, resumed_params)
    for key in ("nme", "failure_rate", "mean_shape_nme", "accuracy"):
        assert full["test"][key] == resumed["test"][key]

    workdir = tmp_path / "full"
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 8
    for key in ("nme", "failure_rate", "mean_shape_nme", "per_landmark_nme", "accuracy"):
        assert key in summary["test"]
    assert len(summary["test"]["per_landmark_nme"]) == 5
    assert set(summary["test"]["accuracy"]) == set(TASKS)
    assert set(summary["task_stopped_at"]) == set(TASKS)
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8]
    for r in lines:
        assert set(r["train_loss"]) == {"landmarks", *TASKS}
        assert set(r["val_loss"]) == {"landmarks", *TASKS}
        assert np.isfinite(r["val_nme"])
    assert os.listdir(workdir / "tb")


def test_early_stopping_in_a_run_follows_the_criterion(splits, tmp_path):
    """Each evaluation stops exactly the running tasks whose Eq. 5 value exceeds epsilon, once the
    strip is full, and summary.json records the step of the stop."""
    epsilon = 1e-3
    config = tiny_config(es_epsilon=epsilon, eval_every=2, num_steps=12)
    summary = loop.train_and_evaluate(config, str(tmp_path), splits)
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    on = list(TASKS)
    stopped_at = {}
    for i, r in enumerate(records):
        if i + 1 >= config.es_strip:
            for t in list(on):
                if r["criterion"][t] > epsilon:
                    on.remove(t)
                    stopped_at[t] = r["step"]
        assert r["tasks_on"] == on
    assert stopped_at, "the test needs at least one stop to mean something"
    assert {t: s for t, s in summary["task_stopped_at"].items() if s is not None} == stopped_at


def test_bad_config_fails_clearly(splits, tmp_path):
    with pytest.raises(ValueError, match="no labels for auxiliary tasks"):
        loop.build(tiny_config(aux_tasks="pose,age"), splits)
    with pytest.raises(ValueError, match="strip_length"):
        loop.build(tiny_config(es_strip=1), splits)
    with pytest.raises(ValueError, match="batch_size"):
        loop.build(tiny_config(batch_size=0), splits)


def test_a_landmarks_only_run_saves_and_resumes(splits, tmp_path):
    """No auxiliary task: the empty task-stop state stays out of the checkpoint and comes back."""
    config = tiny_config(aux_tasks="", num_steps=4)
    loop.train_and_evaluate(config, str(tmp_path), splits)
    summary = loop.train_and_evaluate(tiny_config(aux_tasks="", num_steps=6), str(tmp_path), splits,
                                       allow_config_change=True)
    assert summary["steps"] == 6 and summary["task_stopped_at"] == {}

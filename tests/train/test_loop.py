"""The training path: one step's golden values, no recompile when a task stops, a run's outputs and its
early stopping, a landmarks-only save/resume, and a non-finite loss. The resume of a killed run is
tests/train/test_restart.py's."""

import json
import re
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import loop
from tcdcn_jax.train import losses
from tcdcn_jax.train import setup
from tcdcn_jax.train import steps as steps_lib
from tcdcn_jax.data.pipeline import BatchIterator
from tests.support import TASKS, tiny_config


def _steps_and_state(config, splits):
    _, step_cfg, state = setup.build(config, splits)
    runner = steps_lib.Steps(step_cfg, steps_lib.make_mesh())
    return runner, runner.put_state(state)


def _batch(config, splits, runner, step):
    batch = BatchIterator(splits.train, config.batch_size, config.seed).batch_at(step)
    return runner.put_batch(batch)


def test_one_train_step_golden_values(splits5):
    config = tiny_config()
    runner, state = _steps_and_state(config, splits5)
    state, m = runner.train(state, _batch(config, splits5, runner, 0))
    fc = np.asarray(state.params["trunk"]["fc"]["kernel"])
    # Golden values for seed 0 on jax 0.10 / flax 0.12 (CPU). If a dependency upgrade or a deliberate
    # change of init, augmentation or loss moves them, check the change is intended, then update.
    np.testing.assert_allclose(float(m["loss"]), GOLDEN["loss"], rtol=1e-4)
    np.testing.assert_allclose(float(m["landmark_loss"]), GOLDEN["landmark_loss"], rtol=1e-4)
    np.testing.assert_allclose(float(np.abs(fc).sum()), GOLDEN["fc_abs_sum"], rtol=1e-4)
    assert int(state.step) == 1
    assert int(state.task_stop.period_steps) == 1


# fc_abs_sum is 1478.2334 at init: the step moves it (the tiny config's learning rate is constant, so
# step 0 is not a warm-up step of rate 0).
GOLDEN = {"loss": 1.891678, "landmark_loss": 1.519440, "fc_abs_sum": 1476.9618}


def test_stopping_a_task_does_not_recompile_and_freezes_its_head(splits5, monkeypatch):
    chex.clear_trace_counter()
    monkeypatch.setattr(steps_lib, "train_step", chex.assert_max_traces(steps_lib.train_step, n=1))
    config = tiny_config()
    runner, state = _steps_and_state(config, splits5)
    state, _ = runner.train(state, _batch(config, splits5, runner, 0))
    stopped = state.task_stop.stopped_A.at[TASKS.index("glasses")].set(True)
    state = state.replace(task_stop=state.task_stop._replace(stopped_A=stopped))
    head_before = jax.device_get(state.params["heads"]["glasses"])
    pose_before = jax.device_get(state.params["heads"]["pose"])
    for step in range(1, 4):
        state, _ = runner.train(state, _batch(config, splits5, runner, step))  # no second trace
    head_after = jax.device_get(state.params["heads"]["glasses"])
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(head_after[name], head_before[name])
    assert not np.allclose(jax.device_get(state.params["heads"]["pose"])["kernel"],
                           pose_before["kernel"])
    # The guard is live: a batch of another size must be traced again, and is caught.
    half = jax.tree_util.tree_map(lambda v: v[:8], _batch(config, splits5, runner, 4))
    with pytest.raises(AssertionError, match="traced > 1 times"):
        runner.train(state, half)


def test_stopped_tasks_leave_the_trunk_gradient(splits5):
    """With every task stopped, the trunk moves exactly as in a landmarks-only run of the same batch
    (weight decay included: a stopped head's kernels leave the decay term with its loss)."""
    config = tiny_config()
    runner, state = _steps_and_state(config, splits5)
    params = jax.device_get(state.params)  # a host copy: the step donates the state's buffers
    lm_params = {"trunk": params["trunk"], "heads": {"landmarks": params["heads"]["landmarks"]}}
    rng = jax.device_get(state.rng)
    all_stopped = state.task_stop._replace(stopped_A=jnp.ones_like(state.task_stop.stopped_A))
    s_stopped, _ = runner.train(state.replace(task_stop=all_stopped),
                                _batch(config, splits5, runner, 0))

    lm_runner, lm_state = _steps_and_state(tiny_config(aux_tasks=""), splits5)
    lm_state = lm_runner.put_state(lm_state.replace(
        params=lm_params, opt_state=lm_state.tx.init(lm_params), rng=rng))
    s_lm, _ = lm_runner.train(lm_state, _batch(config, splits5, lm_runner, 0))
    moved = jax.device_get(s_lm.params["trunk"])
    assert not np.allclose(moved["fc"]["kernel"], params["trunk"]["fc"]["kernel"])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           jax.device_get(s_stopped.params["trunk"]), moved)


ES_EPSILON = 1e-3


@pytest.fixture(scope="module")
def es_run(splits5, tmp_path_factory):
    """(config, workdir, summary) of a 12-step run with an evaluation every 2 steps and an epsilon
    small enough that tasks stop."""
    config = tiny_config(es_epsilon=ES_EPSILON, eval_every=2, num_steps=12)
    workdir = tmp_path_factory.mktemp("es_run")
    return config, workdir, loop.train_and_evaluate(config, str(workdir), splits5)


def test_a_run_writes_its_outputs(es_run):
    config, workdir, summary = es_run
    assert json.loads((workdir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["steps"] == 12 and summary["devices"].startswith("1 x ")
    test = summary["test"]
    assert test["num_faces"] == 40 and len(test["per_landmark_nme"]) == 5
    np.testing.assert_allclose(np.mean(test["per_landmark_nme"]), test["nme"], rtol=1e-5)
    assert 0 <= test["failure_rate"] <= 1 and set(test["accuracy"]) == set(TASKS)
    assert all(0 <= a <= 1 for a in test["accuracy"].values())
    assert set(summary["task_stopped_at"]) == set(TASKS)
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    for r in records:
        assert set(r["train_loss"]) == set(r["val_loss"]) == {"landmarks", *TASKS}
        assert all(np.isfinite(v) for v in r["val_loss"].values()) and np.isfinite(r["val_nme"])
    events = [p.name for p in (workdir / "tb").iterdir()]
    assert len(events) == 1 and events[0].startswith("events.out.tfevents.")
    assert checkpoints.read_config(str(workdir)).to_dict() == json.loads(config.to_json())
    # max_to_keep=2: the two latest of the checkpoints at 4, 8 and 12.
    assert checkpoints.manager(str(workdir)).all_steps() == [8, 12]


def test_early_stopping_in_a_run_follows_the_criterion(es_run):
    """Each evaluation stops exactly the running tasks whose Eq. 5 value exceeds epsilon, once the
    strip is full, and summary.json records the step of the stop."""
    config, workdir, summary = es_run
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    on = list(TASKS)
    stopped_at = {}
    for i, r in enumerate(records):
        if i + 1 >= config.es_strip:
            for t in list(on):
                if r["criterion"][t] > ES_EPSILON:
                    on.remove(t)
                    stopped_at[t] = r["step"]
        assert r["tasks_on"] == on
    assert stopped_at, "the test needs at least one stop to mean something"
    assert {t: s for t, s in summary["task_stopped_at"].items() if s is not None} == stopped_at


def test_non_finite_loss_stops_with_the_step_and_keeps_the_good_checkpoint(es_run, splits5,
                                                                           tmp_path, monkeypatch):
    config, finished, _ = es_run
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    good = checkpoints.load_params(str(workdir))

    real = losses.landmark_loss
    monkeypatch.setattr(losses, "landmark_loss", lambda *a, **k: real(*a, **k) * jnp.nan)
    # Logged every step (a bookkeeping field), the first bad step is the one named.
    longer = tiny_config(es_epsilon=ES_EPSILON, eval_every=4, log_every=1, num_steps=20)
    kept = f"the last good checkpoint is kept: {workdir / 'checkpoints' / '12'}"
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 13 in .*landmark_loss.*"
                       + re.escape(kept) + "$"):
        loop.train_and_evaluate(longer, str(workdir), splits5, allow_config_change=True)
    step, params = checkpoints.load_params(str(workdir))
    assert step == good[0] == 12
    jax.tree_util.tree_map(np.testing.assert_array_equal, good[1], params)


def test_a_landmarks_only_run_saves_and_resumes(splits5, tmp_path):
    """No auxiliary task: the empty task-stop state stays out of the checkpoint and comes back."""
    config = tiny_config(aux_tasks="", num_steps=4)
    loop.train_and_evaluate(config, str(tmp_path), splits5)
    summary = loop.train_and_evaluate(tiny_config(aux_tasks="", num_steps=6), str(tmp_path), splits5,
                                      allow_config_change=True)
    assert summary["steps"] == 6 and summary["task_stopped_at"] == {}
    assert checkpoints.manager(str(tmp_path)).all_steps() == [4, 6]

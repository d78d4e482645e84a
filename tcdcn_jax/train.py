"""train_and_evaluate(config, workdir): the training loop shared by pretraining and fine-tuning.

Leaves in workdir: checkpoints/ (orbax), metrics.jsonl (one line per evaluation), tb/ (TensorBoard
scalars), config.json and, at the end, summary.json.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from tcdcn_jax import checkpointing, early_stopping, evaluation, losses, models, steps as steps_lib
from tcdcn_jax import train_state as ts
from tcdcn_jax.data import augment, sources
from tcdcn_jax.data.pipeline import BatchIterator
from tcdcn_jax.layouts import get_layout


def aux_task_names(config) -> tuple[str, ...]:
    """config.aux_tasks as a tuple: a comma-separated string ('' for none) or a sequence."""
    tasks = config.aux_tasks
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    return tuple(tasks)


def _augment_config(config) -> augment.AugmentConfig:
    a = config.augment
    return augment.AugmentConfig(max_shift=a.max_shift, max_rotation_deg=a.max_rotation_deg,
                                 scale_range=(a.scale_min, a.scale_max), flip=a.flip)


def _check_config(config, splits: sources.Splits, aux_tasks: tuple[str, ...]) -> None:
    for key in ("num_steps", "batch_size", "eval_every", "log_every", "checkpoint_every"):
        if int(config[key]) < 1:
            raise ValueError(f"config.{key} must be >= 1, got {config[key]}")
    missing = [t for t in aux_tasks if t not in splits.train.arrays]
    if missing:
        raise ValueError(f"dataset {config.dataset!r} has no labels for auxiliary tasks {missing}")
    early_stopping.check_hparams(config.es_strip, config.es_epsilon)


class _Logger:
    """metrics.jsonl, TensorBoard scalars and the progress line."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self.tb = SummaryWriter(os.path.join(workdir, "tb"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.tb.add_scalar(name, value, step)

    def record(self, record: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        self.jsonl.close()
        self.tb.close()


def quiet_library_logs() -> None:
    """Keeps orbax's per-save INFO chatter out of the progress log (warnings still show)."""
    import logging as pylogging

    def keep(record: pylogging.LogRecord) -> bool:
        return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname

    pylogging.getLogger("absl").addFilter(keep)


def _fail_if_not_finite(step: int, values: dict[str, float]) -> None:
    bad = [name for name, v in values.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite loss at step {step} in {bad}: {values}; "
                                 "the last good checkpoint is kept")


def build(config, splits: sources.Splits):
    """The model, step config and fresh train state a config describes."""
    aux_tasks = aux_task_names(config)
    _check_config(config, splits, aux_tasks)
    model = models.make_model(splits.num_landmarks, aux_tasks, config.trunk, config.activation,
                              config.features or None, config.learn_task_weights)
    size = models.input_size(config.trunk)
    tx = ts.make_optimizer(config.optimizer, config.learning_rate, config.num_steps,
                           config.schedule, config.warmup_steps, config.momentum,
                           config.get("trunk_lr_multiplier", 1.0))
    state = ts.create(model, tx, jax.random.PRNGKey(config.seed), size, aux_tasks, config.es_strip)
    flip_perm = get_layout(splits.num_landmarks).flip_perm if config.augment.flip else None
    step_cfg = steps_lib.StepConfig(
        aux_tasks=aux_tasks, task_lambdas=tuple(float(config.task_lambda) for _ in aux_tasks),
        weight_decay=float(config.weight_decay), input_size=size, augment=_augment_config(config),
        flip_perm=tuple(flip_perm) if flip_perm is not None else None)
    return model, step_cfg, state


def train_and_evaluate(config, workdir: str, splits: sources.Splits | None = None,
                       init_params=None) -> dict[str, Any]:
    """Trains (resuming from workdir's latest checkpoint), evaluates on the test split, writes summary.json.

    `init_params`, when given, replaces the fresh params before training (transfer); a resumed run
    ignores it, since its checkpoint already holds the trained params.
    """
    os.makedirs(workdir, exist_ok=True)
    quiet_library_logs()
    devices = jax.devices()
    logging.info("devices: %d x %s (%s)", len(devices), devices[0].device_kind, devices[0].platform)
    t_start = time.time()
    splits = splits or sources.load(config)
    model, step_cfg, state = build(config, splits)
    aux_tasks = step_cfg.aux_tasks
    if init_params is not None:
        state = state.replace(params=init_params, opt_state=state.tx.init(init_params))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))

    mngr = checkpointing.manager(workdir)
    restored = checkpointing.restore_latest(mngr, state)
    if restored is not None:
        state = restored
        logging.info("resumed from step %d", int(state.step))
    runner = steps_lib.Steps(step_cfg, steps_lib.make_mesh())
    state = runner.put_state(state)
    keys = ("image", "box", "landmarks", *aux_tasks)
    batches = BatchIterator(splits.train, int(config.batch_size), int(config.seed))
    es_update = jax.jit(early_stopping.update, static_argnames="epsilon")
    epsilon = float(config.es_epsilon) if config.early_stopping else math.inf
    lambda_fixed = jnp.asarray(step_cfg.task_lambdas, jnp.float32)
    log = _Logger(workdir)
    lm_sum, lm_count, t_log, step_log = jnp.zeros(()), 0, time.time(), int(state.step)

    start = int(state.step)
    for step in range(start, int(config.num_steps)):
        batch = runner.put_batch(batches.batch_at(step))
        state, m = runner.train(state, {k: batch[k] for k in keys})
        lm_sum, lm_count = lm_sum + m["landmark_loss"], lm_count + 1
        done = step + 1
        if done % config.log_every == 0 or done == config.num_steps:
            host = {k: float(v) for k, v in jax.device_get(m).items() if np.ndim(v) == 0}
            if aux_tasks:
                host.update({f"train_{t}": float(v) for t, v in
                             zip(aux_tasks, jax.device_get(m["task_losses_A"]))})
            _fail_if_not_finite(done, host)
            log.scalars(done, {f"train/{k}": v for k, v in host.items()})
            rate = (done - step_log) / max(time.time() - t_log, 1e-9)
            t_log, step_log = time.time(), done
            on = [t for t, s in zip(aux_tasks, jax.device_get(state.task_stop.stopped_A)) if not s]
            logging.info("step %d/%d loss %.5f landmarks %.5f %s| %.1f steps/s | tasks on: %s",
                         done, config.num_steps, host["loss"], host["landmark_loss"],
                         "".join(f"{t} {host['train_' + t]:.3f} " for t in aux_tasks), rate,
                         ",".join(on) or "-")
        if done % config.eval_every == 0 or done == config.num_steps:
            period_train = jax.device_get(state.task_stop.period_sum_A /
                                          jnp.maximum(state.task_stop.period_steps, 1))
            pred = evaluation.predict(runner, state.params, state.apply_fn, splits.validation,
                                      int(config.eval_batch_size), keys)
            val = evaluation.summarise(pred, splits.validation, aux_tasks)
            crit = np.zeros(len(aux_tasks))
            if aux_tasks:
                val_A = jnp.asarray([val["loss"][t] for t in aux_tasks], jnp.float32)
                lam_A = losses.task_lambdas(state.params, lambda_fixed)
                task_stop, crit = es_update(state.task_stop, val_A, lam_A, state.step,
                                            epsilon=epsilon)
                state = state.replace(task_stop=task_stop)
            stopped = jax.device_get(state.task_stop.stopped_A)
            record = {
                "step": done,
                "train_loss": {"landmarks": float(lm_sum) / max(lm_count, 1),
                               **{t: float(v) for t, v in zip(aux_tasks, period_train)}},
                "val_loss": val["loss"], "val_nme": val["nme"],
                "val_failure_rate": val["failure_rate"], "val_accuracy": val["accuracy"],
                "tasks_on": [t for t, s in zip(aux_tasks, stopped) if not s],
                "criterion": {t: float(c) for t, c in zip(aux_tasks, jax.device_get(crit))},
            }
            lm_sum, lm_count = jnp.zeros(()), 0
            log.record(record)
            log.scalars(done, {"val/nme": val["nme"], **{f"val/loss_{k}": v for k, v in
                                                         val["loss"].items()}})
            logging.info("eval step %d: val NME %.4f failure %.3f losses %s", done, val["nme"],
                         val["failure_rate"], {k: round(v, 4) for k, v in val["loss"].items()})
        if done % config.checkpoint_every == 0 or done == config.num_steps:
            checkpointing.save(mngr, state)
    log.close()

    pred = evaluation.predict(runner, state.params, state.apply_fn, splits.test,
                              int(config.eval_batch_size), keys)
    test = evaluation.summarise(pred, splits.test, aux_tasks, sources.mean_shape(splits.train))
    stopped_at = jax.device_get(state.task_stop.stopped_at_A)
    summary = {
        "steps": int(state.step),
        "seconds": round(time.time() - t_start, 1),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "test": test,
        "task_stopped_at": {t: (int(s) if s >= 0 else None) for t, s in zip(aux_tasks, stopped_at)},
    }
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    logging.info("test NME %.4f (mean shape %.4f), failure rate %.3f; tasks stopped at %s",
                 test["nme"], test["mean_shape_nme"], test["failure_rate"],
                 summary["task_stopped_at"])
    return summary

"""train_and_evaluate(config, workdir): the training loop shared by pretraining and fine-tuning.

Leaves in workdir: checkpoints/ (orbax), metrics.jsonl (one line per evaluation), tb/ (TensorBoard
scalars), config.json, .lock and, at the end, summary.json. One process at a time (workdir.hold);
nothing is written before workdir.preflight passes; SIGINT and SIGTERM save at the next step
boundary and end the run with `Interrupted`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from tcdcn_jax.data import sources
from tcdcn_jax.data.pipeline import BatchIterator
from tcdcn_jax.eval import evaluate
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import distributed
from tcdcn_jax.train import early_stopping
from tcdcn_jax.train import losses
from tcdcn_jax.train import setup
from tcdcn_jax.train import steps as steps_lib
from tcdcn_jax.train import workdir as workdir_lib

CHECKPOINTS_KEPT = 2  # the newest ones; a save writes one more before the oldest goes


class _Logger:
    """metrics.jsonl, TensorBoard scalars and the progress line."""

    def __init__(self, workdir: str, start_step: int):
        from tensorboardX import SummaryWriter

        if not distributed.is_primary():  # one writer per run; other processes log to the console
            workdir = os.path.join(workdir, f"process_{jax.process_index()}")
            os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, workdir_lib.METRICS_FILE)
        if os.path.exists(self.path):  # drop records a killed run wrote after its last checkpoint
            kept = workdir_lib.read_metrics(self.path, start_step)
            workdir_lib.write_text(self.path, "".join(kept))
        with workdir_lib.writing(self.path):
            self.jsonl = open(self.path, "a")
        self.tb = SummaryWriter(os.path.join(workdir, "tb"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.tb.add_scalar(name, value, step)

    def record(self, record: dict[str, Any]) -> None:
        """One whole line, flushed and fsynced: a kill cuts at most this line (read_metrics)."""
        with workdir_lib.writing(self.path):
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
            os.fsync(self.jsonl.fileno())

    def close(self) -> None:
        with workdir_lib.writing(self.path):
            self.jsonl.close()
            self.tb.close()


def _fail_if_not_finite(step: int, values: dict[str, float], kept: Callable[[], str]) -> None:
    """`kept` names the checkpoint a re-run resumes from; called only when the guard fires (it
    verifies the checkpoint's files)."""
    bad = [name for name, v in values.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite loss at step {step} in {', '.join(bad)}: {values}; "
                                 f"the last good checkpoint is kept: {kept()}")


class Interrupted(Exception):
    """The run stopped on a signal after saving its state; `exit_code` is the shell's 128 + N."""

    def __init__(self, signum: int, step: int, kept: str):
        self.exit_code = 128 + signum
        super().__init__(f"stopped at step {step} by {signal.Signals(signum).name}: checkpoint "
                         f"saved at {kept}; run the same command to resume")


class _StopSignal:
    """SIGINT and SIGTERM as a flag that the loop reads at each step boundary.

    The handler never raises: an exception inside a step comes after its input state was donated,
    and the state to save is gone with it. A second SIGINT raises KeyboardInterrupt at once, for an
    operator who will not wait for the save (the run then resumes from the checkpoint before).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    @property
    def received(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("a second SIGINT")
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


def train_and_evaluate(config, workdir: str, splits: sources.Splits | None = None,
                       init_params=None, allow_config_change: bool = False) -> dict[str, Any]:
    """Trains (resuming from workdir's latest checkpoint), evaluates on the test split, writes summary.json.

    `init_params`, when given, replaces the fresh params before training (transfer); a resumed run
    ignores it, since its checkpoint already holds the trained params. SIGINT or SIGTERM saves a
    checkpoint at the next step boundary, then raises `Interrupted`. The workdir is locked for the
    whole call (by the primary process): a second run on it raises workdir.WorkdirInUse.
    """
    if not distributed.is_primary():
        os.makedirs(workdir, exist_ok=True)
        return _train_and_evaluate(config, workdir, splits, init_params, allow_config_change)
    with workdir_lib.hold(workdir):
        return _train_and_evaluate(config, workdir, splits, init_params, allow_config_change)


def _train_and_evaluate(config, workdir, splits, init_params, allow_config_change):
    setup.quiet_library_logs()
    setup.check_resumable(config, workdir, allow_config_change)
    devices = jax.devices()
    logging.info("devices: %d x %s (%s)", len(devices), devices[0].device_kind, devices[0].platform)
    t_start = time.time()
    splits = splits or sources.load(config)
    _, step_cfg, state = setup.build(config, splits)
    if init_params is not None:
        state = state.replace(params=init_params, opt_state=state.tx.init(init_params))
    mesh = steps_lib.make_mesh()
    ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
    if distributed.is_primary():
        size = workdir_lib.checkpoint_bytes(
            (state.params, state.opt_state, state.task_stop, state.rng))
        workdir_lib.preflight(workdir, ckpt_dir, size, CHECKPOINTS_KEPT, mesh.devices.size,
                              int(config.batch_size), int(config.eval_batch_size))
        checkpoints.write_config(workdir, config)
    else:
        workdir_lib.check_batch_split(mesh.devices.size, batch_size=int(config.batch_size),
                                      eval_batch_size=int(config.eval_batch_size))

    mngr = checkpoints.manager(workdir, CHECKPOINTS_KEPT)
    restored = checkpoints.restore_latest(mngr, state)
    if restored is not None:
        state = restored
        logging.info("resumed from step %d", int(state.step))
    runner = steps_lib.Steps(step_cfg, mesh)
    trainer = _Trainer(config, workdir, splits, step_cfg, runner, mngr, int(state.step))
    with _StopSignal() as stop:
        state = trainer.train(runner.put_state(state), stop)

    summary = {
        "steps": int(state.step),
        "seconds": round(time.time() - t_start, 1),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "test": trainer.test(state),
        "task_stopped_at": {t: (int(s) if s >= 0 else None) for t, s in
                            zip(step_cfg.aux_tasks, jax.device_get(state.task_stop.stopped_at_A))},
    }
    for name, dataset in splits.extra_tests.items():
        summary["test"][name] = trainer.test(state, dataset)
    if distributed.is_primary():
        workdir_lib.write_json(os.path.join(workdir, "summary.json"), summary)
    test = summary["test"]
    logging.info("test NME %.4f (mean shape %.4f), failure rate %.3f; tasks stopped at %s",
                 test["nme"], test["mean_shape_nme"], test["failure_rate"],
                 summary["task_stopped_at"])
    return summary


class _Trainer:
    """The steps between start and config.num_steps: train, log, evaluate + early stopping, save."""

    def __init__(self, config, workdir, splits, step_cfg, runner, mngr, start_step):
        self.config, self.splits, self.cfg, self.runner, self.mngr = (
            config, splits, step_cfg, runner, mngr)
        self.aux = step_cfg.aux_tasks
        self.start = start_step
        self.ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.log = _Logger(workdir, start_step)
        self.es_update = jax.jit(early_stopping.update, static_argnames="epsilon")
        self.epsilon = float(config.es_epsilon) if config.early_stopping else math.inf
        self.lambda_fixed = jnp.asarray(step_cfg.task_lambdas, jnp.float32)
        self.lm_sum, self.lm_count = jnp.zeros(()), 0  # main-task training loss of the period
        self.train_probe = None
        if config.get("es_train_loss", "running") == "probe":
            n = min(len(splits.train), len(splits.validation))
            self.train_probe = splits.train.subset(np.arange(n))
        elif config.get("es_train_loss", "running") != "running":
            raise ValueError(f"config.es_train_loss must be 'probe' or 'running', "
                             f"got {config.es_train_loss!r}")
        self.t_log, self.step_log = time.time(), start_step

    def train(self, state, stop: _StopSignal):
        c = self.config
        batches = BatchIterator(self.splits.train, int(c.batch_size), int(c.seed))
        m = None
        try:
            for step in range(self.start, int(c.num_steps)):
                batch = self.runner.put_batch(batches.batch_at(step))
                state, m = self.runner.train(state, batch)
                self.lm_sum, self.lm_count = self.lm_sum + m["landmark_loss"], self.lm_count + 1
                done = step + 1
                last = done == c.num_steps
                if done % c.log_every == 0 or last:
                    self._log_progress(done, state, m)
                if done % c.eval_every == 0 or last:
                    state = self._evaluate(done, state)
                if done % c.checkpoint_every == 0 or last:
                    self._save(done, state, m)
                if stop.received:  # a step boundary: the state is whole, not donated
                    break
            if stop.received:
                done = int(state.step)
                if m is not None and done > (self.mngr.latest_step() or 0):
                    logging.warning("interrupted: saving a checkpoint at step %d", done)
                    self._save(done, state, m)
                raise Interrupted(stop.signum, done, self._kept())
        finally:
            self.log.close()
        return state

    def _kept(self) -> str:
        """The checkpoint a resume starts from, for the messages that name it."""
        return checkpoints.latest_step_path(self.mngr) or "none saved yet"

    def _host_losses(self, m) -> dict[str, float]:
        host = {k: float(v) for k, v in jax.device_get(m).items() if np.ndim(v) == 0}
        if self.aux:
            host.update({f"train_{t}": float(v) for t, v in
                         zip(self.aux, jax.device_get(m["task_losses_A"]))})
        return host

    def _save(self, done: int, state, m) -> None:
        # A bad state never replaces the last good checkpoint.
        _fail_if_not_finite(done, self._host_losses(m), self._kept)
        with workdir_lib.writing(self.ckpt_dir):
            checkpoints.save(self.mngr, state, self.config)

    def _log_progress(self, done: int, state, m) -> None:
        host = self._host_losses(m)
        _fail_if_not_finite(done, host, self._kept)
        self.log.scalars(done, {f"train/{k}": v for k, v in host.items()})
        rate = (done - self.step_log) / max(time.time() - self.t_log, 1e-9)
        self.t_log, self.step_log = time.time(), done
        on = [t for t, s in zip(self.aux, jax.device_get(state.task_stop.stopped_A)) if not s]
        logging.info("step %d/%d loss %.5f landmarks %.5f %s| %.1f steps/s | tasks on: %s",
                     done, self.config.num_steps, host["loss"], host["landmark_loss"],
                     "".join(f"{t} {host['train_' + t]:.3f} " for t in self.aux), rate,
                     ",".join(on) or "-")

    def _evaluate(self, done: int, state):
        """Validation pass; its auxiliary losses feed Eq. 5; one metrics.jsonl record."""
        task_stop = state.task_stop
        period_train = jax.device_get(task_stop.period_sum_A / jnp.maximum(task_stop.period_steps, 1))
        pred = evaluate.eval_outputs(self.runner, state.params, state.apply_fn,
                                     self.splits.validation, int(self.config.eval_batch_size))
        val = evaluate.summarise(pred, self.splits.validation, self.aux)
        crit = np.zeros(len(self.aux))
        if self.aux:
            if self.train_probe is not None:  # E_tr measured like E_val: same size, no augmentation
                probe = evaluate.eval_outputs(self.runner, state.params, state.apply_fn,
                                              self.train_probe, int(self.config.eval_batch_size))
                period_train = np.asarray([np.mean(probe[f"loss/{t}"]) for t in self.aux])
            val_A = jnp.asarray([val["loss"][t] for t in self.aux], jnp.float32)
            lam_A = losses.task_lambdas(state.params, self.lambda_fixed)
            task_stop, crit = self.es_update(
                task_stop, val_A, lam_A, state.step, epsilon=self.epsilon,
                train_loss_A=(None if self.train_probe is None
                              else jnp.asarray(period_train, jnp.float32)))
            state = state.replace(task_stop=task_stop)
        stopped = jax.device_get(state.task_stop.stopped_A)
        self.log.record({
            "step": done,
            "train_loss": {"landmarks": float(self.lm_sum) / max(self.lm_count, 1),
                           **{t: float(v) for t, v in zip(self.aux, period_train)}},
            "val_loss": val["loss"], "val_nme": val["nme"],
            "val_failure_rate": val["failure_rate"], "val_accuracy": val["accuracy"],
            "tasks_on": [t for t, s in zip(self.aux, stopped) if not s],
            "criterion": {t: float(c) for t, c in zip(self.aux, jax.device_get(crit))},
        })
        self.lm_sum, self.lm_count = jnp.zeros(()), 0
        self.log.scalars(done, {"val/nme": val["nme"],
                                **{f"val/loss_{k}": v for k, v in val["loss"].items()}})
        logging.info("eval step %d: val NME %.4f failure %.3f losses %s", done, val["nme"],
                     val["failure_rate"], {k: round(v, 4) for k, v in val["loss"].items()})
        return state

    def test(self, state, dataset=None) -> dict[str, Any]:
        dataset = dataset if dataset is not None else self.splits.test
        pred = evaluate.eval_outputs(self.runner, state.params, state.apply_fn, dataset,
                                     int(self.config.eval_batch_size))
        return evaluate.summarise(pred, dataset, self.aux, sources.mean_shape(self.splits.train))

"""What a run needs before its first step, shared by the loop, transfer, the studies and the mains:
the config checked, the model + step settings + fresh train state it describes, the guard against
resuming a workdir under another config, and quiet library logs.
"""

from __future__ import annotations

import json
import logging
import os

import jax

from tcdcn_jax.data import augment, sources
from tcdcn_jax.layouts import get_layout
from tcdcn_jax.model import build as model_build
from tcdcn_jax.model import networks
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import early_stopping
from tcdcn_jax.train import state as state_lib
from tcdcn_jax.train import steps as steps_lib

# Fields that may change between a run and its resumption: they do not change what is trained.
RESUMABLE_FIELDS = ("eval_every", "log_every", "checkpoint_every", "eval_batch_size", "data_dir")


class ConfigMismatchError(ValueError):
    """The workdir holds a run with another config."""


def check_config(config, splits: sources.Splits) -> None:
    """ValueError for settings no run can use, before anything compiles."""
    for key in ("num_steps", "batch_size", "eval_batch_size", "eval_every", "log_every",
                "checkpoint_every"):
        if int(config[key]) < 1:
            raise ValueError(f"config.{key} must be >= 1, got {config[key]}")
    missing = [t for t in model_build.aux_task_names(config) if t not in splits.train.arrays]
    if missing:
        raise ValueError(f"dataset {config.dataset!r} has no labels for auxiliary tasks {missing}")
    early_stopping.check_hparams(config.es_strip, config.es_epsilon)


def _augment_config(config) -> augment.AugmentConfig:
    a = config.augment
    return augment.AugmentConfig(max_shift=a.max_shift, max_rotation_deg=a.max_rotation_deg,
                                 scale_range=(a.scale_min, a.scale_max), flip=a.flip)


def build(config, splits: sources.Splits):
    """(model, step config, fresh train state) that a config describes for these splits."""
    check_config(config, splits)
    aux_tasks = model_build.aux_task_names(config)
    model = model_build.from_config(config, splits.num_landmarks)
    size = networks.input_size(config.trunk)
    tx = state_lib.make_optimizer(config.optimizer, config.learning_rate, config.num_steps,
                                  config.schedule, config.warmup_steps, config.momentum,
                                  config.get("trunk_lr_multiplier", 1.0))
    state = state_lib.create(model, tx, jax.random.PRNGKey(config.seed), size, aux_tasks,
                             config.es_strip)
    flip_perm = get_layout(splits.num_landmarks).flip_perm if config.augment.flip else None
    step_cfg = steps_lib.StepConfig(
        aux_tasks=aux_tasks, task_lambdas=tuple(float(config.task_lambda) for _ in aux_tasks),
        weight_decay=float(config.weight_decay), input_size=size, augment=_augment_config(config),
        flip_perm=tuple(flip_perm) if flip_perm is not None else None)
    return model, step_cfg, state


def _refuse_if_different(old: dict, config, workdir: str, where: str) -> None:
    new = json.loads(config.to_json())
    diff = sorted(k for k in set(old) | set(new)
                  if k not in RESUMABLE_FIELDS and old.get(k) != new.get(k))
    if diff:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise ConfigMismatchError(
            f"{workdir} holds a run with a different config ({details}; from {where}). Use another "
            "--workdir, or pass --allow_config_change to resume it under the new config.")


def check_resumable(config, workdir: str, allow_config_change: bool = False) -> None:
    """Refuses to continue a workdir's run under a different config (unless told to).

    The run is the one its newest good checkpoint holds, compared with the config saved inside that
    checkpoint: the loose workdir/config.json neither turns the check off when deleted nor, left by
    a run that failed before its first checkpoint, refuses the corrected command."""
    if allow_config_change:
        return
    old = checkpoints.checkpoint_config(workdir)
    if old is not None:
        _refuse_if_different(old.to_dict(), config, workdir, "its newest checkpoint")


def finished_summary(config, workdir: str, allow_config_change: bool = False) -> dict | None:
    """The summary.json of a finished run of `config` in workdir, or None when the run must (still)
    train. A workdir holding another config's run raises ConfigMismatchError; when the change is
    allowed, it trains again (resuming its checkpoint) under the new config instead.

    The run's config is the newest good checkpoint's, else (its checkpoints gone) the workdir's
    config.json; a summary.json with neither beside it is taken as it is."""
    path = os.path.join(workdir, "summary.json")
    old, where = checkpoints.checkpoint_config(workdir), "its newest checkpoint"
    if old is None and os.path.exists(path) and os.path.exists(
            os.path.join(workdir, checkpoints.CONFIG_FILE)):
        old, where = checkpoints.read_config(workdir), checkpoints.CONFIG_FILE
    if old is not None:
        try:
            _refuse_if_different(old.to_dict(), config, workdir, where)
        except ConfigMismatchError:
            if allow_config_change:
                return None
            raise
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _not_orbax_info(record: logging.LogRecord) -> bool:
    if "/orbax/" not in record.pathname:
        return True
    # An orbax error (a full disk in its writer threads) stays one line: the run's own error line
    # says what failed, and --verbose shows the traceback where it is raised.
    record.exc_info, record.exc_text = None, None
    return record.levelno >= logging.WARNING


def quiet_library_logs() -> None:
    """Keeps orbax's per-save INFO chatter out of the progress log (warnings and errors still show,
    one line each, without their tracebacks).

    Adding the same filter twice is a no-op, so every run may call this."""
    logging.getLogger("absl").addFilter(_not_orbax_info)

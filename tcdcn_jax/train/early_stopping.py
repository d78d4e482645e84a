"""Task-wise early stopping (the paper's Eq. 5) as a pure state machine over arrays.

Every evaluation period, for each auxiliary task a that still runs, with E_tr(j) the mean training loss
of period j and E_val(t) the validation loss now, over the strip of the last k periods:

    progress = k * med(E_tr strip) / (sum(E_tr strip) - k * med(E_tr strip))
    gap      = (E_val(t) - min_j E_tr(j)) / (lambda_a * min_j E_tr(j))
    stop a for good when progress * gap > epsilon.

`progress` is small while the training loss still falls steeply (the strip's mean sits well above its
median) and large once it flattens; `gap` is large when validation loss runs away from the best training
loss. A flat strip (sum within a tiny share of k * median) gives a large positive `progress` instead of a
division by zero. A strip whose sum is clearly below k * median (a fall that speeds up) would make the
first term negative, and a negative gap times it positive; we read such a strip as full progress and
clip the first term at 0, so that task does not stop.

Only auxiliary tasks live here: the main task never stops. The training-loss sums of the running period
are part of the state, so the train step accumulates them on device and a restart loses nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_TINY = 1e-6  # denominator floor, as a share of k * median


class TaskStopState(NamedTuple):
    """State for A auxiliary tasks and a strip of length k."""

    strip_AxK: jax.Array        # float32, last k period-mean training losses, oldest first
    num_periods: jax.Array      # int32 (), periods completed so far
    best_train_A: jax.Array     # float32, min over completed periods of E_tr (inf before the first)
    stopped_A: jax.Array        # bool, True once a task has stopped; never reset
    stopped_at_A: jax.Array     # int32, train step at which a task stopped, -1 while running
    period_sum_A: jax.Array     # float32, sum of per-step training losses in the running period
    period_steps: jax.Array     # int32 (), steps accumulated in the running period


def check_hparams(strip_length: int, epsilon: float) -> None:
    """Fails eagerly, before any tracing, on settings that make Eq. 5 meaningless."""
    if int(strip_length) != strip_length or strip_length < 2:
        raise ValueError(f"strip_length k must be an integer >= 2 (a median needs a strip), "
                         f"got {strip_length}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")


def init(num_tasks: int, strip_length: int) -> TaskStopState:
    if num_tasks < 0:
        raise ValueError(f"num_tasks must be >= 0, got {num_tasks}")
    check_hparams(strip_length, 1.0)
    return TaskStopState(
        strip_AxK=jnp.zeros((num_tasks, strip_length), jnp.float32),
        num_periods=jnp.zeros((), jnp.int32),
        best_train_A=jnp.full((num_tasks,), jnp.inf, jnp.float32),
        stopped_A=jnp.zeros((num_tasks,), bool),
        stopped_at_A=jnp.full((num_tasks,), -1, jnp.int32),
        period_sum_A=jnp.zeros((num_tasks,), jnp.float32),
        period_steps=jnp.zeros((), jnp.int32),
    )


def active(state: TaskStopState) -> jax.Array:
    """float32 (A,) mask: 1 for tasks still in the objective."""
    return jnp.logical_not(state.stopped_A).astype(jnp.float32)


def accumulate(state: TaskStopState, train_loss_A: jax.Array) -> TaskStopState:
    """Adds one train step's per-task losses to the running period."""
    return state._replace(period_sum_A=state.period_sum_A + train_loss_A.astype(jnp.float32),
                          period_steps=state.period_steps + 1)


def criterion(strip_AxK: jax.Array, best_train_A: jax.Array, val_loss_A: jax.Array,
              lambda_A: jax.Array) -> jax.Array:
    """Eq. 5's left-hand side per task (float32, (A,))."""
    k = strip_AxK.shape[-1]
    k_med = k * jnp.median(strip_AxK, axis=-1)
    denom = jnp.sum(strip_AxK, axis=-1) - k_med
    flat = jnp.abs(denom) <= _TINY * jnp.abs(k_med) + 1e-12
    progress = jnp.where(flat, 1.0 / _TINY, jnp.maximum(k_med / jnp.where(flat, 1.0, denom), 0.0))
    gap = (val_loss_A - best_train_A) / (lambda_A * best_train_A + 1e-12)
    return progress * gap


def update(state: TaskStopState, val_loss_A: jax.Array, lambda_A: jax.Array, step: jax.Array,
           epsilon: float, train_loss_A: jax.Array | None = None) -> tuple[TaskStopState, jax.Array]:
    """Closes the running period: pushes its training loss E_tr, then applies Eq. 5.

    E_tr is `train_loss_A` when given (e.g. measured on un-augmented training faces, like the
    validation loss), else the mean of the period's mini-batch losses. Returns the new state and the
    criterion values (for logging). Tasks are judged only once the strip is full; a stopped task stays
    stopped, with its first stop step kept. A period with no training steps leaves the state as it is.
    """
    steps = jnp.maximum(state.period_steps, 1).astype(jnp.float32)
    period_mean_A = state.period_sum_A / steps
    if train_loss_A is not None:
        period_mean_A = jnp.asarray(train_loss_A, jnp.float32)
    strip = jnp.concatenate([state.strip_AxK[:, 1:], period_mean_A[:, None]], axis=1)
    best = jnp.minimum(state.best_train_A, period_mean_A)
    num_periods = state.num_periods + 1
    value_A = criterion(strip, best, val_loss_A.astype(jnp.float32), lambda_A.astype(jnp.float32))
    full = num_periods >= strip.shape[-1]
    stops_now = jnp.logical_and(full, value_A > epsilon)
    stopped = jnp.logical_or(state.stopped_A, stops_now)
    stopped_at = jnp.where(jnp.logical_and(stops_now, ~state.stopped_A),
                           jnp.asarray(step, jnp.int32), state.stopped_at_A)
    new = TaskStopState(
        strip_AxK=strip, num_periods=num_periods, best_train_A=best, stopped_A=stopped,
        stopped_at_A=stopped_at, period_sum_A=jnp.zeros_like(state.period_sum_A),
        period_steps=jnp.zeros_like(state.period_steps))
    trained = state.period_steps > 0
    new = jax.tree_util.tree_map(lambda n, o: jnp.where(trained, n, o), new, state)
    return new, jnp.where(trained, value_A, 0.0)


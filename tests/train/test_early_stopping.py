"""Tests for tcdcn_jax.early_stopping (the paper's Eq. 5) with strips and histories built by hand.

The state machine covers the auxiliary tasks only (A = number of auxiliary tasks): the landmark (main)
task has no slot in it, so it can never be stopped; tests/test_losses.py checks that the landmark term
stays in the objective whatever the task mask says.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.train import early_stopping as es


def eq5(strip_K, best, val, lam):
    """Eq. 5's left-hand side in float64 numpy, for strips whose sum exceeds k * median."""
    strip_K = np.asarray(strip_K, np.float64)
    k = strip_K.shape[-1]
    k_med = k * np.median(strip_K)
    return k_med / (strip_K.sum() - k_med) * (val - best) / (lam * best)


def run_period(state, step_losses_SxA, val_A, step, epsilon, lambda_A=None):
    """One evaluation period: accumulate the per-step training losses, then close it with update."""
    for loss_A in step_losses_SxA:
        state = es.accumulate(state, jnp.asarray(loss_A, jnp.float32))
    val_A = jnp.asarray(val_A, jnp.float32)
    if lambda_A is None:
        lambda_A = jnp.ones_like(val_A)
    return es.update(state, val_A, jnp.asarray(lambda_A, jnp.float32), jnp.asarray(step), epsilon)


# --- init and hyperparameters -------------------------------------------------------------------

def test_init_shapes_and_dtypes():
    s = es.init(num_tasks=4, strip_length=5)
    assert s.strip_AxK.shape == (4, 5) and s.strip_AxK.dtype == jnp.float32
    assert s.num_periods.shape == () and s.num_periods.dtype == jnp.int32
    assert s.best_train_A.shape == (4,) and s.best_train_A.dtype == jnp.float32
    assert s.stopped_A.shape == (4,) and s.stopped_A.dtype == jnp.bool_
    assert s.stopped_at_A.shape == (4,) and s.stopped_at_A.dtype == jnp.int32
    assert s.period_sum_A.shape == (4,) and s.period_sum_A.dtype == jnp.float32
    assert s.period_steps.shape == () and s.period_steps.dtype == jnp.int32
    np.testing.assert_array_equal(s.strip_AxK, 0.0)
    np.testing.assert_array_equal(s.best_train_A, np.inf)
    np.testing.assert_array_equal(s.stopped_A, False)
    np.testing.assert_array_equal(s.stopped_at_A, -1)
    assert int(s.num_periods) == 0 and int(s.period_steps) == 0


def test_init_rejects_negative_task_count_and_short_strip():
    with pytest.raises(ValueError, match="num_tasks"):
        es.init(-1, 5)
    with pytest.raises(ValueError, match="strip_length"):
        es.init(2, 1)


@pytest.mark.parametrize("k", [1, 0, -3, 2.5, 3.1])
def test_check_hparams_rejects_bad_strip_length(k):
    with pytest.raises(ValueError, match="strip_length"):
        es.check_hparams(k, 1.0)


@pytest.mark.parametrize("epsilon", [0.0, -1.0, -math.inf, math.nan])
def test_check_hparams_rejects_non_positive_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        es.check_hparams(5, epsilon)


def test_check_hparams_accepts_valid_settings():
    es.check_hparams(2, 1e-9)
    es.check_hparams(5, math.inf)  # "never stop"
    es.check_hparams(5.0, 0.5)     # an integral float is an integer k


# --- accumulate / update bookkeeping ------------------------------------------------------------

def test_accumulate_and_update_push_period_means_oldest_first():
    s = es.init(num_tasks=2, strip_length=3)
    periods = [  # per period: per-step losses (S x A)
        [[1.0, 4.0], [3.0, 2.0]],               # means 2.0, 3.0
        [[0.5, 1.0], [1.5, 2.0], [1.0, 3.0]],   # means 1.0, 2.0
        [[3.0, 0.5]],                           # means 3.0, 0.5
        [[2.5, 1.0], [0.5, 1.0]],               # means 1.5, 1.0
    ]
    means = [[2.0, 3.0], [1.0, 2.0], [3.0, 0.5], [1.5, 1.0]]
    best = [[2.0, 3.0], [1.0, 2.0], [1.0, 0.5], [1.0, 0.5]]
    for p, steps in enumerate(periods):
        for loss_A in steps:
            s = es.accumulate(s, jnp.asarray(loss_A))
        assert int(s.period_steps) == len(steps)
        np.testing.assert_allclose(s.period_sum_A, np.sum(steps, axis=0), rtol=1e-6)
        s, _ = es.update(s, jnp.zeros(2), jnp.ones(2), jnp.asarray(10 * p), math.inf)
        # Sums reset after closing the period.
        np.testing.assert_array_equal(s.period_sum_A, 0.0)
        assert int(s.period_steps) == 0
        assert int(s.num_periods) == p + 1
        np.testing.assert_allclose(s.strip_AxK[:, -1], means[p], rtol=1e-6)
        np.testing.assert_allclose(s.best_train_A, best[p], rtol=1e-6)
    # After four periods with k = 3 the strip holds periods 2, 3, 4, oldest first.
    np.testing.assert_allclose(s.strip_AxK, np.array(means[1:]).T, rtol=1e-6)


# --- the criterion and its transitions ----------------------------------------------------------

def test_steeply_falling_task_keeps_running():
    """Convex decay 1.0, 0.5, 0.3, 0.2, 0.15 with val close to train: small criterion, not stopped.

    By hand: k = 5, median 0.3, k*med = 1.5, sum = 2.15, progress = 1.5 / 0.65 = 2.3077;
    best = 0.15, val = 0.16, gap = 0.01 / 0.15 = 0.0667; criterion = 0.1538.
    """
    train = [1.0, 0.5, 0.3, 0.2, 0.15]
    s = es.init(1, 5)
    for t, e in enumerate(train):
        s, value = run_period(s, [[e]], [0.16], step=100 * (t + 1), epsilon=0.5)
    expected = (1.5 / 0.65) * (0.01 / 0.15)
    np.testing.assert_allclose(expected, eq5(train, 0.15, 0.16, 1.0))
    np.testing.assert_allclose(value, [expected], rtol=1e-4)
    np.testing.assert_allclose(es.criterion(s.strip_AxK, s.best_train_A, jnp.asarray([0.16]),
                                            jnp.ones(1)), [expected], rtol=1e-4)
    assert int(s.num_periods) == 5  # the strip is full: the task was judged, and kept
    assert not bool(s.stopped_A[0])
    assert int(s.stopped_at_A[0]) == -1
    np.testing.assert_array_equal(es.active(s), [1.0])


def test_plateau_with_rising_validation_stops_and_others_are_unaffected():
    """Task 0 plateaus near 0.2 while its validation loss rises: it stops when the strip fills.

    Task 1 (falls steeply, val close to train) and task 2 (an exact copy of task 0's history before the
    stop, but with a large lambda) run in the same state and keep running.
    """
    k, eps = 3, 1.0
    train0 = [0.2, 0.21, 0.2]         # per-period means of task 0
    train1 = [1.0, 0.5, 0.3]          # task 1
    val0 = [0.3, 0.4, 0.5]
    val1 = [1.02, 0.52, 0.32]
    lam = [1.0, 1.0, 1000.0]
    s = es.init(3, k)
    for p in range(k):
        # Two steps per period whose mean is the period's value (noise cancels out).
        steps = [[train0[p] + 0.01, train1[p] - 0.02, train0[p] + 0.01],
                 [train0[p] - 0.01, train1[p] + 0.02, train0[p] - 0.01]]
        s, value = run_period(s, steps, [val0[p], val1[p], val0[p]], step=50 * (p + 1),
                              epsilon=eps, lambda_A=lam)
    # By hand. Task 0: median 0.2, k*med 0.6, sum 0.61 -> progress 60; gap (0.5-0.2)/0.2 = 1.5.
    c0 = 60.0 * 1.5
    # Task 1: median 0.5, k*med 1.5, sum 1.8 -> progress 5; gap 0.02/0.3 -> 0.3333.
    c1 = 5.0 * (0.02 / 0.3)
    np.testing.assert_allclose([c0, c1], [eq5(train0, 0.2, 0.5, 1.0), eq5(train1, 0.3, 0.32, 1.0)])
    np.testing.assert_allclose(value, [c0, c1, c0 / 1000.0], rtol=1e-3)
    np.testing.assert_array_equal(s.stopped_A, [True, False, False])
    np.testing.assert_array_equal(s.stopped_at_A, [150, -1, -1])  # the step passed to update
    np.testing.assert_array_equal(es.active(s), [0.0, 1.0, 1.0])


def test_nothing_is_judged_before_the_strip_is_full():
    k = 4
    s = es.init(2, k)
    for p in range(k - 1):
        # Flat training loss and a validation loss 100x the training loss: a huge criterion.
        s, value = run_period(s, [[0.1, 0.1]], [10.0, 10.0], step=p + 1, epsilon=1.0)
        # (The strip's unfilled slots are zeros, so its value now means nothing; only the stop counts.)
        np.testing.assert_array_equal(s.stopped_A, [False, False])
        np.testing.assert_array_equal(s.stopped_at_A, [-1, -1])
    s, _ = run_period(s, [[0.1, 0.1]], [10.0, 10.0], step=k, epsilon=1.0)
    np.testing.assert_array_equal(s.stopped_A, [True, True])
    np.testing.assert_array_equal(s.stopped_at_A, [k, k])


def test_a_stopped_task_never_restarts():
    k = 3
    s = es.init(2, k)
    for p in range(k):  # task 0: plateau + rising val -> stops at step 30; task 1: steep, keeps going
        s, _ = run_period(s, [[0.2 + 0.01 * (p == 1), 1.0 / (p + 1) ** 2]],
                          [0.3 + 0.1 * p, 1.02 / (p + 1) ** 2], step=10 * (p + 1), epsilon=1.0)
    np.testing.assert_array_equal(s.stopped_A, [True, False])
    np.testing.assert_array_equal(s.stopped_at_A, [30, -1])
    # Now task 0 improves steadily and validates below its training loss: a negative criterion.
    for p in range(k, k + 5):
        e = 0.2 * 0.5 ** (p - k + 1)
        s, value = run_period(s, [[e, 0.05]], [0.5 * e, 0.05], step=10 * (p + 1), epsilon=1.0)
        assert float(value[0]) < 1.0
        np.testing.assert_array_equal(s.stopped_A, [True, False])
        np.testing.assert_array_equal(s.stopped_at_A, [30, -1])
        np.testing.assert_array_equal(es.active(s), [0.0, 1.0])
    # And if the criterion fires again later, the first stop step is kept.
    s, _ = run_period(s, [[0.2, 0.05]], [100.0, 0.05], step=999, epsilon=1e-9)
    np.testing.assert_array_equal(s.stopped_at_A[0], 30)


def test_main_task_has_no_slot_and_active_maps_stopped_to_zero():
    """A counts auxiliary tasks only: the landmark task is outside this machine and never stops."""
    aux_tasks = ("pose", "gender", "glasses", "smile")
    s = es.init(len(aux_tasks), 5)
    assert s.stopped_A.shape == (len(aux_tasks),)
    s = s._replace(stopped_A=jnp.asarray([False, True, False, True]))
    mask = es.active(s)
    assert mask.dtype == jnp.float32
    np.testing.assert_array_equal(mask, [1.0, 0.0, 1.0, 0.0])
    # No auxiliary task at all: an empty machine, and an empty mask.
    s0 = es.init(0, 5)
    assert es.active(s0).shape == (0,)


def test_larger_lambda_makes_the_criterion_smaller():
    """lambda sits in Eq. 5's denominator: an important task is kept longer."""
    strip = jnp.asarray([[0.3, 0.25, 0.22, 0.21, 0.2]] * 3)
    best = jnp.full((3,), 0.2)
    val = jnp.full((3,), 0.35)
    lam = jnp.asarray([0.5, 1.0, 4.0])
    value = np.asarray(es.criterion(strip, best, val, lam))
    assert value[0] > value[1] > value[2] > 0
    np.testing.assert_allclose(value[0] / value[1], 2.0, rtol=1e-5)
    np.testing.assert_allclose(value[1] / value[2], 4.0, rtol=1e-5)
    np.testing.assert_allclose(value[1], eq5([0.3, 0.25, 0.22, 0.21, 0.2], 0.2, 0.35, 1.0),
                               rtol=1e-4)
    # Same history, epsilon between the two values: only the low-lambda task stops.
    eps = float(np.sqrt(value[1] * value[2]))
    s = es.init(3, 5)
    for p, e in enumerate([0.3, 0.25, 0.22, 0.21, 0.2]):
        s, _ = run_period(s, [[e, e, e]], [0.35] * 3, step=p + 1, epsilon=eps, lambda_A=lam)
    np.testing.assert_array_equal(s.stopped_A, [True, True, False])


def _scripted_history(update_fn, epsilon):
    s = es.init(2, 3)
    values = []
    for p, (e, v) in enumerate([((0.2, 1.0), (0.3, 1.01)), ((0.21, 0.5), (0.4, 0.51)),
                                ((0.2, 0.3), (0.5, 0.31)), ((0.2, 0.2), (0.6, 0.21))]):
        s = es.accumulate(s, jnp.asarray(e))
        s, value = update_fn(s, jnp.asarray(v), jnp.ones(2), jnp.asarray(7 * (p + 1)),
                             epsilon=epsilon)
        values.append(value)
    return s, np.asarray(values)


def test_update_is_jittable_and_matches_eager():
    jitted = jax.jit(es.update, static_argnames="epsilon")
    s_eager, v_eager = _scripted_history(es.update, 1.0)
    s_jit, v_jit = _scripted_history(jitted, 1.0)
    np.testing.assert_allclose(v_jit, v_eager, rtol=1e-6)
    for a, b in zip(s_jit, s_eager):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6)
    np.testing.assert_array_equal(s_jit.stopped_A, [True, False])
    np.testing.assert_array_equal(s_jit.stopped_at_A, [21, -1])


def test_infinite_epsilon_never_stops():
    s, values = _scripted_history(jax.jit(es.update, static_argnames="epsilon"), math.inf)
    assert np.all(np.isfinite(values)) and values.max() > 1.0  # would have stopped with epsilon 1
    np.testing.assert_array_equal(s.stopped_A, [False, False])
    np.testing.assert_array_equal(s.stopped_at_A, [-1, -1])


def test_flat_strip_gives_a_finite_large_positive_criterion():
    """sum == k * median: the denominator is floored instead of dividing by zero."""
    strip = jnp.full((2, 5), 0.25)
    value = np.asarray(es.criterion(strip, jnp.full((2,), 0.25), jnp.asarray([0.3, 0.5]),
                                    jnp.ones(2)))
    assert np.all(np.isfinite(value))
    assert np.all(value > 1e4), value
    assert value[1] > value[0]  # a larger gap still ranks higher
    # The same through update: a flat task with a validation gap stops once the strip is full.
    s = es.init(1, 5)
    for p in range(5):
        s, v = run_period(s, [[0.25]], [0.3], step=p + 1, epsilon=100.0)
        assert np.all(np.isfinite(np.asarray(v)))
    assert bool(s.stopped_A[0]) and int(s.stopped_at_A[0]) == 5


def test_a_fall_that_speeds_up_keeps_running():
    """Sum below k * median (loss falling faster and faster) counts as full progress: value 0."""
    strip = jnp.asarray([[1.0, 0.99, 0.98, 0.5, 0.1]], jnp.float32)
    value = es.criterion(strip, jnp.asarray([0.1]), jnp.asarray([0.12]),
                                     jnp.asarray([1.0]))
    assert 5 * 0.98 / (3.57 - 5 * 0.98) < 0  # what Eq. 5 read literally gives for the first term
    np.testing.assert_allclose(np.asarray(value), [0.0], atol=1e-6)
    # Also with a negative gap (validation below the best training loss): no positive product.
    value = es.criterion(strip, jnp.asarray([0.1]), jnp.asarray([0.05]), jnp.asarray([1.0]))
    assert float(value[0]) <= 0


def test_update_without_training_steps_changes_nothing():
    state = es.init(2, 2)
    new, value = es.update(state, jnp.asarray([0.5, 0.5]), jnp.ones(2), 7, epsilon=1.0)
    jax.tree_util.tree_map(np.testing.assert_array_equal, new, state)
    np.testing.assert_array_equal(np.asarray(value), [0.0, 0.0])

"""make_optimizer by hand: SGD with and without momentum, Adam, the schedules, and the trunk's
learning-rate multiplier (0 freezes the trunk, any other value scales its updates)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.train.state import make_optimizer

G1 = {"trunk": {"w": jnp.array([1.0, -2.0])}, "heads": {"landmarks": {"w": jnp.array([0.5])}}}
G2 = {"trunk": {"w": jnp.array([3.0, 1.0])}, "heads": {"landmarks": {"w": jnp.array([-1.0])}}}


def _updates(tx, grads_seq):
    """The update each gradient of grads_seq gives, in turn, from a fresh optimiser state."""
    params = jax.tree_util.tree_map(jnp.zeros_like, grads_seq[0])
    opt_state, out = tx.init(params), []
    for grads in grads_seq:
        updates, opt_state = tx.update(grads, opt_state, params)
        out.append(updates)
    return out


def _close(a, b):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)


def _scale(tree, s):
    return jax.tree_util.tree_map(lambda x: s * x, tree)


def test_sgd_with_momentum_by_hand():
    u1, u2 = _updates(make_optimizer("sgd", 0.1, 10, "constant", momentum=0.9), [G1, G2])
    _close(u1, _scale(G1, -0.1))
    _close(u2, jax.tree_util.tree_map(lambda a, b: -0.1 * (b + 0.9 * a), G1, G2))


def test_sgd_without_momentum_forgets_the_last_gradient():
    _, u2 = _updates(make_optimizer("sgd", 0.1, 10, "constant", momentum=0.0), [G1, G2])
    _close(u2, _scale(G2, -0.1))


def test_adam_first_step_is_minus_lr_times_the_gradient_sign():
    (u1,) = _updates(make_optimizer("adam", 0.01, 10, "constant"), [G1])
    _close(u1, jax.tree_util.tree_map(lambda g: -0.01 * jnp.sign(g), G1))


def test_cosine_schedule_warms_up_from_zero_then_decays_to_zero():
    tx = make_optimizer("sgd", 1.0, 6, "cosine", warmup_steps=2, momentum=0.0)
    ones = jax.tree_util.tree_map(jnp.ones_like, G1)
    lrs = [-float(u["heads"]["landmarks"]["w"][0]) for u in _updates(tx, [ones] * 7)]
    want = [0.0, 0.5, 1.0] + [0.5 * (1 + np.cos(np.pi * t / 4)) for t in (1, 2, 3, 4)]
    np.testing.assert_allclose(lrs, want, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("multiplier", [0.0, 0.25, 3.0])
def test_trunk_lr_multiplier_scales_the_trunk_only(name, multiplier):
    plain = _updates(make_optimizer(name, 0.1, 10, "constant"), [G1, G2])
    scaled = _updates(make_optimizer(name, 0.1, 10, "constant", trunk_lr_multiplier=multiplier),
                      [G1, G2])
    for p, s in zip(plain, scaled):
        _close(s["trunk"], _scale(p["trunk"], multiplier))
        _close(s["heads"], p["heads"])


def test_bad_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop", 0.1, 10)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        make_optimizer("sgd", 0.1, 10, "linear")


def test_multiplier_zero_keeps_no_trunk_optimiser_state():
    """A frozen trunk costs no moment buffers (set_to_zero); a scaled one keeps Adam's."""

    def state_sizes(multiplier):
        tx = make_optimizer("adam", 0.1, 10, "constant", trunk_lr_multiplier=multiplier)
        state = tx.init(jax.tree_util.tree_map(jnp.zeros_like, G1))
        return {k: sum(np.size(x) for x in jax.tree_util.tree_leaves(v))
                for k, v in state.inner_states.items()}

    frozen, scaled = state_sizes(0.0), state_sizes(0.5)
    assert frozen["trunk"] == 0 and scaled["trunk"] >= 2 * 2  # mu and nu of the trunk's 2 weights
    assert frozen["rest"] == scaled["rest"]

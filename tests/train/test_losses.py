"""Tests for tcdcn_jax.losses (the paper's Eq. 3) against hand computations with tiny numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcdcn_jax.train import losses


def log_softmax(logits_BxC):
    z = np.asarray(logits_BxC, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def fake_params(log_lambda=None):
    """A hand-built tree shaped like the model's: trunk fc, landmark head, a pose and a gender head."""
    heads = {
        "landmarks": {"kernel": jnp.asarray([[1.0, -2.0]]), "bias": jnp.asarray([5.0, 5.0])},
        "pose": {"kernel": jnp.asarray([[0.5, 0.5, -1.0]]), "bias": jnp.asarray([9.0, 9.0, 9.0])},
        "gender": {"kernel": jnp.asarray([[3.0, 0.0]]), "bias": jnp.asarray([7.0, 7.0])},
    }
    if log_lambda is not None:
        heads["log_lambda"] = jnp.asarray(log_lambda, jnp.float32)
    return {"trunk": {"fc": {"kernel": jnp.asarray([[2.0], [1.0]]), "bias": jnp.asarray([4.0])}},
            "heads": heads}


# Sums of squared kernels (biases excluded): trunk 4 + 1, landmarks 1 + 4, pose 0.25+0.25+1, gender 9.
SQ_TRUNK, SQ_LM, SQ_POSE, SQ_GENDER = 5.0, 5.0, 1.5, 9.0

# Two faces, one landmark (K = 1), a 3-class "pose" task and a 2-class "gender" task.
PRED_BxKx2 = np.array([[[0.5, 0.25]], [[0.0, 1.0]]], np.float32)
TRUE_BxKx2 = np.array([[[0.25, 0.25]], [[1.0, 0.5]]], np.float32)
POSE_LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], np.float32)
POSE_LABELS = np.array([0, 2], np.int32)
GENDER_LOGITS = np.array([[0.0, 1.0], [2.0, -2.0]], np.float32)
GENDER_LABELS = np.array([1, 1], np.int32)

# Landmark term: face 0: 1/2 * 0.25^2 = 0.03125; face 1: 1/2 * (1 + 0.25) = 0.625; mean 0.328125.
LM_BY_HAND = 0.328125
CE_POSE = float(-np.mean(log_softmax(POSE_LOGITS)[[0, 1], POSE_LABELS]))
CE_GENDER = float(-np.mean(log_softmax(GENDER_LOGITS)[[0, 1], GENDER_LABELS]))


def outputs_and_batch():
    outputs = {"landmarks": jnp.asarray(PRED_BxKx2), "pose": jnp.asarray(POSE_LOGITS),
               "gender": jnp.asarray(GENDER_LOGITS)}
    batch = {"landmarks": jnp.asarray(TRUE_BxKx2), "pose": jnp.asarray(POSE_LABELS),
             "gender": jnp.asarray(GENDER_LABELS)}
    return outputs, batch


def test_landmark_and_classification_terms_by_hand():
    np.testing.assert_allclose(losses.landmark_loss(PRED_BxKx2, TRUE_BxKx2), LM_BY_HAND, rtol=1e-6)
    # Pose CE by hand: face 0 -log softmax([2, 0, -1])[0]; face 1 -log softmax([.5, 1.5, 0])[2].
    ce0 = -(2.0 - np.log(np.exp(2.0) + 1.0 + np.exp(-1.0)))
    ce1 = -(0.0 - np.log(np.exp(0.5) + np.exp(1.5) + 1.0))
    np.testing.assert_allclose(CE_POSE, (ce0 + ce1) / 2, rtol=1e-12)
    np.testing.assert_allclose(losses.classification_loss(POSE_LOGITS, POSE_LABELS), CE_POSE,
                               rtol=1e-6)


def test_total_loss_by_hand_with_fixed_lambdas_and_weight_decay():
    outputs, batch = outputs_and_batch()
    lam = np.array([0.5, 2.0], np.float32)
    wd = 0.01
    loss, aux = losses.total_loss(fake_params(), outputs, batch, ("pose", "gender"),
                                  jnp.ones(2), jnp.asarray(lam), wd)
    decay = wd * (SQ_TRUNK + SQ_LM + SQ_POSE + SQ_GENDER)
    expected = LM_BY_HAND + 0.5 * CE_POSE + 2.0 * CE_GENDER + decay
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(aux["loss"], expected, rtol=1e-6)
    np.testing.assert_allclose(aux["landmark_loss"], LM_BY_HAND, rtol=1e-6)
    np.testing.assert_allclose(aux["task_losses_A"], [CE_POSE, CE_GENDER], rtol=1e-6)
    np.testing.assert_allclose(aux["lambda_A"], lam)
    np.testing.assert_allclose(aux["weight_decay"], decay, rtol=1e-6)


def test_task_mask_removes_the_task_and_its_head_decay():
    outputs, batch = outputs_and_batch()
    lam = jnp.asarray([0.5, 2.0])
    wd = 0.01
    loss, aux = losses.total_loss(fake_params(), outputs, batch, ("pose", "gender"),
                                  jnp.asarray([1.0, 0.0]), lam, wd)
    decay = wd * (SQ_TRUNK + SQ_LM + SQ_POSE)  # gender's head drops out
    np.testing.assert_allclose(loss, LM_BY_HAND + 0.5 * CE_POSE + decay, rtol=1e-6)
    np.testing.assert_allclose(aux["weight_decay"], decay, rtol=1e-6)
    # The unweighted per-task losses are still reported (early stopping logs them).
    np.testing.assert_allclose(aux["task_losses_A"], [CE_POSE, CE_GENDER], rtol=1e-6)


@pytest.mark.parametrize("active", [[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
def test_landmark_term_is_always_present(active):
    """The main task never leaves the objective: with every aux task off the loss is landmarks only."""
    outputs, batch = outputs_and_batch()
    lam = jnp.asarray([0.5, 2.0])
    loss, aux = losses.total_loss(fake_params(), outputs, batch, ("pose", "gender"),
                                  jnp.asarray(active), lam, 0.0)
    expected = LM_BY_HAND + active[0] * 0.5 * CE_POSE + active[1] * 2.0 * CE_GENDER
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(aux["landmark_loss"], LM_BY_HAND, rtol=1e-6)
    assert "weight_decay" not in aux  # weight_decay = 0 adds nothing


def test_no_aux_tasks_is_landmarks_plus_decay():
    outputs, batch = outputs_and_batch()
    params = fake_params()
    loss, aux = losses.total_loss(params, outputs, batch, (), jnp.zeros(0), jnp.zeros(0), 0.1)
    np.testing.assert_allclose(loss, LM_BY_HAND + 0.1 * (SQ_TRUNK + SQ_LM), rtol=1e-6)
    assert "task_losses_A" not in aux


def _linear_model(params, x_Bx2):
    """A tiny model over fake_params: feat = x @ fc, then linear heads."""
    fc = params["trunk"]["fc"]
    feat_Bx1 = x_Bx2 @ fc["kernel"] + fc["bias"]
    h = params["heads"]
    lm = (feat_Bx1 @ h["landmarks"]["kernel"] + h["landmarks"]["bias"]).reshape(-1, 1, 2)
    return {"landmarks": lm,
            "pose": feat_Bx1 @ h["pose"]["kernel"] + h["pose"]["bias"],
            "gender": feat_Bx1 @ h["gender"]["kernel"] + h["gender"]["bias"]}


def _grads(active, log_lambda=None):
    x_Bx2 = jnp.asarray([[0.1, -0.2], [0.3, 0.05]])
    _, batch = outputs_and_batch()

    def loss_fn(params):
        return losses.total_loss(params, _linear_model(params, x_Bx2), batch, ("pose", "gender"),
                                 jnp.asarray(active), jnp.asarray([0.5, 2.0]), 0.01)[0]

    # Compiled whole: one program, not one per operation of the backward pass.
    return jax.jit(jax.grad(loss_fn))(fake_params(log_lambda))


def test_stopped_head_gets_zero_gradient():
    g = _grads([1.0, 0.0])
    np.testing.assert_array_equal(g["heads"]["gender"]["kernel"], 0.0)
    np.testing.assert_array_equal(g["heads"]["gender"]["bias"], 0.0)
    assert np.abs(g["heads"]["pose"]["kernel"]).sum() > 0
    assert np.abs(g["heads"]["landmarks"]["kernel"]).sum() > 0
    assert np.abs(g["trunk"]["fc"]["kernel"]).sum() > 0
    # The trunk's gradient is exactly what it is without the gender task at all.
    x_Bx2 = jnp.asarray([[0.1, -0.2], [0.3, 0.05]])
    _, batch = outputs_and_batch()

    def pose_only(params):
        return losses.total_loss(params, _linear_model(params, x_Bx2), batch, ("pose",),
                                 jnp.ones(1), jnp.asarray([0.5]), 0.01)[0]

    g_ref = jax.jit(jax.grad(pose_only))(fake_params())
    np.testing.assert_allclose(g["trunk"]["fc"]["kernel"], g_ref["trunk"]["fc"]["kernel"],
                               rtol=1e-6)
    # And the gender head does get a gradient when the task is on.
    g_on = _grads([1.0, 1.0])
    assert np.abs(g_on["heads"]["gender"]["kernel"]).sum() > 0


def test_learned_lambda_by_hand():
    outputs, batch = outputs_and_batch()
    log_lam = np.array([np.log(0.5), np.log(3.0)], np.float32)
    fixed = jnp.asarray([100.0, 100.0])  # ignored when the model learns its lambdas
    loss, aux = losses.total_loss(fake_params(log_lam), outputs, batch, ("pose", "gender"),
                                  jnp.ones(2), fixed, 0.0)
    expected = (LM_BY_HAND + 0.5 * CE_POSE - 0.5 * np.log(0.5)
                + 3.0 * CE_GENDER - 0.5 * np.log(3.0))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(aux["lambda_A"], [0.5, 3.0], rtol=1e-6)
    # A stopped task drops both its weighted CE and its log penalty.
    loss_off, _ = losses.total_loss(fake_params(log_lam), outputs, batch, ("pose", "gender"),
                                    jnp.asarray([0.0, 1.0]), fixed, 0.0)
    np.testing.assert_allclose(loss_off, LM_BY_HAND + 3.0 * CE_GENDER - 0.5 * np.log(3.0),
                               rtol=1e-6)
    # log_lambda is not a kernel: it carries no weight decay.
    _, aux_wd = losses.total_loss(fake_params(log_lam), outputs, batch, ("pose", "gender"),
                                  jnp.ones(2), fixed, 0.01)
    np.testing.assert_allclose(aux_wd["weight_decay"],
                               0.01 * (SQ_TRUNK + SQ_LM + SQ_POSE + SQ_GENDER), rtol=1e-6)


def test_learned_lambda_gradient_vanishes_where_lambda_times_ce_is_half():
    """d/dlog(l) [l * CE - 1/2 log l] = l * CE - 1/2: zero at l = 1 / (2 CE)."""
    outputs, batch = outputs_and_batch()
    log_lam = np.array([np.log(0.5 / CE_POSE), np.log(2.0)], np.float32)

    def loss_fn(params):
        return losses.total_loss(params, outputs, batch, ("pose", "gender"), jnp.ones(2),
                                 jnp.ones(2), 0.0)[0]

    g = jax.grad(loss_fn)(fake_params(log_lam))["heads"]["log_lambda"]
    np.testing.assert_allclose(g[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(g[1], 2.0 * CE_GENDER - 0.5, rtol=1e-5)
    # A stopped task's lambda gets no gradient either.
    def loss_off(params):
        return losses.total_loss(params, outputs, batch, ("pose", "gender"),
                                 jnp.asarray([1.0, 0.0]), jnp.ones(2), 0.0)[0]

    np.testing.assert_array_equal(jax.grad(loss_off)(fake_params(log_lam))["heads"]["log_lambda"][1],
                                  0.0)


def test_task_lambdas_picks_learned_or_fixed():
    fixed = jnp.asarray([0.3, 0.7])
    np.testing.assert_array_equal(losses.task_lambdas(fake_params(), fixed), fixed)
    np.testing.assert_allclose(losses.task_lambdas(fake_params([0.0, np.log(2.0)]), fixed),
                               [1.0, 2.0], rtol=1e-6)


def test_padded_rows_do_not_change_the_loss():
    outputs, batch = outputs_and_batch()
    args = (("pose", "gender"), jnp.ones(2), jnp.asarray([0.5, 2.0]), 0.01)
    ref, ref_aux = losses.total_loss(fake_params(), outputs, batch, *args)
    # Pad with two rows of garbage (huge errors, wrong labels) that carry weight 0.
    pad_out = {"landmarks": jnp.full((2, 1, 2), 50.0), "pose": jnp.asarray([[9.0, -9.0, 0.0]] * 2),
               "gender": jnp.asarray([[9.0, -9.0]] * 2)}
    pad_batch = {"landmarks": jnp.full((2, 1, 2), -50.0), "pose": jnp.asarray([1, 1]),
                 "gender": jnp.asarray([1, 1])}
    cat = lambda a, b: {k: jnp.concatenate([a[k], b[k]]) for k in a}  # noqa: E731
    weight_B = jnp.asarray([1.0, 1.0, 0.0, 0.0])
    loss, aux = losses.total_loss(fake_params(), cat(outputs, pad_out), cat(batch, pad_batch),
                                  *args, weight_B=weight_B)
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    np.testing.assert_allclose(aux["task_losses_A"], ref_aux["task_losses_A"], rtol=1e-6)
    np.testing.assert_allclose(aux["landmark_loss"], LM_BY_HAND, rtol=1e-6)
    # Without the weights the padding would show: the test can fail.
    unweighted, _ = losses.total_loss(fake_params(), cat(outputs, pad_out), cat(batch, pad_batch),
                                      *args)
    assert abs(float(unweighted) - float(ref)) > 1.0
    # A boolean mask works the same as a float one.
    loss_bool, _ = losses.total_loss(fake_params(), cat(outputs, pad_out), cat(batch, pad_batch),
                                     *args, weight_B=weight_B.astype(bool))
    np.testing.assert_allclose(loss_bool, ref, rtol=1e-6)

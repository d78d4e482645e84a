"""The paper's objective (Eq. 3): landmark least squares + lambda-weighted cross-entropies + weight decay.

Stopped tasks are switched off by a float mask `active_A` rather than by Python branches, so stopping a
task never changes the traced program.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from tcdcn_jax.model.networks import LOG_LAMBDA


def _weighted_mean(values_B: jax.Array, weight_B: jax.Array | None) -> jax.Array:
    if weight_B is None:
        return jnp.mean(values_B)
    # Weights are per-face (0 for padding); an all-zero batch gives 0, not NaN.
    weight_B = weight_B.astype(values_B.dtype)
    total = jnp.sum(weight_B)
    return jnp.where(total > 0, jnp.sum(values_B * weight_B) / jnp.where(total > 0, total, 1.0), 0.0)


def landmark_loss_per_face(pred_BxKx2: jax.Array, true_BxKx2: jax.Array) -> jax.Array:
    """1/2 ||y - f||^2 over the 2K box-normalised coordinates of each face."""
    return 0.5 * jnp.sum(jnp.square(pred_BxKx2 - true_BxKx2), axis=(-2, -1))


def classification_loss_per_face(logits_BxC: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Softmax cross-entropy of each face."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)


def landmark_loss(pred_BxKx2: jax.Array, true_BxKx2: jax.Array,
                  weight_B: jax.Array | None = None) -> jax.Array:
    """1/2 ||y - f||^2 over the 2K box-normalised coordinates, averaged over faces."""
    return _weighted_mean(landmark_loss_per_face(pred_BxKx2, true_BxKx2), weight_B)


def classification_loss(logits_BxC: jax.Array, labels_B: jax.Array,
                        weight_B: jax.Array | None = None) -> jax.Array:
    """Softmax cross-entropy, averaged over faces."""
    return _weighted_mean(classification_loss_per_face(logits_BxC, labels_B), weight_B)


def task_lambdas(params: Mapping, fixed_A: jax.Array) -> jax.Array:
    """lambda^a: learned (exp of params['heads']['log_lambda']) when the model has it, else fixed."""
    heads = params.get("heads", {})
    if LOG_LAMBDA in heads:
        return jnp.exp(heads[LOG_LAMBDA])
    return fixed_A


def weight_decay_term(params: Mapping, aux_tasks: Sequence[str], active_A: jax.Array) -> jax.Array:
    """sum ||W||^2 over kernels (biases and task weights excluded); stopped heads drop out."""
    def sq(tree) -> jax.Array:
        leaves = [v for path, v in jax.tree_util.tree_leaves_with_path(tree)
                  if getattr(path[-1], "key", None) == "kernel"]
        return sum((jnp.sum(jnp.square(v)) for v in leaves), jnp.zeros((), jnp.float32))

    total = sq(params["trunk"]) + sq(params["heads"]["landmarks"])
    for i, task in enumerate(aux_tasks):
        total = total + active_A[i] * sq(params["heads"][task])
    return total


def total_loss(params: Mapping, outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array],
               aux_tasks: Sequence[str], active_A: jax.Array, fixed_lambda_A: jax.Array,
               weight_decay: float, weight_B: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. 3. Returns (loss, aux) with aux['task_losses_A'] the unweighted per-task losses.

    With learned task weights the auxiliary term is lambda * CE - 1/2 log(lambda): without the log term
    gradient descent would drive every lambda to zero (our choice; the paper does not say how).
    """
    lm = landmark_loss(outputs["landmarks"], batch["landmarks"], weight_B)
    loss = lm
    aux: dict[str, jax.Array] = {"landmark_loss": lm}
    if aux_tasks:
        lambda_A = task_lambdas(params, fixed_lambda_A)
        task_A = jnp.stack([classification_loss(outputs[t], batch[t], weight_B) for t in aux_tasks])
        penalty_A = 0.0
        if LOG_LAMBDA in params.get("heads", {}):
            penalty_A = -0.5 * jnp.log(lambda_A)
        loss = loss + jnp.sum(active_A * (lambda_A * task_A + penalty_A))
        aux.update(task_losses_A=task_A, lambda_A=lambda_A)
    if weight_decay:
        wd = weight_decay * weight_decay_term(params, aux_tasks, active_A)
        loss = loss + wd
        aux["weight_decay"] = wd
    aux["loss"] = loss
    return loss, aux

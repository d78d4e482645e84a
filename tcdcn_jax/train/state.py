"""The train state: everything a restart needs, as one pytree.

params, optimiser state, step (from flax's TrainState), plus the task-stop state machine and the PRNG key.
apply_fn and tx stay static (not pytree nodes), so the state can be checkpointed and donated as is.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from tcdcn_jax.train import early_stopping


class TrainState(train_state.TrainState):
    task_stop: early_stopping.TaskStopState
    rng: jax.Array  # raw uint32 key (jax.random.PRNGKey), which orbax saves as a plain array


def create(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, input_size: int,
           aux_tasks: Sequence[str], strip_length: int) -> TrainState:
    """Initialises params from `rng` and returns the state; the remaining key drives augmentation."""
    init_rng, state_rng = jax.random.split(rng)
    # One compiled program, not one per op (the same values, bit for bit; much less to compile).
    params = jax.jit(model.init)(init_rng,
                                 jnp.zeros((1, input_size, input_size, 1), jnp.float32))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                             task_stop=early_stopping.init(len(aux_tasks), strip_length),
                             rng=state_rng)


def make_optimizer(name: str, learning_rate: float, num_steps: int, schedule: str = "cosine",
                   warmup_steps: int = 0, momentum: float = 0.9,
                   trunk_lr_multiplier: float = 1.0) -> optax.GradientTransformation:
    """SGD with momentum (the paper's) or Adam, with a constant or cosine learning rate.

    `trunk_lr_multiplier` scales the trunk's updates (0 freezes it), for fine-tuning.
    """
    if schedule == "constant":
        lr = optax.constant_schedule(learning_rate)
    elif schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                                max(num_steps, warmup_steps + 1))
    else:
        raise ValueError(f"unknown schedule {schedule!r}; choose 'constant' or 'cosine'")
    if name == "sgd":
        tx = optax.sgd(lr, momentum=momentum or None)
    elif name == "adam":
        tx = optax.adam(lr)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose 'sgd' or 'adam'")
    if trunk_lr_multiplier != 1.0:
        labels = lambda params: {k: ("trunk" if k == "trunk" else "rest") for k in params}
        trunk_tx = (optax.set_to_zero() if trunk_lr_multiplier == 0
                    else optax.chain(tx, optax.scale(trunk_lr_multiplier)))
        tx = optax.multi_transform({"trunk": trunk_tx, "rest": tx}, labels)
    return tx

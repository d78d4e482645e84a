"""Pure train and eval steps, and the one place that jits them with shardings and donation.

The raw batch (uint8 photos, boxes, pixel landmarks, labels) goes to the device as it is; the crop and the
augmentation run inside the jitted step. Stopped tasks are a mask read from the state, so stopping one
never recompiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tcdcn_jax.train import early_stopping
from tcdcn_jax.train import losses
from tcdcn_jax.data import augment
from tcdcn_jax.data.pipeline import MASK_KEY
from tcdcn_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static (hashable) settings of a step."""

    aux_tasks: tuple[str, ...]
    task_lambdas: tuple[float, ...]
    weight_decay: float
    input_size: int
    augment: augment.AugmentConfig
    flip_perm: tuple[int, ...] | None = None


def _mask_stopped_heads(updates: Any, aux_tasks: tuple[str, ...], active_A: jax.Array) -> Any:
    """Zeroes the updates of stopped heads, so momentum or decay cannot move them after the stop."""
    heads = dict(updates["heads"])
    for i, task in enumerate(aux_tasks):
        heads[task] = jax.tree_util.tree_map(lambda u, a=active_A[i]: u * a, heads[task])
    return {**updates, "heads": heads}


def train_step(state: TrainState, batch: Mapping[str, jax.Array], cfg: StepConfig
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    rng, aug_key = jax.random.split(state.rng)
    data = augment.prepare_batch(aug_key, batch, cfg.input_size, cfg.augment, cfg.flip_perm)
    active_A = early_stopping.active(state.task_stop)
    lambda_A = jnp.asarray(cfg.task_lambdas, jnp.float32)

    def loss_fn(params):
        outputs = state.apply_fn({"params": params}, data["image"])
        return losses.total_loss(params, outputs, data, cfg.aux_tasks, active_A, lambda_A,
                                 cfg.weight_decay)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    if cfg.aux_tasks:
        updates = _mask_stopped_heads(updates, cfg.aux_tasks, active_A)
    params = optax.apply_updates(state.params, updates)
    task_stop = state.task_stop
    if cfg.aux_tasks:
        task_stop = early_stopping.accumulate(task_stop, aux["task_losses_A"])
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                              task_stop=task_stop)
    metrics = dict(aux, grad_norm=optax.tree.norm(grads))
    return new_state, metrics


def eval_step(params: Any, batch: Mapping[str, jax.Array], apply_fn: Callable, cfg: StepConfig
              ) -> dict[str, jax.Array]:
    """Predictions and per-face losses without augmentation; padded rows carry batch['valid'] = 0."""
    data = augment.prepare_batch(None, batch, cfg.input_size, cfg.augment, cfg.flip_perm)
    outputs = apply_fn({"params": params}, data["image"])
    per_face = {"landmarks": losses.landmark_loss_per_face(outputs["landmarks"], data["landmarks"])}
    for task in cfg.aux_tasks:
        per_face[task] = losses.classification_loss_per_face(outputs[task], data[task])
    return {"outputs": outputs, "per_face_loss": per_face}


def make_mesh(devices=None) -> Mesh:
    """A one-axis data-parallel mesh over all (or the given) devices."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


class Steps:
    """The jitted steps for one StepConfig and mesh: state replicated, batch split along 'data'."""

    def __init__(self, cfg: StepConfig, mesh: Mesh):
        self.cfg, self.mesh = cfg, mesh
        self.replicated = NamedSharding(mesh, P())
        self.batch_sharding = NamedSharding(mesh, P("data"))
        self.train = jax.jit(lambda s, b: train_step(s, b, cfg),
                             in_shardings=(self.replicated, self.batch_sharding),
                             out_shardings=(self.replicated, self.replicated),
                             donate_argnums=0)
        self._eval_cache: dict[Callable, Callable] = {}

    def eval(self, params: Any, batch: Mapping[str, Any], apply_fn: Callable) -> dict:
        if apply_fn not in self._eval_cache:
            self._eval_cache[apply_fn] = jax.jit(
                lambda p, b: eval_step(p, b, apply_fn, self.cfg),
                in_shardings=(self.replicated, self.batch_sharding),
                out_shardings=self.replicated)
        return self._eval_cache[apply_fn](params, batch)

    @property
    def keys(self) -> tuple[str, ...]:
        """The batch arrays a step reads: geometry, the auxiliary labels and, in evaluation, the mask."""
        return ("image", "box", "landmarks", *self.cfg.aux_tasks, MASK_KEY)

    def put_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """The global batch, split along 'data', with only the arrays a step reads (`keys`).

        With several processes each one takes only its own rows of the (identical, seed-determined)
        global batch and sends just those to its devices."""
        batch = {k: v for k, v in batch.items() if k in self.keys}
        n = self.mesh.devices.size
        size = next(iter(batch.values())).shape[0]
        if size % n:
            raise ValueError(f"batch of {size} does not split over {n} devices")
        if jax.process_count() == 1:
            return jax.device_put(dict(batch), self.batch_sharding)
        per_process = size // jax.process_count()
        rows = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v)[rows],
                                                          v.shape)
                for k, v in batch.items()}

    def put_state(self, state: TrainState) -> TrainState:
        return jax.device_put(state, self.replicated)

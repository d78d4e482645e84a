"""A TCDCN from a run's config or from its params, and the check that params fit a model.

The config says the trunk (kind, activation, width) and the training tasks; a checkpoint's params say
the rest (how many landmarks, which auxiliary heads, learned task weights), so a fine-tuned or imported
model is rebuilt from its workdir alone.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tcdcn_jax.model import networks


def aux_task_names(config) -> tuple[str, ...]:
    """config.aux_tasks as a tuple: a comma-separated string ('' for none) or a sequence."""
    tasks = config.aux_tasks
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    return tuple(tasks)


def from_config(config, num_landmarks: int) -> networks.TCDCN:
    """The model a training config describes, with a `num_landmarks`-point head."""
    return networks.make_model(num_landmarks, aux_task_names(config), config.trunk, config.activation,
                               config.get("features") or None, config.learn_task_weights)


def from_params(config, params: Mapping[str, Any], where: str = "") -> networks.TCDCN:
    """The model whose trunk `config` describes and whose heads `params` hold; params checked."""
    heads = params.get("heads", {})
    if "landmarks" not in heads:
        raise ValueError(f"checkpoint{_where(where)} has no landmark head")
    num_landmarks = heads["landmarks"]["kernel"].shape[-1] // 2
    aux = {name: h["kernel"].shape[-1] for name, h in heads.items()
           if name not in ("landmarks", networks.LOG_LAMBDA)}
    model = networks.make_model(num_landmarks, aux, config.trunk, config.activation,
                                config.get("features") or None,
                                learn_task_weights=networks.LOG_LAMBDA in heads)
    check_params(model, params, where)
    return model


def param_shapes(model: networks.TCDCN) -> dict[str, Any]:
    """The model's params as jax.ShapeDtypeStruct leaves, traced without running (or compiling) init."""
    size = networks.input_size(model.trunk)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, size, size, 1), jnp.float32))["params"]


def check_params(model: networks.TCDCN, params: Mapping[str, Any], where: str = "") -> None:
    """ValueError naming the first param whose presence or shape differs from what `model` needs."""
    expected = param_shapes(model)
    want = {jax.tree_util.keystr(k): v.shape
            for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(k): np.shape(v)
           for k, v in jax.tree_util.tree_leaves_with_path(params)}
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            raise ValueError(f"checkpoint{_where(where)} does not fit a {model.trunk} TCDCN: "
                             f"param {name} has shape {got.get(name)}, the model needs "
                             f"{want.get(name)}")


def _where(where: str) -> str:
    return f" {where}" if where else ""

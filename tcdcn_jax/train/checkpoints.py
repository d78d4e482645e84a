"""Orbax checkpoints of the train state, and loading pretrained params for transfer."""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from tcdcn_jax.train.state import TrainState

_FIELDS = ("step", "params", "opt_state", "task_stop", "rng")


def manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def _as_tree(state: TrainState) -> dict[str, Any]:
    tree = {f: getattr(state, f) for f in _FIELDS}
    if not np.size(state.task_stop.stopped_A):
        # Orbax refuses zero-size arrays; a landmarks-only run has no task-stop state worth keeping
        # (restore_latest then leaves the state's own, empty one in place).
        tree.pop("task_stop")
    return tree


def save(mngr: ocp.CheckpointManager, state: TrainState, force: bool = False) -> None:
    """Saves the state at its step (waits, so a kill right after never leaves half a checkpoint)."""
    mngr.save(int(jax.device_get(state.step)), args=ocp.args.StandardSave(_as_tree(state)),
              force=force)
    mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, state: TrainState) -> TrainState | None:
    """The latest checkpoint restored into the structure of `state`, or None when there is none."""
    step = mngr.latest_step()
    if step is None:
        return None
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _as_tree(state))
    tree = mngr.restore(step, args=ocp.args.StandardRestore(target))
    return state.replace(**tree)


def restore_params(workdir: str) -> tuple[int, dict[str, Any]]:
    """(step, params) of the latest checkpoint in a workdir, read without knowing the model."""
    mngr = manager(workdir)
    step = mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {os.path.join(workdir, 'checkpoints')}")
    tree = mngr.restore(step, args=ocp.args.StandardRestore())
    return step, jax.tree_util.tree_map(np.asarray, tree["params"])


def load_pretrained(params: dict[str, Any], pretrained: dict[str, Any],
                    dont_load: Sequence[str] = ()) -> dict[str, Any]:
    """Copies `pretrained` into `params` except top-level/second-level keys named in dont_load.

    Names are paths like "heads" or "heads/landmarks". Every loaded leaf must match in shape.
    """
    skip = {tuple(n.split("/")) for n in dont_load}

    def merge(own, other, prefix):
        if prefix in skip:
            return own
        if isinstance(own, dict):
            missing = [k for k in own if k not in other and prefix + (k,) not in skip]
            if missing:
                raise ValueError(f"pretrained params lack {['/'.join(prefix + (k,)) for k in missing]}")
            return {k: merge(v, other.get(k), prefix + (k,)) for k, v in own.items()}
        if np.shape(own) != np.shape(other):
            raise ValueError(f"shape mismatch at {'/'.join(prefix)}: model {np.shape(own)}, "
                             f"pretrained {np.shape(other)}")
        return jax.numpy.asarray(other, dtype=own.dtype)

    return merge(dict(params), dict(pretrained), ())


def read_config(workdir: str):
    """The ConfigDict a run saved as workdir/config.json."""
    import json

    import ml_collections

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a tcdcn_jax workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_model(workdir: str):
    """(model, params, config) of a workdir's latest checkpoint, the model rebuilt from its config.

    The landmark count and auxiliary heads are read off the params, so a fine-tuned or imported model
    needs nothing else.
    """
    from tcdcn_jax.train import losses
    from tcdcn_jax.model import networks

    config = read_config(workdir)
    _, params = restore_params(workdir)
    heads = params["heads"]
    if "landmarks" not in heads:
        raise ValueError(f"checkpoint in {workdir!r} has no landmark head")
    num_landmarks = heads["landmarks"]["kernel"].shape[-1] // 2
    aux = {name: h["kernel"].shape[-1] for name, h in heads.items()
           if name not in ("landmarks", losses.LOG_LAMBDA)}
    model = networks.make_model(num_landmarks, aux, config.trunk, config.activation,
                              config.get("features") or None,
                              learn_task_weights=losses.LOG_LAMBDA in heads)
    return model, params, config

"""A workdir's weights and config: the one way in and the one way out.

A workdir holds config.json and checkpoints/ (orbax). Out: `save` (the train state, every
checkpoint_every steps) and `write_weights` (params alone, for weights trained elsewhere: a workdir
that loads like any run). In: `restore_latest` (the train state, to resume), `load_params` (params,
without knowing the model) and `load_model` (the model rebuilt from config + params, params checked).
`load_pretrained` merges pretrained params into a fresh tree for transfer.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from tcdcn_jax.model import build
from tcdcn_jax.train.state import TrainState

CONFIG_FILE = "config.json"
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


def _save(mngr: ocp.CheckpointManager, step: int, tree: dict[str, Any]) -> None:
    # Waits, so a kill right after never leaves half a checkpoint.
    mngr.save(step, args=ocp.args.StandardSave(tree))
    mngr.wait_until_finished()


def save(mngr: ocp.CheckpointManager, state: TrainState) -> None:
    """Saves the train state at its step."""
    _save(mngr, int(jax.device_get(state.step)), _as_tree(state))


def write_weights(workdir: str, params: dict[str, Any], config: ml_collections.ConfigDict,
                  step: int = 0) -> str:
    """A workdir of params alone (config.json + a checkpoint at `step`) that `load_model` reads like
    any run; returns its absolute path. Refuses a workdir that already holds checkpoints."""
    workdir = os.path.abspath(os.fspath(workdir))
    mngr = manager(workdir)
    if mngr.latest_step() is not None:
        raise ValueError(f"{workdir} already holds checkpoints; choose an empty folder")
    tree = {"step": np.asarray(step, np.int32), "params": jax.tree_util.tree_map(np.asarray, params)}
    _save(mngr, step, tree)
    write_config(workdir, config)
    return workdir


def restore_latest(mngr: ocp.CheckpointManager, state: TrainState) -> TrainState | None:
    """The latest checkpoint restored into the structure of `state`, or None when there is none."""
    step = mngr.latest_step()
    if step is None:
        return None
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _as_tree(state))
    tree = mngr.restore(step, args=ocp.args.StandardRestore(target))
    return state.replace(**tree)


def load_params(workdir: str) -> tuple[int, dict[str, Any]]:
    """(step, params) of the latest checkpoint in a workdir, read without knowing the model."""
    mngr = manager(workdir)
    step = mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {os.path.join(workdir, 'checkpoints')}")
    tree = mngr.restore(step, args=ocp.args.StandardRestore())
    return step, jax.tree_util.tree_map(np.asarray, tree["params"])


def load_model(workdir: str):
    """(model, params, config) of a workdir's latest checkpoint, the model rebuilt from its config
    and params (see model.build.from_params)."""
    config = read_config(workdir)
    _, params = load_params(workdir)
    return build.from_params(config, params, f"in {workdir!r}"), params, config


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json(indent=2))


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The ConfigDict a run saved as workdir/config.json."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a tcdcn_jax workdir?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_pretrained(params: dict[str, Any], pretrained: dict[str, Any],
                    dont_load: Sequence[str] = ()) -> dict[str, Any]:
    """Copies `pretrained` into `params` except the subtrees named in dont_load, which keep their
    own values.

    Names are paths like "heads" or "heads/landmarks"; each must name a subtree of `params` (a typo
    would silently load what it meant to skip). Every loaded leaf must match in shape.
    """
    skip = {tuple(n.split("/")) for n in dont_load}
    found = set()

    def merge(own, other, prefix):
        name = "/".join(prefix)
        if prefix in skip:
            found.add(prefix)
            return own
        if isinstance(own, dict):
            if not isinstance(other, dict):
                raise ValueError(f"pretrained params have a leaf at {name}, the model a subtree")
            missing = [k for k in own if k not in other and prefix + (k,) not in skip]
            if missing:
                raise ValueError(f"pretrained params lack {['/'.join(prefix + (k,)) for k in missing]}")
            return {k: merge(v, other.get(k), prefix + (k,)) for k, v in own.items()}
        if isinstance(other, dict) or np.shape(own) != np.shape(other):
            got = "a subtree" if isinstance(other, dict) else np.shape(other)
            raise ValueError(f"shape mismatch at {name}: model {np.shape(own)}, pretrained {got}")
        return jax.numpy.asarray(other, dtype=own.dtype)

    merged = merge(dict(params), dict(pretrained), ())
    unknown = sorted("/".join(p) for p in skip
                     if not any(p[:i] in found for i in range(1, len(p) + 1)))
    if unknown:
        raise ValueError(f"dont_load names {unknown}, which the model's params do not have")
    return merged

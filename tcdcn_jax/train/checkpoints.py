"""A workdir's weights and config: the one way in and the one way out.

A workdir holds config.json, checkpoints/ (orbax) and, when a checkpoint failed its check,
checkpoints_set_aside/. Out: `save` (the train state, every checkpoint_every steps) and
`write_weights` (params alone, for weights trained elsewhere: a workdir that loads like any run).
In: `restore_latest` (the train state, to resume), `load_params` (params, without knowing the
model) and `load_model` (the model rebuilt from config + params, params checked).
`load_pretrained` merges pretrained params into a fresh tree for transfer.

Every checkpoint is verified. Once orbax has committed a step folder, `save` adds the run's config
(config.json) and then, last, digest.json: the sha256 of every other file of the folder. Both live
inside the step folder so that they move, and are deleted by max_to_keep, with the files they
describe. A step is good when its commit marker is there and every file matches the digest (so a
flipped bit, a cut file, a half-written folder or a save killed before its digest are all caught
without unpickling anything). Readers use the newest good step; `restore_latest`, which runs in the
process that owns the workdir, also moves each bad one to checkpoints_set_aside/ (never deleted).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterator, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from tcdcn_jax.model import build
from tcdcn_jax.train import workdir as workdir_lib
from tcdcn_jax.train.state import TrainState

CONFIG_FILE = "config.json"
DIGEST_FILE = "digest.json"
SET_ASIDE_DIR = "checkpoints_set_aside"
# The file orbax writes into a step folder just before it renames the folder to its final name; on a
# local disk orbax itself trusts the name alone, so a folder copied or renamed by hand passes there.
COMMIT_MARKER = "commit_success.txt"
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


def _step_dir(mngr: ocp.CheckpointManager, step: int) -> str:
    # manager() keeps orbax's standard step names: the bare step number.
    return os.path.join(os.fspath(mngr.directory), str(step))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(step_dir: str) -> list[str]:
    """Every file of a step folder but the digest, as sorted paths relative to the folder."""
    out = []
    for root, _, names in os.walk(step_dir):
        out += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
    return sorted(p for p in out if p != DIGEST_FILE)


def seal(step_dir: str, config: ml_collections.ConfigDict | None) -> None:
    """Adds the config, then the digest of every file, to a step folder orbax has committed."""
    if config is not None:
        workdir_lib.write_text(os.path.join(step_dir, CONFIG_FILE), config.to_json(indent=2))
    digest = {rel: _sha256(os.path.join(step_dir, rel)) for rel in _files(step_dir)}
    workdir_lib.write_text(os.path.join(step_dir, DIGEST_FILE),
                           json.dumps({"sha256": digest}, indent=1))


def why_bad(step_dir: str) -> tuple[str, str] | None:
    """(short name, reason) why a step folder cannot be trusted, or None when it verifies."""
    if not os.path.exists(os.path.join(step_dir, COMMIT_MARKER)):
        return "no-commit-marker", f"no {COMMIT_MARKER}: a save that never finished"
    if not ocp.step.is_checkpoint_finalized(step_dir):
        return "not-finalized", "orbax does not consider it finalized"
    try:
        with open(os.path.join(step_dir, DIGEST_FILE)) as f:
            digest = json.load(f)["sha256"]
    except FileNotFoundError:
        return "no-digest", (f"no {DIGEST_FILE}: a save killed before its digest (or still "
                             "writing it), or a checkpoint not written by tcdcn_jax")
    except (ValueError, KeyError, TypeError):
        return "bad-digest", f"{DIGEST_FILE} is unreadable"
    files = _files(step_dir)
    missing, extra = sorted(set(digest) - set(files)), sorted(set(files) - set(digest))
    if missing:
        return "missing-file", f"{missing[0]} is missing"
    if extra:
        return "unknown-file", f"{extra[0]} is not in the digest"
    changed = [rel for rel in files if _sha256(os.path.join(step_dir, rel)) != digest[rel]]
    if changed:
        return "digest-mismatch", f"{changed[0]} differs from its digest"
    return None


def _set_aside(step_dir: str, name: str) -> str:
    """Moves a bad step folder out of orbax's sight, to
    <workdir>/checkpoints_set_aside/<step>.<name> (never deleted: it is evidence, and may hold
    what a person wants back)."""
    aside = os.path.join(os.path.dirname(os.path.dirname(step_dir)), SET_ASIDE_DIR)
    os.makedirs(aside, exist_ok=True)
    base = os.path.join(aside, f"{os.path.basename(step_dir)}.{name}")
    target, n = base, 1
    while os.path.exists(target):
        target, n = f"{base}.{n}", n + 1
    os.rename(step_dir, target)
    return target


def _good_steps(mngr: ocp.CheckpointManager, set_aside: bool,
                warn: bool = True) -> Iterator[tuple[int, str]]:
    """(step, step folder) of each step that verifies, newest first; one warning per bad step
    (unless not `warn`), which `set_aside` moves away (in process 0 only: the others skip it)."""
    mngr.reload()  # the folders on disk, not the manager's memory of them
    for step in sorted(mngr.all_steps(), reverse=True):
        step_dir = _step_dir(mngr, step)
        bad = why_bad(step_dir)
        if bad is None:
            yield step, step_dir
        elif set_aside and jax.process_index() == 0:
            target = _set_aside(step_dir, bad[0])
            mngr.reload()  # max_to_keep and latest_step() must not count it any more
            logging.warning("checkpoint %s is bad (%s): set aside as %s; trying the one before",
                            step_dir, bad[1], target)
        elif warn:
            logging.warning("checkpoint %s is bad (%s): skipped", step_dir, bad[1])


def _save(mngr: ocp.CheckpointManager, step: int, tree: dict[str, Any],
          config: ml_collections.ConfigDict | None) -> None:
    # Waits, so a kill right after never leaves half a checkpoint.
    mngr.save(step, args=ocp.args.StandardSave(tree))
    mngr.wait_until_finished()
    if jax.process_index() == 0:
        seal(_step_dir(mngr, step), config)


def save(mngr: ocp.CheckpointManager, state: TrainState,
         config: ml_collections.ConfigDict | None = None) -> None:
    """Saves the train state at its step, then seals the step folder with the run's config and the
    digest its readers check (see the top)."""
    _save(mngr, int(jax.device_get(state.step)), _as_tree(state), config)


def write_weights(workdir: str, params: dict[str, Any], config: ml_collections.ConfigDict,
                  step: int = 0) -> str:
    """A workdir of params alone (config.json + a checkpoint at `step`) that `load_model` reads like
    any run; returns its absolute path. Refuses a workdir that already holds checkpoints."""
    workdir = os.path.abspath(os.fspath(workdir))
    mngr = manager(workdir)
    if mngr.latest_step() is not None:
        raise ValueError(f"{workdir} already holds checkpoints; choose an empty folder")
    tree = {"step": np.asarray(step, np.int32), "params": jax.tree_util.tree_map(np.asarray, params)}
    _save(mngr, step, tree, config)
    write_config(workdir, config)
    return workdir


def restore_latest(mngr: ocp.CheckpointManager, state: TrainState) -> TrainState | None:
    """The newest good checkpoint restored into the structure of `state`, or None without one.

    Bad ones are set aside on the way. A good one that does not fit `state` raises: its files are
    the ones that were saved, so the run, not the checkpoint, differs (a changed model)."""
    mngr.reload()
    had_steps = bool(mngr.all_steps())
    for step, step_dir in _good_steps(mngr, set_aside=True):
        target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _as_tree(state))
        try:
            tree = mngr.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"checkpoint {step_dir} verifies but does not fit this run's train "
                             f"state ({first})") from err
        return state.replace(**tree)
    if had_steps:
        logging.warning("no good checkpoint left under %s: training starts from step 0",
                        mngr.directory)
    return None


def latest_step_path(mngr: ocp.CheckpointManager) -> str | None:
    """The folder of the newest good checkpoint (the one a re-run resumes from), or None; quiet, as
    the re-run names the bad ones it sets aside."""
    return next((d for _, d in _good_steps(mngr, set_aside=False, warn=False)), None)


def _load(workdir: str) -> tuple[int, str, dict[str, Any]]:
    """(step, step folder, params) of a workdir's newest good checkpoint. FileNotFoundError without
    any checkpoint; ValueError when none verifies (each bad one was named in a warning)."""
    mngr = manager(workdir)
    for step, step_dir in _good_steps(mngr, set_aside=False):
        tree = mngr.restore(step, args=ocp.args.StandardRestore())
        return step, step_dir, jax.tree_util.tree_map(np.asarray, tree["params"])
    directory = os.path.join(workdir, "checkpoints")
    if mngr.all_steps():
        newest = _step_dir(mngr, max(mngr.all_steps()))
        why = why_bad(newest) or ("", "sealed while this looked: read it again")
        raise ValueError(f"no checkpoint under {directory} verifies (the newest, {newest}: "
                         f"{why[1]})")
    raise FileNotFoundError(f"no checkpoint under {directory}: is {workdir!r} a tcdcn_jax workdir?")


def load_params(workdir: str) -> tuple[int, dict[str, Any]]:
    """(step, params) of the newest good checkpoint in a workdir, read without knowing the model
    (errors: see _load)."""
    step, _, params = _load(workdir)
    return step, params


def load_model(workdir: str):
    """(model, params, config) of a workdir's newest good checkpoint, the model rebuilt from the
    config saved with it (else workdir/config.json) and its params (see model.build.from_params)."""
    return load_model_and_step(workdir)[1:]


def load_model_and_step(workdir: str):
    """(step, model, params, config): load_model and the step of the checkpoint it read."""
    step, step_dir, params = _load(workdir)
    path = os.path.join(step_dir, CONFIG_FILE)
    config = _read_json_config(path) if os.path.exists(path) else read_config(workdir)
    return step, build.from_params(config, params, f"in {workdir!r}"), params, config


def checkpoint_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config saved with a workdir's newest good checkpoint, or None when no good checkpoint
    holds one (no checkpoint yet: a run that failed before its first save leaves nothing here).
    Quiet: the run that resumes names the bad checkpoints it skips when it sets them aside."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return None  # manager() would create the folder
    for _, step_dir in _good_steps(manager(workdir), set_aside=False, warn=False):
        path = os.path.join(step_dir, CONFIG_FILE)
        return _read_json_config(path) if os.path.exists(path) else None
    return None


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    workdir_lib.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=2))


def _read_json_config(path: str) -> ml_collections.ConfigDict:
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The ConfigDict a run saved as workdir/config.json."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a tcdcn_jax workdir?")
    return _read_json_config(path)


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

"""Transfer (report section 3.3): keep a pretrained trunk, put a fresh K-point head on it, fine-tune.

`finetune(config, workdir)` loads the trunk of the orbax checkpoint in `config.init_from` (or starts
from scratch when it is ''), drops every pretrained head (the 5-point landmarks, the auxiliary tasks,
learned task weights), trains through loop.train_and_evaluate with no auxiliary task, and then adds
to summary.json what the study reads: the hard slices of the test set (large yaw, occluded; the
loop's test summary has them) at the top level, and the TCDCN-Averaged result next to the loop's
single-pass figures.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from tcdcn_jax.model import averaging
from tcdcn_jax.model import build as model_build
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import distributed
from tcdcn_jax.eval.evaluate import averaged_summary, grid_summaries
from tcdcn_jax.train import loop
from tcdcn_jax.train import setup
from tcdcn_jax.train import workdir as workdir_lib
from tcdcn_jax.data import sources

# Settings that shape the trunk's parameters or function: the fine-tune must use the pretrain's.
TRUNK_KEYS = ("trunk", "activation", "features")


def check_trunk_matches(config, pretrain_config, init_from: str = "") -> None:
    """Fails clearly when the fine-tune config describes another trunk than the checkpoint holds."""
    bad = [k for k in TRUNK_KEYS if (config.get(k) or 0) != (pretrain_config.get(k) or 0)]
    if bad:
        details = ", ".join(f"{k}: pretrain {pretrain_config.get(k)!r} vs fine-tune {config.get(k)!r}"
                            for k in bad)
        flags = " ".join(f"--config.{k}={pretrain_config.get(k)}" for k in bad)
        raise ValueError(f"the checkpoint in {init_from!r} has another trunk ({details}); "
                         f"pass {flags}")


def transfer_params(fresh: dict[str, Any], pretrained: dict[str, Any]) -> dict[str, Any]:
    """`fresh` (the fine-tune model's initial params) with its trunk replaced by the pretrained one.

    Every pretrained head is dropped; the fresh heads (the K-point landmark head) stay as initialised.
    """
    if "trunk" not in pretrained:
        raise ValueError(f"pretrained params have no 'trunk' (top-level keys: {sorted(pretrained)})")
    extra = sorted(set(fresh["heads"]) - {"landmarks"})
    if extra:
        raise ValueError(f"fine-tuning trains landmarks only, but the model has heads {extra}: "
                         "set config.aux_tasks='' and learn_task_weights=False")
    return checkpoints.load_pretrained(fresh, pretrained, dont_load=("heads",))


def initial_params(config, splits: sources.Splits) -> dict[str, Any]:
    """The step-0 params of a fine-tune: pretrained trunk + fresh head, or all fresh (from scratch)."""
    _, _, state = setup.build(config, splits)
    fresh = jax.device_get(state.params)
    if not config.init_from:
        return transfer_params(fresh, {"trunk": fresh["trunk"]})
    check_trunk_matches(config, checkpoints.read_config(config.init_from), config.init_from)
    step, pretrained = checkpoints.load_params(config.init_from)
    logging.info("trunk from %s (step %d); heads dropped: %s", config.init_from, step,
                 sorted(pretrained.get("heads", {})))
    return transfer_params(fresh, pretrained)


def compare_grids(workdir: str, dataset, grids: Mapping[str, np.ndarray],
                  batch_size: int = 250) -> dict[str, Any]:
    """grid_summaries for a workdir's latest checkpoint."""
    model, params, _ = checkpoints.load_model(workdir)
    return grid_summaries(model, params, dataset, grids, batch_size)


def finetune(config, workdir: str, splits: sources.Splits | None = None,
             allow_config_change: bool = False) -> dict[str, Any]:
    """Fine-tunes (resumable) and writes summary.json with 'slices' and, if asked, 'averaged'."""
    if model_build.aux_task_names(config):
        raise ValueError(f"fine-tuning runs without auxiliary tasks; got aux_tasks={config.aux_tasks!r}")
    splits = splits or sources.load(config)
    init = initial_params(config, splits)
    summary = loop.train_and_evaluate(config, workdir, splits, init_params=init,
                                       allow_config_change=allow_config_change)
    summary["init_from"] = config.init_from or None
    summary["slices"] = summary["test"]["slices"]
    avg_cfg = config.averaging
    if avg_cfg.enabled:
        offsets_Tx2 = averaging.grid_offsets(int(avg_cfg.step_px), int(avg_cfg.radius))
        model, params, _ = checkpoints.load_model(workdir)
        batch = int(config.eval_batch_size)
        avg = averaged_summary(model, params, splits.test, offsets_Tx2, batch)
        summary["averaged"] = {"averaged": avg, "mode": averaging.sharing_mode(model.trunk),
                               "single_nme": summary["test"]["nme"], "extra_tests": {}}
        if "sharing" in avg:
            summary["averaged"]["sharing"] = avg.pop("sharing")
        translations = avg.pop("translations")
        # 300-W's common / challenging subsets (test is 'full'): single vs Averaged on each.
        for name, dataset in splits.extra_tests.items():
            one = summary["test"][name]
            many = averaged_summary(model, params, dataset, offsets_Tx2, batch)
            summary["averaged"]["extra_tests"][name] = {
                "single_nme": one["nme"], "single_failure_rate": one["failure_rate"],
                "averaged_nme": many["nme"], "averaged_failure_rate": many["failure_rate"]}
        logging.info("test NME single %.4f, averaged over %d translations %.4f",
                     summary["test"]["nme"], translations, avg["nme"])
    if distributed.is_primary():
        workdir_lib.write_json(os.path.join(workdir, "summary.json"), summary)
    return summary

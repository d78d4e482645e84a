"""Transfer (report section 3.3): keep a pretrained trunk, put a fresh K-point head on it, fine-tune.

`finetune(config, workdir)` loads the trunk of the orbax checkpoint in `config.init_from` (or starts
from scratch when it is ''), drops every pretrained head (the 5-point landmarks, the auxiliary tasks,
learned task weights), trains through loop.train_and_evaluate with no auxiliary task, and then adds
to summary.json what the study needs and the pretraining loop does not compute: the hard slices of
the test set (large yaw, occluded) and the TCDCN-Averaged result.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from tcdcn_jax.model import averaging
from tcdcn_jax.model import build as model_build
from tcdcn_jax.model import networks
from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import distributed
from tcdcn_jax.eval import evaluate
from tcdcn_jax.eval import metrics
from tcdcn_jax.train import loop
from tcdcn_jax.train import setup
from tcdcn_jax.data import sources
from tcdcn_jax.layouts import get_layout

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


def hard_slices(dataset) -> dict[str, np.ndarray]:
    """Boolean masks of the test faces the paper says multi-task pretraining helps most."""
    out = {}
    if "pose" in dataset.arrays:
        out["large_pose"] = np.isin(dataset["pose"], (0, 4))
    if "occluded" in dataset.arrays:
        out["occluded"] = dataset["occluded"] == 1
    if out:
        out["hard"] = np.logical_or.reduce(list(out.values()))
    return out


def landmark_summary(lm_norm_NxKx2: np.ndarray, dataset) -> dict[str, Any]:
    """NME and failure rate overall and on each hard slice (pixels, inter-ocular normalised)."""
    true_px = dataset["landmarks"]
    nme_N = metrics.nme_per_face(evaluate.to_pixels(lm_norm_NxKx2, dataset["box"]), true_px,
                                 get_layout(true_px.shape[1]))
    out = {"nme": float(nme_N.mean()), "failure_rate": metrics.failure_rate(nme_N), "slices": {}}
    for name, mask in hard_slices(dataset).items():
        if mask.any():
            out["slices"][name] = {"num_faces": int(mask.sum()), "nme": float(nme_N[mask].mean()),
                                   "failure_rate": metrics.failure_rate(nme_N[mask])}
    return out


def grid_summaries(model, params: dict[str, Any], dataset, grids: Mapping[str, np.ndarray],
                   batch_size: int = 250) -> dict[str, Any]:
    """Single pass and TCDCN-Averaged on each translation grid (none: the single pass alone).

    Returns {'single': summary, 'grids': {name: summary + translations (+ sharing)}, 'mode'}.
    """
    single = averaging.predict_dataset(model, params, dataset["image"], dataset["box"],
                                       np.zeros((1, 2), np.int32), batch_size)
    result = {"single": landmark_summary(single, dataset), "grids": {},
              "mode": "shared" if networks.shares_convolutions(model.trunk) else "passes"}
    for name, offsets_Tx2 in grids.items():
        avg = averaging.predict_dataset(model, params, dataset["image"], dataset["box"],
                                        offsets_Tx2, batch_size)
        entry = landmark_summary(avg, dataset)
        entry["translations"] = int(len(offsets_Tx2))
        if networks.shares_convolutions(model.trunk):
            entry["sharing"] = averaging.sharing_cost(offsets_Tx2)
        result["grids"][name] = entry
    return result


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
    avg_cfg = config.averaging
    grids = ({"averaged": averaging.grid_offsets(int(avg_cfg.step_px), int(avg_cfg.radius))}
             if avg_cfg.enabled else {})
    model, params, _ = checkpoints.load_model(workdir)
    batch = int(config.eval_batch_size)
    res = grid_summaries(model, params, splits.test, grids, batch)
    summary["slices"] = res["single"]["slices"]
    if avg_cfg.enabled:
        avg = dict(res["grids"]["averaged"])
        summary["averaged"] = {"averaged": avg, "mode": res["mode"]}
        if "sharing" in avg:
            summary["averaged"]["sharing"] = avg.pop("sharing")
        translations = avg.pop("translations")
        summary["averaged"]["single_nme"] = res["single"]["nme"]  # must equal test.nme
        # 300-W's common / challenging subsets (test is 'full'): single vs Averaged on each.
        summary["averaged"]["extra_tests"] = {}
        for name, dataset in splits.extra_tests.items():
            extra = grid_summaries(model, params, dataset, grids, batch)
            one, many = extra["single"], extra["grids"]["averaged"]
            summary["averaged"]["extra_tests"][name] = {
                "single_nme": one["nme"], "single_failure_rate": one["failure_rate"],
                "averaged_nme": many["nme"], "averaged_failure_rate": many["failure_rate"]}
        logging.info("test NME single %.4f, averaged over %d translations %.4f",
                     res["single"]["nme"], translations, avg["nme"])
    if distributed.is_primary():
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary

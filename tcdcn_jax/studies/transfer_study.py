"""The report's transfer claim, measured: three arms fine-tuned to 68 points on the same data with the
same seeds: from the multi-task pretrain (5 points + pose, gender, glasses, smile), from a landmark-only
pretrain (5 points), from scratch. Each pretrain runs once (or is taken from an existing workdir); every
arm is fine-tuned once per seed. Layout under the study workdir: pretrain_<arm>/,
finetune_<arm>_seed<s>/, study_config.json, transfer.json, transfer.md. Resumable: a finished run of
the same config is kept, a half-done run resumes from its checkpoint.
Command: `python -m experiments.transfer_study --flagfile=experiments/flagfiles/transfer_study.flags`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging

from tcdcn_jax.train import checkpoints
from tcdcn_jax.train import distributed
from tcdcn_jax.train import loop
from tcdcn_jax.train import setup
from tcdcn_jax.train import transfer
from tcdcn_jax.train import workdir as workdir_lib
from tcdcn_jax.data import sources

ARMS = ("multitask", "landmark_only", "scratch")
PRETRAINED_ARMS = ARMS[:2]
# (name in transfer.json, path in a fine-tune's summary.json)
METRICS = (
    ("nme", ("test", "nme")),
    ("failure_rate", ("test", "failure_rate")),
    ("hard_nme", ("slices", "hard", "nme")),
    ("hard_failure_rate", ("slices", "hard", "failure_rate")),
    ("large_pose_nme", ("slices", "large_pose", "nme")),
    ("occluded_nme", ("slices", "occluded", "nme")),
    ("averaged_nme", ("averaged", "averaged", "nme")),
    ("averaged_failure_rate", ("averaged", "averaged", "failure_rate")),
    ("averaged_hard_nme", ("averaged", "averaged", "slices", "hard", "nme")),
    ("mean_shape_nme", ("test", "mean_shape_nme")),
)


def _copy(config) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(config.to_dict())


def seeds_of(study) -> list[int]:
    seeds = [int(s) for s in str(study.seeds).split(",") if s.strip()]
    if not seeds:
        raise ValueError(f"study.seeds must name at least one seed, got {study.seeds!r}")
    return seeds


def pretrain_workdirs(study, workdir: str) -> dict[str, str]:
    given = {"multitask": study.multitask_workdir, "landmark_only": study.landmark_only_workdir}
    return {arm: given[arm] or os.path.join(workdir, f"pretrain_{arm}") for arm in PRETRAINED_ARMS}


def run_pretrains(study, workdir: str, allow_config_change: bool = False) -> dict[str, str]:
    """Runs the pretrains that are neither given nor finished; returns arm -> pretrain workdir."""
    dirs = pretrain_workdirs(study, workdir)
    splits = None
    for arm, wd in dirs.items():
        given = wd != os.path.join(workdir, f"pretrain_{arm}")
        if given:
            if not os.path.isdir(os.path.join(wd, "checkpoints")):
                raise FileNotFoundError(f"{arm} pretrain workdir {wd!r} has no checkpoints/")
            continue
        config = _copy(study.pretrain)
        if arm == "landmark_only":
            config.aux_tasks = ""
        if setup.finished_summary(config, wd, allow_config_change) is not None:
            logging.info("pretrain %s: done (%s)", arm, wd)
            continue
        splits = splits or sources.load(config)
        logging.info("pretrain %s -> %s", arm, wd)
        loop.train_and_evaluate(config, wd, splits, allow_config_change=allow_config_change)
    return dirs


def finetune_workdir(workdir: str, arm: str, seed: int) -> str:
    return os.path.join(workdir, f"finetune_{arm}_seed{seed}")


def run_finetunes(study, workdir: str, pretrained: dict[str, str],
                  allow_config_change: bool = False) -> None:
    splits = None
    for seed in seeds_of(study):
        for arm in ARMS:
            wd = finetune_workdir(workdir, arm, seed)
            config = _copy(study.finetune)
            config.seed = seed
            config.init_from = pretrained.get(arm, "")
            if setup.finished_summary(config, wd, allow_config_change) is not None:
                logging.info("fine-tune %s seed %d: done", arm, seed)
                continue
            splits = splits or sources.load(config)
            logging.info("fine-tune %s seed %d -> %s", arm, seed, wd)
            transfer.finetune(config, wd, splits, allow_config_change=allow_config_change)


def _get(tree: dict, path: Sequence[str]):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def collect(workdir: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Per arm: every metric per seed, with mean, sample std, min and max over seeds."""
    arms = {}
    for arm in ARMS:
        runs = []
        for seed in seeds:
            path = os.path.join(finetune_workdir(workdir, arm, seed), "summary.json")
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} missing: the {arm} arm, seed {seed} has not finished")
            with open(path) as f:
                runs.append(json.load(f))
        stats = {}
        for name, key_path in METRICS:
            values = [_get(r, key_path) for r in runs]
            if any(v is None for v in values):
                continue
            v = np.asarray(values, np.float64)
            stats[name] = {"per_seed": v.tolist(), "mean": float(v.mean()),
                           "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                           "min": float(v.min()), "max": float(v.max())}
        hard = [_get(r, ("slices", "hard", "num_faces")) for r in runs]
        arms[arm] = {"metrics": stats, "hard_faces": hard[0], "test_faces": runs[0]["test"]["num_faces"]}
    return {"seeds": list(seeds), "arms": arms}


def _cell(stats: dict, name: str, scale: float) -> str:
    if name not in stats:
        return "-"
    s = stats[name]
    return f"{s['mean'] * scale:.2f} ± {s['std'] * scale:.2f}"


def markdown(results: dict[str, Any], settings: str) -> str:
    cols = (("NME", "nme", 100), ("failure %", "failure_rate", 100), ("hard NME", "hard_nme", 100),
            ("hard failure %", "hard_failure_rate", 100), ("Averaged NME", "averaged_nme", 100),
            ("Averaged hard NME", "averaged_hard_nme", 100))
    first = next(iter(results["arms"].values()))
    lines = [
        "# Transfer study: 68-point fine-tuning from three starting points", "",
        settings, "",
        f"Test faces: {first['test_faces']}; hard slice (|pose class| in {{0, 4}} or occluded): "
        f"{first['hard_faces']}. NME x 100 (inter-ocular), mean ± sample std over seeds "
        f"{results['seeds']}.", "",
        "| arm | " + " | ".join(c[0] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for arm, r in results["arms"].items():
        lines.append(f"| {arm} | " + " | ".join(_cell(r["metrics"], n, s) for _, n, s in cols) + " |")
    ms = first["metrics"].get("mean_shape_nme")
    if ms:
        lines += ["", f"Mean-shape baseline NME x 100: {ms['mean'] * 100:.2f}."]
    return "\n".join(lines) + "\n"


def run_study(study, workdir: str, allow_config_change: bool = False) -> dict[str, Any]:
    """Runs what is missing of the study, then writes transfer.json and transfer.md."""
    os.makedirs(workdir, exist_ok=True)
    primary = distributed.is_primary()  # one writer per study
    if primary:
        workdir_lib.write_text(os.path.join(workdir, "study_config.json"), study.to_json(indent=2))
    pretrained = run_pretrains(study, workdir, allow_config_change)
    run_finetunes(study, workdir, pretrained, allow_config_change)
    results = collect(workdir, seeds_of(study))
    # The pretrain that actually ran (a given workdir may differ from study.pretrain).
    p, ft = checkpoints.read_config(pretrained["multitask"]), study.finetune
    settings = (f"Pretrain: {p.trunk} trunk ({p.activation}), {p.num_train} faces (data_seed "
                f"{p.data_seed}), {p.num_steps} steps x batch {p.batch_size}. Fine-tune: 68 points, "
                f"{ft.num_train} new faces (data_seed {ft.data_seed}), {ft.num_steps} steps x batch "
                f"{ft.batch_size}, trunk lr x {ft.trunk_lr_multiplier}; test {ft.num_test} faces. "
                f"Averaged: grid step {ft.averaging.step_px} px, radius {ft.averaging.radius}.")
    results["settings"] = settings
    results["pretrain_workdirs"] = pretrained
    if not primary:
        return results
    workdir_lib.write_json(os.path.join(workdir, "transfer.json"), results)
    workdir_lib.write_text(os.path.join(workdir, "transfer.md"), markdown(results, settings))
    return results

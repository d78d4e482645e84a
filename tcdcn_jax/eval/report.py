"""Evaluating a training workdir's latest checkpoint on one split: NME, failure rate, per-landmark /
per-pose NME, attribute accuracies, CED and its AUC up to 0.10, written as OUT_DIR/eval.json plus PNGs
(CED, per-landmark bars, a Fig. 10 sheet). Kept apart from evaluate.py, which the training loop
imports, so that training does not pull in matplotlib. Command: `python -m experiments.evaluate`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from tcdcn_jax.train import checkpoints
from tcdcn_jax.eval import evaluate
from tcdcn_jax.eval import metrics
from tcdcn_jax.eval import plots
from tcdcn_jax.data import sources
from tcdcn_jax.data.pipeline import ArrayDataset
from tcdcn_jax.layouts import get_layout
from tcdcn_jax.eval.relatedness import coordinate_names

CED_POINTS = 101  # thresholds 0, 0.001, ..., 0.100 stored in eval.json


def _pick_split(splits: sources.Splits, split: str) -> ArrayDataset:
    named = {"train": splits.train, "validation": splits.validation, "test": splits.test,
             **dict(splits.extra_tests)}
    if split not in named:
        raise ValueError(f"unknown split {split!r}; this dataset has {sorted(named)}")
    return named[split]


def _point_names(num_landmarks: int) -> list[str]:
    return [n.rsplit(" ", 1)[0] for n in coordinate_names(num_landmarks)[::2]]


def evaluate_workdir(workdir: str, dataset: str | None = None, split: str = "test",
                     data_dir: str | None = None, out_dir: str | None = None, num_faces: int = 24,
                     batch_size: int | None = None, sheet_seed: int = 0) -> dict[str, Any]:
    """Evaluates workdir's latest checkpoint on one split; returns the eval.json content."""
    # The step of the checkpoint read: the newest that verifies, not the newest folder.
    step, model, params, config = checkpoints.load_model_and_step(workdir)
    if dataset:
        config.dataset = dataset
    if data_dir is not None:
        config.data_dir = data_dir
    out_dir = out_dir or os.path.join(workdir, f"eval_{config.dataset}_{split}")
    splits = sources.load(config)
    data = _pick_split(splits, split)
    num_landmarks = int(params["heads"]["landmarks"]["kernel"].shape[-1] // 2)
    if data["landmarks"].shape[1] != num_landmarks:
        raise ValueError(f"the model predicts {num_landmarks} points but {config.dataset}/{split} has "
                         f"{data['landmarks'].shape[1]}")
    heads = [t for t in model.aux_tasks or {}]
    labelled = tuple(t for t in heads if t in data.arrays)
    batch = int(batch_size or config.eval_batch_size)
    pred = evaluate.predict_dataset(model, params, data["image"], data["box"], batch_size=batch)
    pred.update(evaluate.per_face_losses(pred, data, labelled))

    report = evaluate.summarise(pred, data, labelled, sources.mean_shape(splits.train))
    pred_px = evaluate.landmarks_px(pred["landmarks"], data)
    true_px = np.asarray(data["landmarks"], np.float64)
    nme_N = metrics.nme_per_face(pred_px, true_px, get_layout(num_landmarks))
    thresholds, fraction = metrics.ced(nme_N, 0.10, CED_POINTS - 1)
    point_names = _point_names(num_landmarks)
    report.update({
        "workdir": os.path.abspath(workdir), "checkpoint_step": step, "dataset": config.dataset,
        "split": split, "point_names": point_names,
        "ced": {"thresholds": thresholds.round(6).tolist(), "fraction": fraction.tolist()},
        "per_face_nme": nme_N.tolist(),
    })

    os.makedirs(out_dir, exist_ok=True)
    name = f"{os.path.basename(os.path.abspath(workdir))} ({config.dataset} {split})"
    figures = {
        "ced": plots.save_ced({name: nme_N}, os.path.join(out_dir, "ced.png")),
        "per_landmark": plots.save_per_landmark_bars(
            {name: report["per_landmark_nme"]}, os.path.join(out_dir, "per_landmark.png"),
            point_names if num_landmarks <= 12 else None),
    }
    rng = np.random.default_rng(sheet_seed)
    pick = np.sort(rng.choice(len(data), size=min(num_faces, len(data)), replace=False))
    figures["faces"] = plots.save_face_sheet(
        data["image"][pick], data["box"][pick], pred_px[pick], os.path.join(out_dir, "faces.png"),
        true_NxKx2=true_px[pick], pred_tags={t: np.argmax(pred[t][pick], axis=1) for t in heads},
        true_tags={t: data[t][pick] for t in labelled}, nme_N=nme_N[pick])
    report["figures"] = figures
    with open(os.path.join(out_dir, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report

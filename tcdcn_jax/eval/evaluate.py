"""Running a model over a whole dataset and summarising it with the paper's metrics."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from tcdcn_jax.eval import metrics
from tcdcn_jax.data.pipeline import MASK_KEY, ArrayDataset, eval_batches
from tcdcn_jax.layouts import get_layout


def to_pixels(lm_NxKx2: np.ndarray, box_Nx4: np.ndarray) -> np.ndarray:
    """Box-normalised (u, v) -> pixel (x, y): x = left + u * width, y = top + v * height."""
    box = np.asarray(box_Nx4, np.float64)
    return box[:, None, :2] + np.asarray(lm_NxKx2, np.float64) * box[:, None, 2:]


def predict(steps, params: Any, apply_fn: Callable, dataset: ArrayDataset,
            batch_size: int) -> dict[str, np.ndarray]:
    """Model outputs and per-face losses for every face of `dataset`, in order (numpy, host).

    Returns 'landmarks' (N, K, 2) box-normalised, '<task>' logits, 'loss/<task>' per-face losses.
    """
    chunks: dict[str, list[np.ndarray]] = {}
    for batch in eval_batches(dataset, batch_size):
        mask = batch[MASK_KEY]
        device_batch = steps.put_batch(batch)
        out = jax.device_get(steps.eval(params, device_batch, apply_fn))
        rows = {**out["outputs"], **{f"loss/{k}": v for k, v in out["per_face_loss"].items()}}
        for name, value in rows.items():
            chunks.setdefault(name, []).append(np.asarray(value)[mask])
    return {k: np.concatenate(v) for k, v in chunks.items()}


def summarise(pred: dict[str, np.ndarray], dataset: ArrayDataset, aux_tasks: Sequence[str],
              mean_shape_Kx2: np.ndarray | None = None) -> dict[str, Any]:
    """Landmark report in pixels (NME, failure rate, per-landmark, per-pose, AUC), losses and accuracies."""
    box = dataset["box"]
    true_px = dataset["landmarks"]
    layout = get_layout(true_px.shape[1])
    pose = dataset.arrays.get("pose")
    report = metrics.landmark_report(to_pixels(pred["landmarks"], box), true_px, layout, pose)
    report["loss"] = {k.split("/", 1)[1]: float(np.mean(v)) for k, v in pred.items()
                      if k.startswith("loss/")}
    report["accuracy"] = {t: metrics.accuracy(pred[t], dataset[t]) for t in aux_tasks}
    if mean_shape_Kx2 is not None:
        mean_px = to_pixels(np.broadcast_to(mean_shape_Kx2, true_px.shape), box)
        report["mean_shape_nme"] = float(metrics.nme_per_face(mean_px, true_px, layout).mean())
    return report

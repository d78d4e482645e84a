"""Running a model over a whole dataset and summarising it with the paper's metrics.

Two ways in, one crop (`geometry.crop`; the train step's through `augment.prepare_batch`):
- `predict_dataset`: a model's outputs for every face, single pass or TCDCN-Averaged on a
  translation grid; one jitted function per model, grid and batch shape, kept across calls.
- `eval_outputs`: the training loop's pass through its sharded eval step, which also gives the
  per-face losses early stopping (Eq. 5) reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tcdcn_jax import geometry
from tcdcn_jax.data.pipeline import MASK_KEY, ArrayDataset, eval_batches
from tcdcn_jax.eval import metrics
from tcdcn_jax.layouts import get_layout
from tcdcn_jax.model import averaging, networks
from tcdcn_jax.train import losses

# One jitted batch function per (model, grid, mode): compiled once per batch shape, whatever the
# params or the dataset.
_BATCH_FNS: dict[tuple, Callable] = {}


def _model_key(model: networks.TCDCN) -> tuple:
    # Flax modules with a dict field (aux_tasks) do not hash; their field values do.
    fields = [(f.name, getattr(model, f.name)) for f in dataclasses.fields(model)
              if f.name not in ("parent", "name")]
    return tuple((k, tuple(sorted(v.items())) if isinstance(v, Mapping) else v) for k, v in fields)


def _batch_fn(model: networks.TCDCN, offsets_Tx2: np.ndarray | None, mode: str) -> Callable:
    """jitted (params, image_BxHxW, box_Bx4) -> outputs, built once per model, grid and mode."""
    grid = None if offsets_Tx2 is None else tuple(map(tuple, np.asarray(offsets_Tx2).tolist()))
    key = (_model_key(model), grid, mode)
    if key not in _BATCH_FNS:
        size = networks.input_size(model.trunk)
        if grid is None:
            def fn(params, image, box):
                return model.apply({"params": params}, geometry.crop(image, box, size))
        else:
            offsets = np.asarray(grid, np.int32)

            def fn(params, image, box):
                mean, _ = averaging.averaged_landmarks(model, params, image, box, offsets, mode)
                return {"landmarks": mean}
        _BATCH_FNS[key] = jax.jit(fn)
    return _BATCH_FNS[key]


def predict_dataset(model: networks.TCDCN, params: Any, image_NxHxW: np.ndarray,
                    box_Nx4: np.ndarray, offsets_Tx2: np.ndarray | None = None,
                    batch_size: int = 250, mode: str = "auto") -> dict[str, np.ndarray]:
    """The model's outputs for every face, in batches of batch_size (the last one padded).

    offsets_Tx2 None: the single pass, {'landmarks': (N, K, 2) box-normalised, task: logits (N, C)};
    a (T, 2) grid (`averaging.grid_offsets`): TCDCN-Averaged, {'landmarks'} averaged over the T
    translations ('auto' mode shares convolutions where the trunk allows it).
    """
    n = image_NxHxW.shape[0]
    if batch_size < 1 or n < 1:
        raise ValueError(f"need faces and a batch_size >= 1, got {n} faces, batch_size {batch_size}")
    fn = _batch_fn(model, offsets_Tx2, mode)
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n
        out = jax.device_get(fn(params, jnp.asarray(image_NxHxW[idx]),
                                jnp.asarray(box_Nx4[idx], jnp.float32)))
        for name, value in out.items():
            chunks.setdefault(name, []).append(np.asarray(value)[:min(batch_size, n - start)])
    return {k: np.concatenate(v) for k, v in chunks.items()}


def eval_outputs(steps, params: Any, apply_fn: Callable, dataset: ArrayDataset,
                 batch_size: int) -> dict[str, np.ndarray]:
    """Model outputs and per-face losses for every face of `dataset` through the training loop's
    sharded eval step (`train.steps.Steps.eval`), in order (numpy, host).

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


def per_face_losses(pred: Mapping[str, np.ndarray], dataset: ArrayDataset,
                    aux_tasks: Sequence[str]) -> dict[str, np.ndarray]:
    """'loss/<task>' per-face losses of `predict_dataset` outputs against the dataset's truth."""
    true_uv = geometry.to_box(np.asarray(dataset["landmarks"], np.float32),
                              np.asarray(dataset["box"], np.float32))
    out = {"loss/landmarks": losses.landmark_loss_per_face(pred["landmarks"], true_uv)}
    for task in aux_tasks:
        out[f"loss/{task}"] = losses.classification_loss_per_face(pred[task], dataset[task])
    return {k: np.asarray(v) for k, v in out.items()}


def hard_slices(dataset: ArrayDataset) -> dict[str, np.ndarray]:
    """Boolean masks of the faces the paper says multi-task pretraining helps most: large poses
    (+-60 degrees), occluded faces, and either."""
    out = {}
    if "pose" in dataset.arrays:
        out["large_pose"] = np.isin(dataset["pose"], (0, 4))
    if "occluded" in dataset.arrays:
        out["occluded"] = dataset["occluded"] == 1
    if out:
        out["hard"] = np.logical_or.reduce(list(out.values()))
    return out


def landmarks_px(lm_NxKx2: np.ndarray, dataset: ArrayDataset) -> np.ndarray:
    """Box-normalised landmarks of the dataset's faces -> pixels (float64, as metrics want)."""
    return geometry.to_pixels(np.asarray(lm_NxKx2, np.float64),
                              np.asarray(dataset["box"], np.float64))


def summarise(pred: dict[str, np.ndarray], dataset: ArrayDataset, aux_tasks: Sequence[str],
              mean_shape_Kx2: np.ndarray | None = None) -> dict[str, Any]:
    """Landmark report in pixels (NME, failure rate, per-landmark, per-pose, AUC, hard slices),
    losses and accuracies."""
    true_px = dataset["landmarks"]
    layout = get_layout(true_px.shape[1])
    pose = dataset.arrays.get("pose")
    pred_px = landmarks_px(pred["landmarks"], dataset)
    report = metrics.landmark_report(pred_px, true_px, layout, pose, slices=hard_slices(dataset))
    report["loss"] = {k.split("/", 1)[1]: float(np.mean(v)) for k, v in pred.items()
                      if k.startswith("loss/")}
    report["accuracy"] = {t: metrics.accuracy(pred[t], dataset[t]) for t in aux_tasks}
    if mean_shape_Kx2 is not None:
        mean_px = landmarks_px(np.broadcast_to(mean_shape_Kx2, true_px.shape), dataset)
        report["mean_shape_nme"] = float(metrics.nme_per_face(mean_px, true_px, layout).mean())
    return report


def landmark_summary(lm_NxKx2: np.ndarray, dataset: ArrayDataset) -> dict[str, Any]:
    """NME and failure rate overall and on each hard slice (pixels, inter-ocular normalised)."""
    true_px = dataset["landmarks"]
    nme_N = metrics.nme_per_face(landmarks_px(lm_NxKx2, dataset), true_px,
                                 get_layout(true_px.shape[1]))
    return {"nme": float(nme_N.mean()), "failure_rate": metrics.failure_rate(nme_N),
            "slices": metrics.slice_report(nme_N, hard_slices(dataset))}


def averaged_summary(model: networks.TCDCN, params: Any, dataset: ArrayDataset,
                     offsets_Tx2: np.ndarray, batch_size: int = 250) -> dict[str, Any]:
    """`landmark_summary` of TCDCN-Averaged on one grid, with its size and (shared convolutions)
    the conv maps each layer runs."""
    lm = predict_dataset(model, params, dataset["image"], dataset["box"], offsets_Tx2,
                         batch_size)["landmarks"]
    entry = landmark_summary(lm, dataset)
    entry["translations"] = int(len(offsets_Tx2))
    if networks.shares_convolutions(model.trunk):
        entry["sharing"] = averaging.sharing_cost(offsets_Tx2)
    return entry


def grid_summaries(model: networks.TCDCN, params: Any, dataset: ArrayDataset,
                   grids: Mapping[str, np.ndarray], batch_size: int = 250) -> dict[str, Any]:
    """Single pass and TCDCN-Averaged on each translation grid (none: the single pass alone).

    Returns {'single': summary, 'grids': {name: summary + translations (+ sharing)}, 'mode'}.
    """
    single = predict_dataset(model, params, dataset["image"], dataset["box"],
                             batch_size=batch_size)["landmarks"]
    return {"single": landmark_summary(single, dataset),
            "grids": {name: averaged_summary(model, params, dataset, offsets_Tx2, batch_size)
                      for name, offsets_Tx2 in grids.items()},
            "mode": averaging.sharing_mode(model.trunk)}

"""Task relatedness from learned weights (the paper's Fig. 5b).

The paper's "crude method": Pearson's correlation, taken over the shared feature x^l, between the weight
vector that predicts each landmark coordinate and the weight vectors of an auxiliary head. In our params
the landmark head kernel is (F, 2K) and its column 2k + c predicts coordinate c (0 = u/x, 1 = v/y) of
point k (the head's output is reshaped to (B, K, 2)); an auxiliary head's kernel is (F, C), one column
per class. A C-class softmax head has C weight vectors; we correlate with every one of them (for a
binary head the two tend to mirror each other, since only their difference changes the prediction).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tcdcn_jax import tasks as tasks_lib
from tcdcn_jax.layouts import get_layout


def pearson_columns(a_FxM: np.ndarray, b_FxN: np.ndarray) -> np.ndarray:
    """(M, N) Pearson correlation between every column of a and every column of b (over F rows)."""
    a, b = np.asarray(a_FxM, np.float64), np.asarray(b_FxN, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(f"need two (F, .) matrices with the same F >= 2, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("weight vectors must be finite")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    norm_a, norm_b = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    for name, norm in (("first", norm_a), ("second", norm_b)):
        flat = np.flatnonzero(norm == 0)
        if flat.size:
            raise ValueError(f"columns {flat.tolist()} of the {name} matrix are constant: "
                             "Pearson's correlation is undefined for a constant vector")
    return np.clip((a.T @ b) / np.outer(norm_a, norm_b), -1.0, 1.0)


def coordinate_names(num_landmarks: int) -> list[str]:
    """'left_eye x', 'left_eye y', ... in the landmark head's column order."""
    try:
        points = get_layout(num_landmarks).point_names
    except ValueError:
        points = None
    points = points or tuple(f"p{k}" for k in range(num_landmarks))
    return [f"{p} {c}" for p in points for c in ("x", "y")]


def head_correlations(params: Mapping[str, Any], tasks: Sequence[str] | None = None
                      ) -> dict[str, Any]:
    """Pearson r between each landmark coordinate's weights and each auxiliary class's weights.

    Returns {'rows': coordinate names (2K), 'columns': 'task:class' names, 'tasks': per column,
    'r': (2K, sum C) nested lists}. `tasks` defaults to every auxiliary head in params.
    """
    heads = params["heads"] if "heads" in params else params
    if "landmarks" not in heads:
        raise ValueError(f"params have no landmark head; heads: {sorted(heads)}")
    lm_Fx2K = np.asarray(heads["landmarks"]["kernel"])
    available = [t for t, h in heads.items() if t != "landmarks" and isinstance(h, Mapping)
                 and "kernel" in h]
    order = list(tasks_lib.TASKS)  # pose, gender, glasses, smile, then any other task
    available.sort(key=lambda t: (order.index(t) if t in order else len(order), t))
    tasks = list(available if tasks is None else tasks)
    missing = [t for t in tasks if t not in available]
    if missing:
        raise ValueError(f"params have no head for tasks {missing}; auxiliary heads: {available}")
    if not tasks:
        raise ValueError("no auxiliary heads to correlate with (a landmarks-only model)")
    kernels = [np.asarray(heads[t]["kernel"]) for t in tasks]
    columns, column_tasks = [], []
    for t, k in zip(tasks, kernels):
        columns += [f"{t}:{c}" for c in tasks_lib.class_tags(t, k.shape[1])]
        column_tasks += [t] * k.shape[1]
    r = pearson_columns(lm_Fx2K, np.concatenate(kernels, axis=1))
    return {"rows": coordinate_names(lm_Fx2K.shape[1] // 2), "columns": columns,
            "tasks": column_tasks, "r": r.tolist()}


def mean_correlations(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The element-wise mean of several head_correlations results (e.g. over seeds), with their sd."""
    if not results:
        raise ValueError("need at least one relatedness result to average")
    first = results[0]
    for other in results[1:]:
        if other["rows"] != first["rows"] or other["columns"] != first["columns"]:
            raise ValueError("relatedness results to average must share rows and columns")
    r = np.stack([np.asarray(x["r"]) for x in results])
    return {**{k: first[k] for k in ("rows", "columns", "tasks")}, "r": r.mean(axis=0).tolist(),
            "r_sd": r.std(axis=0).tolist(), "num_models": len(results)}

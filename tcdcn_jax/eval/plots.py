"""The paper's figures as PNGs (matplotlib, Agg backend): CED, per-landmark and per-pose bars, a sheet of
test faces with predicted tags (Fig. 10), training curves with task stops (Fig. 7b), a relatedness heat
map (Fig. 5b). Every function takes plain numpy/JSON data and a path, so it can be called on saved
results without a model.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tcdcn_jax import tasks  # noqa: E402
from tcdcn_jax.eval import metrics  # noqa: E402

POSE_CLASSES = tuple(f"{tag}°" for tag in tasks.TASKS["pose"].tags)  # the pose tags as angles
TAG_TASKS = ("pose", "smile", "glasses", "gender")  # the paper's order under each face


def _save(fig: plt.Figure, path: str | os.PathLike) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def save_ced(nme_by_name: Mapping[str, np.ndarray], path: str | os.PathLike,
             max_error: float = 0.10, title: str = "Cumulative error distribution") -> str:
    """One CED curve per entry (per-face NMEs), AUC up to max_error in the legend.

    The x axis runs past max_error (marked by a dashed line) up to where 95% of the faces of the
    worst entry lie, so that weak models still show a curve.
    """
    x_max = max(max_error, min(1.0, max(float(np.quantile(np.asarray(v), 0.95))
                                        for v in nme_by_name.values())))
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for name, nme in nme_by_name.items():
        t, frac = metrics.ced(nme, x_max)
        ax.plot(t, frac, lw=1.8, label=f"{name} (AUC@{max_error:g} {metrics.auc(nme, max_error):.3f},"
                                        f" fail {metrics.failure_rate(nme, max_error):.1%})")
    if x_max > max_error:
        ax.axvline(max_error, color="gray", ls="--", lw=1)
    ax.set(xlim=(0, x_max), ylim=(0, 1), xlabel="NME (inter-ocular)",
           ylabel="fraction of faces with NME ≤ x", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _grouped_bars(ax: plt.Axes, values: Mapping[str, Sequence[float]],
                  errors: Mapping[str, Sequence[float]] | None, labels: Sequence[str]) -> None:
    names = list(values)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(labels))
    for i, name in enumerate(names):
        v = np.asarray(values[name], np.float64)
        err = None if errors is None or name not in errors else np.asarray(errors[name], np.float64)
        ax.bar(x + (i - (len(names) - 1) / 2) * width, v, width, yerr=err, capsize=2,
               label=name, color=plt.cm.tab10(i % 10))
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 6 else 0, ha="right" if
                       len(labels) > 6 else "center", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def save_per_landmark_bars(values: Mapping[str, Sequence[float]], path: str | os.PathLike,
                           point_names: Sequence[str] | None = None,
                           errors: Mapping[str, Sequence[float]] | None = None,
                           failure: Mapping[str, tuple[float, float]] | None = None,
                           title: str = "Mean error per landmark") -> str:
    """Grouped bars of per-landmark NME per model (Fig. 4), optional +-sd error bars and, given
    failure = {name: (mean, sd)}, a second panel with the failure rates."""
    first = np.asarray(next(iter(values.values())))
    labels = list(point_names) if point_names else [f"p{k}" for k in range(first.size)]
    many = first.size > 12  # 68 points: one bar per point would not read; plot lines instead
    cols = 2 if failure else 1
    fig, axes = plt.subplots(1, cols, figsize=(11 if failure else 8, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1][:cols]})
    ax = axes[0, 0]
    if many:
        for i, (name, v) in enumerate(values.items()):
            ax.plot(np.asarray(v), marker=".", label=name, color=plt.cm.tab10(i % 10))
        ax.set_xlabel("landmark index")
        ax.grid(alpha=0.3)
    else:
        _grouped_bars(ax, values, errors, labels)
    ax.set(ylabel="NME (inter-ocular)", title=title)
    ax.legend(fontsize=7, ncol=2 if len(values) > 4 else 1)
    if failure:
        ax = axes[0, 1]
        names = list(failure)
        mean = [100 * failure[n][0] for n in names]
        sd = [100 * failure[n][1] for n in names]
        ax.bar(np.arange(len(names)), mean, yerr=sd, capsize=2,
               color=[plt.cm.tab10(i % 10) for i in range(len(names))])
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel="failure rate (%)", title="Failure rate (NME > 0.10)")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def save_per_pose_bars(values: Mapping[str, Sequence[float | None]], path: str | os.PathLike,
                       errors: Mapping[str, Sequence[float | None]] | None = None,
                       title: str = "Mean error per pose") -> str:
    """Grouped bars of NME per pose class (Fig. 6a); None (no faces of that pose) is drawn as 0."""
    clean = {k: [np.nan if v is None else v for v in vs] for k, vs in values.items()}
    clean_err = None if errors is None else {
        k: [0.0 if v is None else v for v in vs] for k, vs in errors.items()}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    _grouped_bars(ax, clean, clean_err, POSE_CLASSES)
    ax.set(xlabel="pose (yaw)", ylabel="NME (inter-ocular)", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def tag_text(task: str, label: int) -> str:
    """The paper's tag for a class: pose in degrees, S/NS, G/NG, M/F."""
    if task == "pose":
        return POSE_CLASSES[int(label)]
    return tasks.class_tags(task, 2)[int(label)]


def save_face_sheet(image_NxHxW: np.ndarray, box_Nx4: np.ndarray, pred_NxKx2: np.ndarray,
                    path: str | os.PathLike, true_NxKx2: np.ndarray | None = None,
                    pred_tags: Mapping[str, np.ndarray] | None = None,
                    true_tags: Mapping[str, np.ndarray] | None = None,
                    nme_N: np.ndarray | None = None, cols: int = 6, margin: float = 0.25) -> str:
    """Faces with predicted (red) and true (green) landmarks in pixels, and predicted tags under each;
    a tag that disagrees with the truth is boxed in red (Fig. 10)."""
    n = len(image_NxHxW)
    if n == 0:
        raise ValueError("no faces to draw")
    pred_tags, true_tags = dict(pred_tags or {}), dict(true_tags or {})
    tagged = [t for t in TAG_TASKS if t in pred_tags] + sorted(set(pred_tags) - set(TAG_TASKS))
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.5 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        left, top, w, h = np.asarray(box_Nx4[i], np.float64)
        ax.imshow(image_NxHxW[i], cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
        ax.set_xlim(left - margin * w, left + (1 + margin) * w)
        ax.set_ylim(top + (1 + margin) * h, top - margin * h)
        if true_NxKx2 is not None:
            ax.scatter(true_NxKx2[i, :, 0], true_NxKx2[i, :, 1], s=14, facecolors="none",
                       edgecolors="lime", linewidths=0.9)
        ax.scatter(pred_NxKx2[i, :, 0], pred_NxKx2[i, :, 1], s=10, c="red", marker="x",
                   linewidths=1.0)
        if nme_N is not None:
            ax.set_title(f"NME {nme_N[i]:.3f}", fontsize=8,
                         color="red" if nme_N[i] > 0.10 else "black")
        for j, task in enumerate(tagged):
            label = int(pred_tags[task][i])
            wrong = task in true_tags and int(true_tags[task][i]) != label
            ax.text((j + 0.5) / len(tagged), -0.03, tag_text(task, label), transform=ax.transAxes,
                    ha="center", va="top", fontsize=8,
                    bbox=dict(boxstyle="square,pad=0.15", fc="none",
                              ec="red" if wrong else "none", lw=1.2))
    fig.suptitle("red x: predicted, green o: true; tags predicted (red box: wrong)", fontsize=9)
    fig.tight_layout(h_pad=1.6)
    return _save(fig, path)


def save_training_curves(records_by_name: Mapping[str, Sequence[Mapping[str, Any]]],
                         path: str | os.PathLike,
                         stopped_at: Mapping[str, Mapping[str, int | None]] | None = None,
                         task: str = "landmarks") -> str:
    """Main-task training and validation loss against steps per run (Fig. 7b), each auxiliary task's
    stop marked on its run's curves (stopped_at = {run: {task: step or None}})."""
    stopped_at = stopped_at or {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for col, (key, label) in enumerate((("train_loss", "training"), ("val_loss", "validation"))):
        ax = axes[col]
        for i, (name, records) in enumerate(records_by_name.items()):
            steps = np.array([r["step"] for r in records])
            loss = np.array([r[key][task] for r in records])
            color = plt.cm.tab10(i % 10)
            ax.plot(steps, loss, lw=1.6, color=color, label=name)
            stops = sorted((s, t) for t, s in (stopped_at.get(name) or {}).items() if s is not None)
            for j, (s, t) in enumerate(stops):
                y = float(np.interp(s, steps, loss))
                ax.plot([s], [y], marker="v", ms=8, color=color, mec="black")
                ax.annotate(f"{t} stops ({s})", (s, y), xytext=(4, 10 + 12 * (j % 4)),
                            textcoords="offset points", fontsize=7, color=color,
                            arrowprops=dict(arrowstyle="-", color=color, lw=0.6))
        ax.set_yscale("log")
        ax.set(xlabel="training step", title=f"main task ({task}) loss, {label} set")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("½‖y − f‖² per face (box-normalised)")
    return _save(fig, path)


def save_heatmap(r_RxC: np.ndarray, rows: Sequence[str], columns: Sequence[str],
                 path: str | os.PathLike, title: str = "Pearson r of head weight vectors") -> str:
    """A diverging heat map of correlations in [-1, 1], values printed when the map is small."""
    r = np.asarray(r_RxC, np.float64)
    if r.shape != (len(rows), len(columns)):
        raise ValueError(f"matrix {r.shape} does not match {len(rows)} rows x {len(columns)} columns")
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(columns), 1.4 + 0.32 * len(rows)))
    im = ax.imshow(r, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(len(columns)))
    ax.set_xticklabels(columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels(rows, fontsize=8 if len(rows) <= 20 else 5)
    if r.size <= 400:
        for (i, j), v in np.ndenumerate(r):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.05, label="Pearson r")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)

"""Fitting box_maps.json on the dev photos: the authors' model's box, every detector's maps, and the
re-crop rule. `python -m experiments.fit_box_maps` runs `fit_all` and writes the file.

Figures come from the dev photos' machine labels (dlib's 68-point model): agreement, not accuracy.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np

from tcdcn_jax import layouts
from tcdcn_jax.eval import metrics
from tcdcn_jax.photos import box_maps, detectors, dev_set, official, refine

# Search grid of the authors' box (OfficialBox a, b, k). A coarse search over k 0.9-1.3 and b -0.1-0.05
# put the optimum near k = 1.1, b = 0.02; the released model's NME68 changes by < 0.005 over this grid.
GRID_A = (-0.02, 0.0, 0.02)
GRID_B = (-0.02, 0.0, 0.02, 0.04, 0.06)
GRID_K = (1.0, 1.05, 1.1, 1.15, 1.2)

Faces = list  # [(rgb image, lm_Kx2 labels)]


def labelled_faces(dev: dev_set.DevSet) -> tuple[list[str], np.ndarray]:
    """(photo name per face, lm_NxKx2 labels) in a fixed order."""
    names, lms = [], []
    for name, lab in dev.labelled.items():
        names += [name] * len(lab.lm_NxKx2)
        lms.append(lab.lm_NxKx2)
    return names, np.concatenate(lms).astype(np.float64)


def predict_faces(params: dict[str, Any], dev: dev_set.DevSet, photo_N: Sequence[str],
                  boxes_Nx4: np.ndarray, offsets_Tx2: np.ndarray | None = None) -> np.ndarray:
    """The released model's points (N, 68, 2) for one box per face, each in its photo."""
    return np.stack([official.predict(params, dev.rgb[p], b[None], offsets_Tx2)[0]
                     for p, b in zip(photo_N, np.asarray(boxes_Nx4))])


def nme(pred_NxKx2: np.ndarray, true_NxKx2: np.ndarray) -> np.ndarray:
    return metrics.nme_per_face(pred_NxKx2, true_NxKx2, layouts.IBUG68)


def fit_official_box(params: dict[str, Any], dev: dev_set.DevSet,
                     grid: tuple = (GRID_A, GRID_B, GRID_K)
                     ) -> tuple[box_maps.OfficialBox, float, list]:
    """The OfficialBox on the grid with the lowest mean NME68 of the released model over the labelled
    faces: (box rule, its NME, [(nme, a, b, k)] for the whole grid)."""
    photos, true = labelled_faces(dev)
    table = []
    for a, b, k in itertools.product(*grid):
        rule = box_maps.OfficialBox(a, b, k)
        err = nme(predict_faces(params, dev, photos, rule.from_points(true)), true).mean()
        table.append((float(err), a, b, k))
    best = min(table)
    return box_maps.OfficialBox(*best[1:]), best[0], table


def fit_recrop(params: dict[str, Any], dev: dev_set.DevSet, official: box_maps.OfficialBox
               ) -> refine.RecropRule:
    """The re-crop rule of the authors' model: from the square on its predicted points (predicted at
    the fitted boxes of the labels) back to those boxes."""
    photos, true = labelled_faces(dev)
    ideal = official.from_points(true)
    return refine.fit_rule(predict_faces(params, dev, photos, ideal), ideal, "square")


def nme_by_pass(params: dict[str, Any], dev: dev_set.DevSet, photo_N: Sequence[str],
                boxes_Nx4: np.ndarray, true_NxKx2: np.ndarray, rule: refine.RecropRule,
                passes: int = 4, offsets_Tx2: np.ndarray | None = None) -> list[float]:
    """Mean NME68 after 0..passes re-crops (no early stop), from the given first boxes."""
    boxes = np.asarray(boxes_Nx4, np.float64)
    out = []
    for i in range(passes + 1):
        pred = predict_faces(params, dev, photo_N, boxes, offsets_Tx2)
        out.append(float(nme(pred, true_NxKx2).mean()))
        boxes = refine.next_box(rule, pred)
    return out


def _entry(fitted: box_maps.BoxMap, **extra) -> dict[str, Any]:
    return {"dx": fitted.dx, "dy": fitted.dy, "sw": fitted.sw, "sh": fitted.sh,
            "spread": list(fitted.spread), "num_faces": fitted.num_faces, **extra}


def fit_detector(run: dev_set.DetectorRun, dev: dev_set.DevSet, official: box_maps.OfficialBox,
                 params: dict[str, Any] | None) -> dict[str, Any]:
    """A detector's maps to each convention, from its box, with the fit error: per-coefficient
    spread, the mean IoU of mapped and target boxes, and (given the authors' params) the released
    model's NME68 from the mapped boxes next to that from the ideal."""
    boxes, _, true, ids = run.matched(dev)
    photos = [p for p, _ in ids]
    targets = {"tight": box_maps.tight_box(true), "official": official.from_points(true)}
    ideal_nme = None
    if params is not None:
        ideal_nme = float(nme(predict_faces(params, dev, photos, targets["official"]), true).mean())
    out: dict[str, Any] = {}
    for conv, target in targets.items():
        fitted = box_maps.fit(boxes, target)
        mapped = fitted.apply(boxes)
        extra = {"mean_iou": round(float(np.diag(dev_set.iou(mapped, target)).mean()), 4)}
        if conv == "official" and params is not None:
            got = nme(predict_faces(params, dev, photos, mapped), true).mean()
            extra["nme"] = {"mapped": round(float(got), 4), "ideal": round(ideal_nme, 4)}
        out[conv] = _entry(fitted, **extra)
    return out


def fit_all(dev_dir: str, params: dict[str, Any], names: Sequence[str] | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Everything box_maps.json holds, fitted on the dev photos with the authors' params."""
    dev = dev_set.load(dev_dir)
    official, official_nme, table = fit_official_box(params, dev)
    log(f"official box {official} NME68 {official_nme:.4f}; grid: "
        + ", ".join(f"{a:+.2f}/{b:+.2f}/{k:.2f}:{e:.4f}" for e, a, b, k in sorted(table)[:6]))
    rule = fit_recrop(params, dev, official)
    log(f"re-crop rule {rule}")
    result: dict[str, Any] = {
        "about": "Fitted by `python -m experiments.fit_box_maps` on the dev photos (labels from "
                 "dlib's 68-point model: agreement, not accuracy). See tcdcn_jax/photos/box_maps.py.",
        "official_box": {"a": official.a, "b": official.b, "k": official.k},
        "official_box_nme": round(official_nme, 4),
        "recrop": {"official": _entry(rule.box_map, source_points=rule.source)},
        "maps": {},
    }
    dets = [detectors.create(n) for n in (names or detectors.available())]
    # Fitted on every candidate the detector reports for a labelled face, its threshold aside.
    runs = dev_set.run_detectors(dev, dets, rounds=1, min_score=-np.inf, min_size=0)
    for run in runs:
        result["maps"][run.name] = fit_detector(run, dev, official, params)
        log(f"{run.name}: {result['maps'][run.name]}")
    return result

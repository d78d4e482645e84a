"""Detectors and the authors' weights on the dev photos: the table `experiments/evaluate_photos.py`
prints, and the robustness of refinement to the starting box.

Per detector: labelled faces found (of 43), false positives (unmatched detections on the labelled photos
plus every detection on the dogs photo), detections on the unlabelled bald_guys.jpg, ms per photo, and
the released model's NME68 on the faces it found: single pass and TCDCN-Averaged, before and after
re-crop refinement. NME68 is against dlib's machine labels: agreement with dlib, not accuracy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from tcdcn_jax.model import averaging
from tcdcn_jax.photos import box_fit, box_maps, detectors, dev_set, official_rule, refine


@dataclasses.dataclass(frozen=True)
class Row:
    """One detector's line of the table (NME values are means over the faces it found)."""

    detector: str
    found: int
    num_faces: int
    false_positives: int
    unlabelled: int
    ms_per_photo: float
    ms_large_photo: float
    nme: dict[str, float]  # 'single', 'single+refine', 'averaged', 'averaged+refine'


def _nme_columns(params: dict[str, Any], dev: dev_set.DevSet, photos: Sequence[str],
                 boxes_Nx4: np.ndarray, true_NxKx2: np.ndarray, rule: refine.RecropRule,
                 passes: int) -> dict[str, float]:
    out = {}
    for label, offsets in (("single", None), ("averaged", averaging.grid_offsets())):
        lm_NxKx2 = np.zeros_like(true_NxKx2, np.float64)
        lm_ref = np.zeros_like(lm_NxKx2)
        for photo in dict.fromkeys(photos):
            idx = [i for i, p in enumerate(photos) if p == photo]
            fn = lambda b, img=dev.rgb[photo]: official_rule.predict(params, img, b, offsets)  # noqa: E731
            lm_ref[idx] = refine.refine(fn, boxes_Nx4[idx], rule, passes)[0]
            lm_NxKx2[idx] = fn(boxes_Nx4[idx])
        out[label] = float(box_fit.nme(lm_NxKx2, true_NxKx2).mean())
        out[f"{label}+refine"] = float(box_fit.nme(lm_ref, true_NxKx2).mean())
    return out


def evaluate(dev_dir: str, params: dict[str, Any] | None, names: Sequence[str] | None = None,
             rounds: int = 3, passes: int = refine.PASSES) -> list[Row]:
    """The table's rows: every named (default: installed) detector at its default thresholds, plus,
    given the authors' params, a 'labels' row (boxes from the labelled points: the reference)."""
    dev = dev_set.load(dev_dir)
    dets = [detectors.create(n) for n in (names or detectors.available())]
    runs = dev_set.run_detectors(dev, dets, rounds=rounds)
    rule = refine.load_rule("official")
    large = dev_set.UNLABELLED_PHOTOS[0]
    rows = []
    for run in runs:
        counts = run.counts()
        boxes, _, true, ids = run.matched(dev)
        nme = {}
        if params is not None and len(boxes):
            mapped = box_maps.to_convention(run.name, "official", boxes)
            nme = _nme_columns(params, dev, [p for p, _ in ids], mapped, true, rule, passes)
        small = [s for n, s in run.seconds.items() if n != large]
        rows.append(Row(run.name, counts["found"], dev.num_faces, counts["false_positives"],
                        counts["unlabelled"], 1000 * float(np.mean(small)),
                        1000 * run.seconds[large], nme))
    if params is not None:
        photos, true = box_fit.labelled_faces(dev)
        ideal = box_maps.official_box().from_points(true)
        nme = _nme_columns(params, dev, photos, ideal, true, rule, passes)
        rows.append(Row("labels", dev.num_faces, dev.num_faces, 0, 0, float("nan"),
                        float("nan"), nme))
    return rows


def format_table(rows: Sequence[Row], load_average: str = "") -> str:
    """A Markdown table of the rows."""
    cols = ("single", "single+refine", "averaged", "averaged+refine")
    lines = ["| detector | found | false pos. | bald_guys | ms/photo | ms bald_guys | "
             + " | ".join(f"NME68 {c}" for c in cols) + " |",
             "|---" * (6 + len(cols)) + "|"]
    for r in rows:
        nme = [f"{r.nme[c]:.4f}" if c in r.nme else "-" for c in cols]
        ms = "-" if np.isnan(r.ms_per_photo) else f"{r.ms_per_photo:.0f}"
        ms_large = "-" if np.isnan(r.ms_large_photo) else f"{r.ms_large_photo:.0f}"
        lines.append(f"| {r.detector} | {r.found}/{r.num_faces} | {r.false_positives} | "
                     f"{r.unlabelled} | {ms} | {ms_large} | " + " | ".join(nme) + " |")
    if load_average:
        lines.append(f"\nload average while timing: {load_average} (2 shared cores: timings are "
                     "disturbed by other jobs; compare ratios within one run)")
    return "\n".join(lines)


def perturbed_boxes(box: Sequence[float], shift: float = 0.1,
                    scales: Sequence[float] = (0.9, 1.0, 1.1)) -> np.ndarray:
    """Boxes (N, 4) around `box`: corners shifted by -shift, 0, +shift of the width in x and y, sides
    scaled about the centre by each of `scales` (27 boxes by default)."""
    left, top, width, height = (float(v) for v in box)
    out = []
    for s in scales:
        for dy in (-shift, 0.0, shift):
            for dx in (-shift, 0.0, shift):
                w, h = width * s, height * s
                cx, cy = left + width / 2 + dx * width, top + height / 2 + dy * width
                out.append([cx - w / 2, cy - h / 2, w, h])
    return np.asarray(out, np.float64)


def spread(lm_NxKx2: np.ndarray) -> float:
    """Mean over points of the RMS distance of the N predictions from their mean (pixels)."""
    lm = np.asarray(lm_NxKx2, np.float64)
    return float(np.sqrt(((lm - lm.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0)).mean())


def robustness(params: dict[str, Any], image: np.ndarray, box: Sequence[float],
               reference_Kx2: np.ndarray | None = None, passes: int = refine.PASSES,
               averaged: bool = False) -> dict[str, float]:
    """Spread of the released model's points over perturbed starting boxes (perturbed_boxes),
    without and with refinement (official rule), and their mean distance from a reference."""
    starts = perturbed_boxes(box)
    offsets = averaging.grid_offsets() if averaged else None
    fn = lambda b: official_rule.predict(params, image, b, offsets)  # noqa: E731
    plain = fn(starts)
    refined, _, _ = refine.refine(fn, starts, refine.load_rule("official"), passes)
    out = {"spread_px": spread(plain), "spread_refined_px": spread(refined)}
    if reference_Kx2 is not None:
        dist = lambda lm: float(np.linalg.norm(lm - reference_Kx2, axis=-1).mean())  # noqa: E731
        out["to_reference_px"] = dist(plain)
        out["to_reference_refined_px"] = dist(refined)
    return out


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"

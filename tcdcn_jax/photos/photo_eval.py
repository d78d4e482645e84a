"""The Predictor on the dev photos: the table `experiments/evaluate_photos.py` prints, and the
robustness of refinement to the starting box. Everything runs through `Predictor`, the shipped path.

Per detector: labelled faces found (of 43), false positives (unmatched faces on the labelled photos
plus every face on the dogs photo), faces on the unlabelled bald_guys.jpg, ms per photo (decode,
detection, landmarks, at the Predictor's defaults), and NME68 on the labelled faces it found: single
pass and TCDCN-Averaged, each without and with re-crop refinement. A face counts as found when the
tight box of its predicted points overlaps a labelled face's (dev_set.match), whatever the box
convention. NME68 is against dlib's machine labels: agreement with dlib, not accuracy.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from tcdcn_jax.photos import box_fit, box_maps, dev_set, detectors, refine
from tcdcn_jax.photos.predictor import Predictor, PredictedFace

COLUMNS = ("single", "single+refine", "averaged", "averaged+refine")


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
    nme: dict[str, float]  # COLUMNS -> mean NME68


@dataclasses.dataclass(frozen=True)
class Matched:
    """How one run's faces meet the labels: counts, and the labelled faces found (predicted and
    labelled points, (N, 68, 2) each, in the labels' order)."""

    found: int
    false_positives: int
    unlabelled: int
    pred_NxKx2: np.ndarray
    true_NxKx2: np.ndarray


def match_faces(dev: dev_set.DevSet, faces: dict[str, list[PredictedFace]]) -> Matched:
    """Counts and matched points of a run over every dev photo (photo name -> faces)."""
    found = fp = 0
    pred, true = [], []
    for name, lab in dev.labelled.items():
        got = faces[name]
        lm = np.asarray([f.landmarks for f in got], np.float64).reshape(-1, 68, 2)
        idx = dev_set.match(box_maps.tight_box(lab.lm_NxKx2), box_maps.tight_box(lm))
        found += int((idx >= 0).sum())
        fp += len(got) - int((idx >= 0).sum())
        pred += [lm[j] for j in idx if j >= 0]
        true += [lab.lm_NxKx2[i] for i, j in enumerate(idx) if j >= 0]
    fp += sum(len(faces[n]) for n in dev_set.NO_FACE_PHOTOS)
    unlabelled = sum(len(faces[n]) for n in dev_set.UNLABELLED_PHOTOS)
    shape = (-1, 68, 2)
    return Matched(found, fp, unlabelled, np.asarray(pred).reshape(shape),
                   np.asarray(true, np.float64).reshape(shape))


def timed_runs(predictors: Sequence[Predictor], dev: dev_set.DevSet, rounds: int = 3
               ) -> list[tuple[dict[str, list[PredictedFace]], dict[str, float]]]:
    """(faces per photo, seconds per photo: best of the rounds) of each predictor on every dev
    photo, in alternating rounds (each round runs all of them in turn, so a change of machine load
    hits them alike), after one warm-up pass (compilations); rounds 0: the warm-up pass alone,
    timed."""
    runs = [({}, {}) for _ in predictors]
    for r in range(rounds + 1):
        for pred, (faces, seconds) in zip(predictors, runs):
            for name, rgb in dev.rgb.items():
                start = time.perf_counter()
                faces[name] = pred.predict(rgb)
                took = time.perf_counter() - start
                if r or not rounds:  # round 0 warms up
                    seconds[name] = min(seconds.get(name, np.inf), took)
    return runs


def _nme_columns(predictor: Predictor, dev: dev_set.DevSet, boxes: dict[str, np.ndarray],
                 columns: Sequence[str] = COLUMNS) -> dict[str, float]:
    """The NME68 columns: the predictor with refine 0 / PASSES and averaged off / on, from the same
    boxes per photo (the detector's, found once, or the labels')."""
    names = list(boxes)
    out = {}
    for column in columns:
        variant = predictor.replace(refine=refine.PASSES if "refine" in column else 0,
                                    averaged=column.startswith("averaged"))
        faces = dict(zip(names, variant.predict_many([dev.rgb[n] for n in names],
                                                     [boxes[n] for n in names])))
        faces.update({n: [] for n in dev.rgb if n not in faces})
        matched = match_faces(dev, faces)
        out[column] = float(box_fit.nme(matched.pred_NxKx2, matched.true_NxKx2).mean())
    return out


def evaluate(dev_dir: str, weights_path: str, names: Sequence[str] | None = None,
             rounds: int = 3, columns: Sequence[str] = COLUMNS) -> list[Row]:
    """The table's rows: every named (default: installed) detector at its default thresholds, then
    a 'labels' row (boxes from the labelled points in the model's convention: the reference).
    rounds 0: a single pass, its times including compilation (quick checks)."""
    dev = dev_set.load(dev_dir)
    base = Predictor.from_path(weights_path)
    preds = [base.replace(detector=n) for n in (names or detectors.available())]
    large = dev_set.UNLABELLED_PHOTOS[0]
    rows = []
    for pred, (faces, seconds) in zip(preds, timed_runs(preds, dev, rounds)):
        matched = match_faces(dev, faces)
        small = [s for n, s in seconds.items() if n != large]
        found = {n: pred.detect(rgb)[0] for n, rgb in dev.rgb.items()}
        rows.append(Row(pred.detector_name, matched.found, dev.num_faces, matched.false_positives,
                        matched.unlabelled, 1000 * float(np.mean(small)), 1000 * seconds[large],
                        _nme_columns(pred, dev, found, columns)))
    if base.num_landmarks == 68:
        ideal = box_maps.official_box() if base.convention == "official" else None
        boxes = {n: (ideal.from_points(lab.lm_NxKx2) if ideal else box_maps.tight_box(lab.lm_NxKx2))
                 for n, lab in dev.labelled.items()}
        rows.append(Row("labels", dev.num_faces, dev.num_faces, 0, 0, float("nan"), float("nan"),
                        _nme_columns(base, dev, boxes, columns)))
    return rows


def format_table(rows: Sequence[Row], load_average: str = "") -> str:
    """A Markdown table of the rows."""
    lines = ["| detector | found | false pos. | bald_guys | ms/photo | ms bald_guys | "
             + " | ".join(f"NME68 {c}" for c in COLUMNS) + " |",
             "|---" * (6 + len(COLUMNS)) + "|"]
    for r in rows:
        nme = [f"{r.nme[c]:.4f}" if c in r.nme else "-" for c in COLUMNS]
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
    """Boxes (N, 4) around `box`: corners shifted by -shift, 0, +shift of the width in x and y,
    sides scaled about the centre by each of `scales` (27 boxes by default)."""
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


def robustness(predictor: Predictor, image: np.ndarray, box: Sequence[float],
               reference_Kx2: np.ndarray | None = None, passes: int = refine.PASSES
               ) -> dict[str, float]:
    """Spread of the predictor's points over perturbed starting boxes (perturbed_boxes), without
    and with `passes` re-crops, and their mean distance from a reference."""
    starts = perturbed_boxes(box)
    lm = {k: np.stack([f.landmarks for f in predictor.replace(refine=p).predict(image, starts)])
          for k, p in (("plain", 0), ("refined", passes))}
    out = {"spread_px": spread(lm["plain"]), "spread_refined_px": spread(lm["refined"])}
    if reference_Kx2 is not None:
        dist = lambda pts: float(np.linalg.norm(pts - reference_Kx2, axis=-1).mean())  # noqa: E731
        out["to_reference_px"] = dist(lm["plain"])
        out["to_reference_refined_px"] = dist(lm["refined"])
    return out


def folder_640(dev: dev_set.DevSet, count: int = 24) -> list[bytes]:
    """`count` JPEGs (the dev photos in turn, resized to 640x480): a folder as a user has one."""
    import io

    from PIL import Image

    out = []
    names = list(dev.rgb)
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(dev.rgb[names[i % len(names)]]).resize((640, 480), Image.BILINEAR).save(
            buf, format="JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def folder_speed(predictor: Predictor, photos: Sequence[bytes], rounds: int = 3,
                 workers: Sequence[int] = (1, 2)) -> dict[str, float]:
    """Photos per second over a folder (JPEG bytes: decode included), one photo at a time
    (`predict` per photo) against `stream` with each number of worker threads, in alternating
    rounds, best of each after a warm-up pass."""
    runs = {"one_at_a_time": lambda: [predictor.predict(p) for p in photos]}
    for n in workers:
        runs[f"stream_{n}_workers"] = lambda n=n: list(
            predictor.stream(((i, p, None) for i, p in enumerate(photos)), workers=n))
    best = {}
    for r in range(rounds + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            took = time.perf_counter() - start
            if r:
                best[name] = min(best.get(name, np.inf), took)
    return {name: len(photos) / t for name, t in best.items()}


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"

"""Re-crop refinement: predict, take the model's own box from its predicted points, predict again.

Model-agnostic: a model is a function boxes_Nx4 -> lm_NxKx2 (pixels) for one image, and a
`RecropRule` says how that model's input box follows from its points. The rule must be a fixed point
of the model's convention: if the model, given its ideal box, predicts the true points, the rule
applied to those predictions must give the ideal box back. Taking the tight box of the predicted
points for a model that expects another box drifts a little further each pass, so the rule is a
`BoxMap` FITTED from the model's predictions (at its ideal boxes) to those ideal boxes
(`fit_rule`), read from box_maps.json by `load_rule`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from tcdcn_jax.photos import box_maps

PredictFn = Callable[[np.ndarray], np.ndarray]  # boxes_Nx4 -> lm_NxKx2, pixels of one image
Outputs = dict  # 'landmarks': lm_NxKx2 pixels, and any other per-face arrays
PredictMany = Callable[[list], list]  # [(image index, boxes_Nx4)] -> [Outputs]
SOURCES = ("tight", "square")
# Re-crops after the first prediction, measured with the authors' weights: from boxes shifted by
# up to 10% and scaled 0.9-1.1 on their test image the points' spread falls 5.84 -> 2.32 -> 1.32
# -> 1.09 px after 1, 2, 3 passes; on the dev photos NME68 from Haar's boxes 0.178 -> 0.158 -> 0.152
# -> 0.152. From boxes that already fit (libfacedetection's map, or the labels' own boxes) it costs
# agreement with dlib's labels: 0.146 -> 0.153 -> 0.157 (experiments/evaluate_photos.py).
PASSES = 2
TOLERANCE = 0.01  # stop a face once its box moves by less than this fraction of its size


@dataclasses.dataclass(frozen=True)
class RecropRule:
    """next box = box_map(source box of the predicted points); source 'tight': the tight box,
    'square': the square of side max(width, height) on the tight box's centre (a model that reads a
    square from the box, as the authors' tool does, needs the square, not the width of a narrow
    box)."""

    box_map: box_maps.BoxMap
    source: str = "tight"

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")


IDENTITY = box_maps.BoxMap(0.0, 0.0, 1.0, 1.0)


def source_box(lm_NxKx2: np.ndarray, source: str) -> np.ndarray:
    """The box (N, 4) a rule reads from points (see RecropRule)."""
    if source == "square":
        return box_maps.OfficialBox(0.0, 0.0, 1.0).from_points(lm_NxKx2)
    return box_maps.tight_box(lm_NxKx2)


def next_box(rule: RecropRule, lm_NxKx2: np.ndarray) -> np.ndarray:
    """The model's input boxes (N, 4) for predicted points (N, K, 2): pure."""
    return rule.box_map.apply(source_box(lm_NxKx2, rule.source))


def box_change(old_Nx4: np.ndarray, new_Nx4: np.ndarray) -> np.ndarray:
    """How far each box moved: the largest change of an edge, over the old box's larger side."""
    old, new = np.asarray(old_Nx4, np.float64), np.asarray(new_Nx4, np.float64)
    edges = lambda b: np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], 1)  # noqa: E731
    return np.abs(edges(new) - edges(old)).max(axis=1) / np.maximum(old[:, 2], old[:, 3])


def refine(predict: PredictFn, boxes_Nx4: np.ndarray, rule: RecropRule, passes: int = PASSES,
           tolerance: float = TOLERANCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lm_NxKx2, final boxes_Nx4, passes run per face (N,)): a first prediction in the given boxes,
    then up to `passes` re-crops; a face stops once its box moves by less than `tolerance`."""
    many = lambda asks: [{"landmarks": np.asarray(predict(asks[0][1]))}]  # noqa: E731
    boxes = np.asarray(boxes_Nx4, np.float32).reshape(-1, 4)
    (out,), (final,), (done,) = refine_many(many, [boxes], rule, [passes], tolerance)
    return out["landmarks"], final, done


def refine_many(predict: PredictMany, boxes_list: Sequence[np.ndarray], rule: RecropRule,
                passes_list: Sequence[int], tolerance: float = TOLERANCE,
                first: Sequence[Outputs] | None = None
                ) -> tuple[list[Outputs], list[np.ndarray], list[np.ndarray]]:
    """`refine` for the faces of many images at once, so each pass is one batched prediction.

    predict([(image index, boxes_Nx4), ...]) -> outputs for each, {'landmarks': lm_NxKx2 pixels,
    ...} with one row per box (any other key, such as auxiliary probabilities, is replaced row by
    row along with the points). Image i gets up to passes_list[i] re-crops; `first`: the outputs in
    the given boxes when already computed. Returns (outputs, final boxes, passes run per face) per
    image.
    """
    if any(p < 0 for p in passes_list):
        raise ValueError(f"passes must be >= 0, got {list(passes_list)}")
    boxes = [np.asarray(b, np.float32).reshape(-1, 4).copy() for b in boxes_list]
    outs = [dict(o) for o in (predict(list(enumerate(boxes))) if first is None else first)]
    done = [np.zeros(len(b), np.int64) for b in boxes]
    active = [np.full(len(b), p > 0) for b, p in zip(boxes, passes_list)]
    for step in range(max(passes_list, default=0)):
        asks = []
        for i, (out, box) in enumerate(zip(outs, boxes)):
            if step < passes_list[i] and active[i].any():
                new = next_box(rule, out["landmarks"])
                active[i] &= box_change(box, new) >= tolerance
                box[active[i]] = new[active[i]]
            else:
                active[i][:] = False
            if active[i].any():
                asks.append((i, box[active[i]]))
        if not asks:
            break
        for (i, _), got in zip(asks, predict(asks)):
            for key, value in got.items():
                outs[i][key] = outs[i][key].copy()
                outs[i][key][active[i]] = value
            done[i][active[i]] += 1
    return outs, boxes, done


def fit_rule(pred_NxKx2: np.ndarray, ideal_Nx4: np.ndarray, source: str = "tight"
             ) -> RecropRule:
    """The rule taking a model's predictions (made at its ideal boxes) back to those boxes."""
    fitted = box_maps.fit(source_box(pred_NxKx2, source), ideal_Nx4)
    return RecropRule(fitted, source)


def load_rule(convention: str, path: str = box_maps.MAPS_FILE) -> RecropRule:
    """The fitted rule of a box convention ('official': the authors' weights). 'tight' (our models)
    is the identity on the tight box until a trained model's rule is fitted with fit_rule."""
    if convention not in box_maps.CONVENTIONS:
        raise ValueError(f"convention must be one of {box_maps.CONVENTIONS}, got {convention!r}")
    rules = box_maps._read(path).get("recrop", {})
    if convention not in rules:
        return RecropRule(IDENTITY, "tight")
    entry = rules[convention]
    return RecropRule(box_maps.entry_to_map(entry), entry.get("source_points", "tight"))

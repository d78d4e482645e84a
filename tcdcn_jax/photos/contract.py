"""The Predictor as `tcdcn predict` and experiments/benchmark_predict.py call it, in the terms of
the photos contract (/work/scratch/reports/photos_contract.md): `load_predictor`, `stream` (key,
faces as JSON dicts or an exception, per image, in order), `box_note`, `detector_name`.

Where today's Predictor lacks a contracted part (detector options, `stream`, `PredictedFace.score`
and `.points5`, `box_note`, `detector_name`, a `check_box` with plain numbers and a size limit), a
`_fallback_*` function stands in for it. When the Predictor has them all, delete every `_fallback_*`
function and the branches that call them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator

from tcdcn_jax.photos.inputs import InputError

# The Predictor options of the contract, passed on to Predictor.from_path when given.
PREDICTOR_OPTIONS = ("detector", "min_score", "min_face", "max_side", "refine", "averaged",
                     "backend", "batch_size")
Work = Iterable[tuple[str, Any, "list | None"]]  # (key, image, boxes or None: detect)


def one_line(err: BaseException | str) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def named(key: str, err: BaseException | str) -> str:
    """The error as one line that names the image (prefixed unless it already does)."""
    text = one_line(err)
    return text if key in text else f"{key}: {text}"


def load_predictor(weights: str, options: dict[str, Any],
                   note: Callable[[str], None] = lambda message: None, detection: bool = True):
    """(predictor, fallback detect function or None) for `weights`, with the given options (None
    and False mean: the Predictor's default; detection=False: no detector is needed). InputError
    for weights or options that do not work, ImportError included: a missing optional package is
    the user's to install."""
    import inspect

    from tcdcn_jax.photos.predictor import Predictor

    given = {k: v for k, v in options.items() if v is not None and v is not False}
    contract = "detector" in inspect.signature(Predictor.from_path).parameters
    kwargs = given if contract else {k: v for k, v in given.items() if k == "batch_size"}
    try:
        predictor = Predictor.from_path(weights, **kwargs)
        detect = None if contract or not detection else _fallback_detector(predictor, given, note)
    except (FileNotFoundError, ValueError, KeyError, ImportError) as err:
        text = one_line(err)
        raise InputError(f"--weights {text}" if weights in text else
                         f"--weights {weights}: {text}") from None
    except Exception as err:  # orbax / msgpack raise their own types for damaged checkpoints
        raise InputError(f"cannot read weights {weights}: {type(err).__name__}: "
                         f"{one_line(err)}") from None
    return predictor, detect


def stream(predictor, work: Work, detect=None) -> Iterator[tuple[str, Any]]:
    """(key, [face.to_json(), ...] or a FileNotFoundError / ValueError naming the image) per work
    item, in order."""
    if hasattr(predictor, "stream"):
        for key, result in predictor.stream(work):
            yield key, result if isinstance(result, BaseException) else [
                f.to_json() for f in result]
    else:
        yield from _fallback_stream(predictor, work, detect)


def box_note(predictor) -> str | None:
    """A line to say when boxes are given and the model ignores part of them."""
    if hasattr(predictor, "box_note"):
        return predictor.box_note
    return _fallback_box_note(predictor)


def detector_name(predictor, detect=None) -> str | None:
    return getattr(predictor, "detector_name", None) or getattr(detect, "name", None)


def _fallback_box_note(predictor) -> str | None:
    if predictor.preprocessing == "official":
        return ("the authors' model reads a square of side = the box width from the box's "
                "top-left corner: box heights are ignored")
    return None


def _fallback_detector(predictor, options: dict[str, Any], note: Callable[[str], None]):
    """detect(rgb) -> (boxes_Nx4 in the model's box convention, scores_N) through the detectors
    package; a note for each option today's Predictor cannot honour."""
    from tcdcn_jax.photos import box_maps, detectors

    for name in ("refine", "averaged", "backend"):
        if name in options:
            note(f"--{name} is not supported by this Predictor: ignored")
    det = detectors.create(options.get("detector", "auto"))
    convention = "official" if predictor.preprocessing == "official" else "tight"

    def detect(rgb):
        found = detectors.detect(det, rgb, options.get("max_side", detectors.DEFAULT_MAX_SIDE),
                                 options.get("min_score"), options.get("min_face"))
        return box_maps.to_convention(det.name, convention, found.boxes_Nx4), found.scores_N
    detect.name = det.name
    return detect


def _fallback_check_box(box, image_shape, key: str) -> None:
    """The contract's check_box: numbers shown plainly, sizes past 10 photos refused."""
    h, w = image_shape[:2]
    shown = ",".join(f"{v:g}" for v in box)
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"{key}: box {shown} must be 4 finite numbers")
    left, top, width, height = box
    if width < 1 or height < 1:
        raise ValueError(f"{key}: box {shown} has width or height below 1 px")
    if max(width, height) > 10 * max(h, w):
        raise ValueError(f"{key}: box {shown} is over 10 times the {w}x{h} photo's longer side")
    if left >= w or top >= h or left + width <= 0 or top + height <= 0:
        raise ValueError(f"{key}: box {shown} lies outside the {w}x{h} photo")


def _fallback_face_json(face, score: float | None) -> dict[str, Any]:
    """The contract's PredictedFace.to_json(): score and points5 added where they are missing."""
    import numpy as np

    from tcdcn_jax import layouts

    out = face.to_json()
    lm = np.asarray(face.landmarks, np.float64)
    five = lm if len(lm) == 5 else layouts.to_five(lm[None])[0]
    return {"box": out["box"], "score": out.get("score", score), "landmarks": out["landmarks"],
            "points5": out.get("points5", np.round(five, 3).tolist()), "aux": out["aux"]}


def _fallback_stream(predictor, work: Work, detect) -> Iterator[tuple[str, Any]]:
    """The contract's Predictor.stream, one image at a time."""
    import numpy as np

    from tcdcn_jax.images import load_image

    for key, image, boxes in work:
        try:
            rgb = load_image(image, name=key)
            if boxes is None:
                box_Nx4, score_N = detect(rgb)
                scores = [round(float(s), 4) for s in score_N]
            else:
                for box in boxes:
                    _fallback_check_box(box, rgb.shape, key)
                box_Nx4, scores = np.asarray(boxes, np.float32).reshape(-1, 4), [None] * len(boxes)
            faces = predictor.decode(predictor.run(predictor.preprocess(rgb, box_Nx4)), box_Nx4)
            yield key, [_fallback_face_json(f, s) for f, s in zip(faces, scores)]
        except (FileNotFoundError, ValueError) as err:
            yield key, err

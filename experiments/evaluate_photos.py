r"""The Predictor on the dev photos, per detector: faces found (of 43), false positives (the dogs
photo included), faces on the unlabelled bald_guys.jpg, ms per photo (decode + detect + landmarks,
the Predictor's defaults), and NME68 against the dev labels without/with re-crop refinement, single
pass and TCDCN-Averaged; then the spread of the points on the authors' test image from perturbed
boxes, with and without refinement, single and Averaged; then photos/s over a folder of 24 640x480
JPEGs (the dev photos resized), one `predict` per photo against `stream` (detection of the next
photos overlapping the network on the previous ones), the default detector, in alternating rounds.

  python -m experiments.evaluate_photos
  python -m experiments.evaluate_photos --detectors libfacedetection,haar --rounds 1

The labels come from dlib's 68-point model: NME68 here is agreement with dlib, not accuracy (and the
'dlib' row's boxes are those the labels were made from). Timings depend on the machine's load
(printed with them); detectors alternate within each timing round.
"""

import os

import numpy as np
from absl import app, flags
from PIL import Image

from tcdcn_jax.photos import dev_set, photo_eval
from tcdcn_jax.photos.predictor import Predictor

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REFERENCE = os.path.join(_REPO, "..", "shared", "reference")
_DEV = flags.DEFINE_string("dev_dir", os.path.join(_REFERENCE, "dev-photos"),
                           "The dev-photos folder (default: ../shared/reference/dev-photos).")
_WEIGHTS = flags.DEFINE_string("weights", os.path.join(_REFERENCE, "official-tcdcn", "model.mat"),
                               "Weights for the Predictor (the authors' model.mat by default).")
_DETECTORS = flags.DEFINE_list("detectors", None, "Detectors (default: every installed one).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timing rounds (alternating detectors; best kept).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    rows = photo_eval.evaluate(_DEV.value, _WEIGHTS.value, _DETECTORS.value, _ROUNDS.value)
    print(photo_eval.format_table(rows, photo_eval.load_average()))
    predictor = Predictor.from_path(_WEIGHTS.value)
    rates = photo_eval.folder_speed(predictor, photo_eval.folder_640(dev_set.load(_DEV.value)),
                                    _ROUNDS.value)
    print(f"\nfolder of 24 640x480 photos, {predictor.detector_name}: "
          + ", ".join(f"{k} {v:.1f} photos/s" for k, v in rates.items())
          + f"; stream (2 workers) / one at a time = "
          f"{rates['stream_2_workers'] / rates['one_at_a_time']:.2f} "
          f"(load average {photo_eval.load_average()})")
    if not _WEIGHTS.value.endswith(".mat"):
        return
    folder = os.path.dirname(_WEIGHTS.value)
    with open(os.path.join(folder, "list.txt")) as f:
        name, *box = f.read().split()
    with open(os.path.join(folder, "output.txt")) as f:
        reference = np.asarray(f.read().split()[1:], np.float64).reshape(-1, 2)
    path = os.path.join(folder, name.replace("\\", "/"))
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    print(f"\n{os.path.basename(path)}: 27 boxes shifted by 0/±10% of the width, scaled 0.9-1.1")
    for averaged in (False, True):
        r = photo_eval.robustness(predictor.replace(averaged=averaged), rgb,
                                  [float(v) for v in box], reference)
        print(f"{'averaged' if averaged else 'single'}: spread {r['spread_px']:.2f} px -> "
              f"{r['spread_refined_px']:.2f} px refined; mean distance to output.txt "
              f"{r['to_reference_px']:.2f} -> {r['to_reference_refined_px']:.2f} px")


if __name__ == "__main__":
    app.run(main)

r"""Fits tcdcn_jax/photos/box_maps.json on the dev photos with the authors' weights: the authors'
model's box (grid search on its NME68), the re-crop rule, and every installed detector's maps.

  python -m experiments.fit_box_maps                      # writes tcdcn_jax/photos/box_maps.json
  python -m experiments.fit_box_maps --out /tmp/maps.json

Takes ~5 minutes on 2 CPU cores. Figures come from the dev photos' machine labels (dlib's model).
"""

import json
import os

from absl import app, flags

from tcdcn_jax.photos import box_fit, box_maps, official

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEV = flags.DEFINE_string("dev_dir", os.path.join(_REPO, "..", "shared", "reference", "dev-photos"),
                           "The dev-photos folder.")
_WEIGHTS = flags.DEFINE_string(
    "weights", os.path.join(_REPO, "..", "shared", "reference", "official-tcdcn", "model.mat"),
    "The authors' model.mat.")
_DETECTORS = flags.DEFINE_list("detectors", None, "Detectors to fit (default: every installed one).")
_OUT = flags.DEFINE_string("out", box_maps.MAPS_FILE, "Where to write the maps.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    params = official.load_official_params(_WEIGHTS.value)
    result = box_fit.fit_all(_DEV.value, params, _DETECTORS.value)
    with open(_OUT.value, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)

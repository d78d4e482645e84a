r"""Evaluate a trained checkpoint: NME, failure rate, per-landmark / per-pose NME, attribute accuracies,
CED and its AUC up to 0.10, written as eval.json plus PNGs (CED, per-landmark bars, a Fig. 10 sheet).

  python -m experiments.evaluate --workdir=runs/smoke [--dataset=synthetic --split=test --data_dir=D]

Outputs go to --out_dir (default WORKDIR/eval_<dataset>_<split>). The work is
tcdcn_jax.eval.report.evaluate_workdir.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from tcdcn_jax.eval import report

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints/).",
                               required=True)
_DATASET = flags.DEFINE_string("dataset", None, "Dataset to evaluate on (default: the run's).")
_SPLIT = flags.DEFINE_string("split", "test", "train | validation | test | an extra test set.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data folder (default: the run's).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output folder (default WORKDIR/eval_<ds>_<split>).")
_NUM_FACES = flags.DEFINE_integer("num_faces", 24, "Faces on the example sheet.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Evaluation batch (default: the run's).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    r = report.evaluate_workdir(_WORKDIR.value, _DATASET.value, _SPLIT.value, _DATA_DIR.value,
                                     _OUT_DIR.value, _NUM_FACES.value, _BATCH.value)
    logging.info("%s/%s: NME %.4f, failure rate %.3f, AUC@0.10 %.3f, accuracy %s; wrote %s",
                 r["dataset"], r["split"], r["nme"], r["failure_rate"], r["auc"], r["accuracy"],
                 os.path.dirname(r["figures"]["ced"]))


if __name__ == "__main__":
    app.run(main)

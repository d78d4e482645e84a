"""The report's transfer claim, measured: `python -m experiments.transfer_study
--flagfile=experiments/flagfiles/transfer_study.flags` (transfer_study_quick.flags for a smoke run).

Three arms fine-tuned to 68 points on the same data with the same seeds: from the multi-task pretrain
(5 points + pose, gender, glasses, smile), from a landmark-only pretrain (5 points), from scratch.
Each pretrain runs once (or is taken from an existing workdir); every arm is fine-tuned once per seed.
Layout under --workdir: pretrain_<arm>/, finetune_<arm>_seed<s>/, transfer.json, transfer.md.
Resumable: a run whose summary.json exists is skipped, a half-done run resumes from its checkpoint.
The work is tcdcn_jax.transfer_study.run_study.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tcdcn_jax.train import loop
from tcdcn_jax.studies import transfer_study

_CONFIG = config_flags.DEFINE_config_file(
    "config", "tcdcn_jax/configs/finetune.py:study", "Study config (get_config('study')).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/transfer_study", "Where every run and the report go.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    loop.quiet_library_logs()
    try:
        transfer_study.run_study(_CONFIG.value, _WORKDIR.value)
    except (loop.ConfigMismatchError, FloatingPointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    with open(os.path.join(_WORKDIR.value, "transfer.md")) as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main)

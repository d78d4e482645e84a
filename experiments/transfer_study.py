"""The report's transfer claim, measured: `python -m experiments.transfer_study
--flagfile=experiments/flagfiles/transfer_study.flags` (transfer_study_quick.flags for a smoke run).

Three arms fine-tuned to 68 points on the same data with the same seeds: from the multi-task pretrain
(5 points + pose, gender, glasses, smile), from a landmark-only pretrain (5 points), from scratch.
Each pretrain runs once (or is taken from an existing workdir); every arm is fine-tuned once per seed.
Layout under --workdir: pretrain_<arm>/, finetune_<arm>_seed<s>/, transfer.json, transfer.md.
Resumable: a finished run of the same config is kept, a half-done one resumes from its checkpoint.
The work is tcdcn_jax.studies.transfer_study.run_study.
"""

from __future__ import annotations

import os

from absl import app

from experiments import common
from tcdcn_jax.studies import transfer_study

# The study config (get_config('study')) holds a pretrain and a fine-tune config.
FLAGS = common.define_training_flags("tcdcn_jax/configs/finetune.py:study", "runs/transfer_study")


def main(argv):
    common.run_training(argv, FLAGS, lambda: transfer_study.run_study(
        FLAGS.config.value, FLAGS.workdir.value,
        allow_config_change=FLAGS.allow_config_change.value))
    with open(os.path.join(FLAGS.workdir.value, "transfer.md")) as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)

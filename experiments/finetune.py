"""Fine-tune a pretrained TCDCN to K points: `python -m experiments.finetune
--flagfile=experiments/flagfiles/finetune_synthetic.flags --config.init_from=PRETRAIN_WORKDIR --workdir=W`."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tcdcn_jax.train import loop
from tcdcn_jax.train import transfer

_CONFIG = config_flags.DEFINE_config_file(
    "config", "tcdcn_jax/configs/finetune.py", "Python config file (get_config()).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/finetune", "Where checkpoints and metrics go.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose run had a different config.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    try:
        transfer.finetune(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value)
    except (loop.ConfigMismatchError, FloatingPointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)

"""Pretrain TCDCN: `python -m experiments.pretrain --flagfile=experiments/flagfiles/... --workdir=W`."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.common import parse_flags
from tcdcn_jax.train import distributed
from tcdcn_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    "config", "tcdcn_jax/configs/pretrain.py", "Python config file (get_config()).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain", "Where checkpoints and metrics go.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose run had a different config.")
distributed.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    distributed.initialize_from_flags()
    try:
        loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                 allow_config_change=_ALLOW_CHANGE.value)
    except (loop.ConfigMismatchError, FloatingPointError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)

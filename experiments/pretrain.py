"""Pretrain TCDCN: `python -m experiments.pretrain --flagfile=experiments/flagfiles/... --workdir=W`."""

from absl import app, flags, logging
from ml_collections import config_flags

from tcdcn_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/pretrain.py", "Python config file (get_config()).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain", "Where checkpoints and metrics go.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)

"""Pretrain TCDCN: `python -m experiments.pretrain --flagfile=experiments/flagfiles/... --workdir=W`."""

from absl import app

from experiments import common
from tcdcn_jax.train import loop

FLAGS = common.define_training_flags("tcdcn_jax/configs/pretrain.py", "runs/pretrain")


def main(argv):
    common.run_training(argv, FLAGS, lambda: loop.train_and_evaluate(
        FLAGS.config.value, FLAGS.workdir.value,
        allow_config_change=FLAGS.allow_config_change.value))


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)

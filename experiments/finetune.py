"""Fine-tune a pretrained TCDCN to K points: `python -m experiments.finetune
--flagfile=experiments/flagfiles/finetune_synthetic.flags --config.init_from=PRETRAIN_WORKDIR --workdir=W`."""

from absl import app

from experiments import common
from tcdcn_jax.train import transfer

FLAGS = common.define_training_flags("tcdcn_jax/configs/finetune.py", "runs/finetune")


def main(argv):
    common.run_training(argv, FLAGS, lambda: transfer.finetune(
        FLAGS.config.value, FLAGS.workdir.value,
        allow_config_change=FLAGS.allow_config_change.value))


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)

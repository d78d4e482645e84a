r"""The paper's ablations (Fig. 4, 5b, 6, 7): FLD, FLD+pose/gender/glasses/smile, FLD+all, and FLD+all
without task-wise early stopping, over several seeds on the same data.

  python -m experiments.ablate --flagfile=experiments/flagfiles/ablate_synthetic.flags
  python -m experiments.ablate --flagfile=experiments/flagfiles/ablate_quick.flags   # smoke run

Writes WORKDIR/<variant>/seed_<s>/ (one training workdir per run), WORKDIR/ablation.{json,md} and PNGs.
Rerunning the same command resumes: finished runs are kept, a half-done one continues from its checkpoint.
"""

from absl import app, flags

from experiments import common
from tcdcn_jax.studies import ablation

# The base config; each variant overrides aux_tasks (and early_stopping) and the seed.
FLAGS = common.define_training_flags("tcdcn_jax/configs/pretrain.py", "runs/ablation")
_VARIANTS = flags.DEFINE_list("variants", list(ablation.VARIANTS), "Variants to train.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds per variant.")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke sizes (tiny data, a dozen steps per run).")
_CACHE = flags.DEFINE_bool("compile_cache", True, "Persistent compilation cache in WORKDIR/.jax_cache "
                          "(unless JAX_COMPILATION_CACHE_DIR names one).")


def main(argv):
    common.run_training(argv, FLAGS, lambda: ablation.run(
        FLAGS.config.value, FLAGS.workdir.value, _VARIANTS.value, [int(s) for s in _SEEDS.value],
        _QUICK.value, _CACHE.value, allow_config_change=FLAGS.allow_config_change.value))


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)

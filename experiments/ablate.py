r"""The paper's ablations (Fig. 4, 5b, 6, 7): FLD, FLD+pose/gender/glasses/smile, FLD+all, and FLD+all
without task-wise early stopping, over several seeds on the same data.

  python -m experiments.ablate --flagfile=experiments/flagfiles/ablate_synthetic.flags
  python -m experiments.ablate --flagfile=experiments/flagfiles/ablate_quick.flags   # smoke run

Writes WORKDIR/<variant>/seed_<s>/ (one training workdir per run), WORKDIR/ablation.{json,md} and PNGs.
Rerunning the same command resumes: finished runs are kept, a half-done one continues from its checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from tcdcn_jax.studies import ablation

_CONFIG = config_flags.DEFINE_config_file(
    "config", "tcdcn_jax/configs/pretrain.py", "Base config; each variant overrides aux_tasks "
    "(and early_stopping) and the seed.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/ablation", "Where the runs and the report go.")
_VARIANTS = flags.DEFINE_list("variants", list(ablation.VARIANTS), "Variants to train.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds per variant.")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke sizes (tiny data, a dozen steps per run).")
_CACHE = flags.DEFINE_bool("compile_cache", True, "Persistent compilation cache in WORKDIR/.jax_cache.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    ablation.run(_CONFIG.value, _WORKDIR.value, _VARIANTS.value, [int(s) for s in _SEEDS.value],
                 _QUICK.value, _CACHE.value)


if __name__ == "__main__":
    app.run(main)

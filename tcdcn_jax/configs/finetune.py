r"""Fine-tuning TCDCN to 68 points (report section 3.3 / 4.5), and the transfer study that measures it.

Fine-tune (pretrain first with experiments/flagfiles/pretrain_report_synthetic.flags):
  python -m experiments.finetune --flagfile=experiments/flagfiles/finetune_synthetic.flags \
      --config.init_from=runs/pretrain_report --workdir=runs/finetune
Transfer study (three arms x seeds, all under one workdir; `:study_quick` for a smoke run):
  python -m experiments.transfer_study --flagfile=experiments/flagfiles/transfer_study.flags
Expected: see README.md / the study's transfer.md for the figures reached and the time taken.

get_config() is the pretrain config with these changes:
- 68 points, no auxiliary task (the report fine-tunes without them);
- a small dense-labelled set: 3000 training faces, as 300-W's training set is ~3148;
- data_seed = 1: the synthetic split seeds are 3 * data_seed + {0, 1, 2}, so these are new faces
  (seeds 3, 4, 5), never seen by a pretrain on data_seed 0 (seeds 0, 1, 2);
- the report trunk (60x60, shared convolutions) with relu, which must match the pretrained checkpoint:
  finetune checks trunk, activation and features against init_from's config.json and fails on a
  mismatch, naming the flags to pass.
"""

import ml_collections

from tcdcn_jax.configs import pretrain


def finetune_config() -> ml_collections.ConfigDict:
    c = pretrain.get_config()
    c.init_from = ""                # pretrain workdir whose trunk to load; '' = from scratch
    c.trunk_lr_multiplier = 1.0     # scales the trunk's updates; 0 freezes the trunk
    c.num_landmarks = 68
    c.aux_tasks = ""
    c.learn_task_weights = False
    c.early_stopping = False        # no auxiliary task to stop
    c.data_seed = 1                 # new faces (see the top comment)
    c.num_train = 3000
    c.num_val = 500
    c.num_test = 1000
    c.trunk = "report"
    c.activation = "relu"
    c.learning_rate = 1e-3
    c.warmup_steps = 50
    c.num_steps = 2000
    c.batch_size = 64
    c.eval_every = 200
    c.checkpoint_every = 500
    # TCDCN-Averaged on the test set after training (tcdcn_jax/model/averaging.py): translations on a
    # step_px grid of radius `radius` without its corners (default: centre + 20 shifts of <= 4 px).
    c.averaging = ml_collections.ConfigDict(dict(enabled=True, step_px=2, radius=2))
    return c


def study_config(quick: bool = False) -> ml_collections.ConfigDict:
    """Three arms (multi-task pretrain, landmark-only pretrain, scratch) fine-tuned on the same data."""
    s = ml_collections.ConfigDict()
    s.seeds = "0,1,2"               # fine-tune seeds (head init, batch order, augmentation)
    s.multitask_workdir = ""        # existing pretrain workdirs to reuse; '' = run under workdir/
    s.landmark_only_workdir = ""
    s.pretrain = pretrain.get_config()
    p = s.pretrain
    p.trunk, p.activation = "report", "relu"
    p.num_steps, p.batch_size, p.warmup_steps = 2000, 64, 100
    p.eval_every, p.checkpoint_every = 200, 500
    s.finetune = finetune_config()
    f = s.finetune
    f.num_steps = 1000
    if quick:
        s.seeds = "0,1"
        for c in (p, f):
            c.num_train, c.num_val, c.num_test = 128, 64, 64
            c.num_steps, c.batch_size, c.warmup_steps = 6, 16, 2
            c.eval_every, c.log_every, c.checkpoint_every, c.eval_batch_size = 3, 3, 6, 64
            c.es_strip = 2
        f.data_seed = 1
    return s


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """'' = fine-tune; 'study' / 'study_quick' = the transfer study (experiments/transfer_study.py)."""
    if variant == "":
        return finetune_config()
    if variant in ("study", "study_quick"):
        return study_config(quick=variant == "study_quick")
    raise ValueError(f"unknown variant {variant!r}; choose '', 'study' or 'study_quick'")

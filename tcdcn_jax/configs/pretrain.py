r"""Pretraining TCDCN: 5 landmarks + pose, gender, glasses, smile, with task-wise early stopping.

Run (the full default, on the embedded synthetic world):
  python -m experiments.pretrain --flagfile=experiments/flagfiles/pretrain_synthetic.flags \
      --workdir=runs/pretrain
Expected: see README.md ("Default run") for the figures this config reached and how long it took.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0                      # model init, augmentation and batch order
    # Data.
    c.dataset = "synthetic"         # synthetic (more sources come with the dataset readers)
    c.data_dir = ""                 # synthetic: cache folder ('' = ~/.cache/tcdcn_jax or $TCDCN_CACHE_DIR)
    c.data_seed = 0                 # synthetic world seed; train/validation/test seeds derive from it
    c.num_train = 10000             # as many faces as the paper's 5-point training set
    c.num_val = 2000
    c.num_test = 2000
    c.image_size = 96               # synthetic photo side, pixels
    c.skip_bad_rows = False         # real data: skip (and count) bad annotation rows instead of failing
    c.celeba_images = "auto"        # celeba/mafl: 'auto', 'aligned' or 'wild' image set
    c.num_landmarks = 5
    # Model.
    c.trunk = "eccv"                # eccv (40x40, locally connected) | report (60x60, shared convs)
    c.activation = "abs_tanh"       # abs_tanh (paper) | relu | tanh
    c.features = 0                  # width of x^l; 0 = the paper's (100 eccv, 512 report)
    # Tasks and the objective (Eq. 3).
    c.aux_tasks = "pose,gender,glasses,smile"  # comma-separated; '' = landmarks only
    # lambda^a for every auxiliary task (fixed). Cross-entropies (~0.1-0.7) dwarf the landmark loss in
    # box units (~0.01-0.05); at 1.0 the auxiliary tasks drove the shared trunk and landmarks suffered.
    c.task_lambda = 0.1
    c.learn_task_weights = False    # learn lambda^a (lambda*CE - log(lambda)/2)
    c.weight_decay = 1e-5
    # Task-wise early stopping (Eq. 5).
    c.early_stopping = True
    c.es_strip = 5                  # k: evaluations in the training-loss strip
    c.es_epsilon = 10.0             # threshold (the paper does not give its value)
    # E_tr in Eq. 5: 'probe' = loss on a fixed un-augmented slice of the training set (as large as the
    # validation set), measured like E_val; 'running' = mean of the period's augmented mini-batch
    # losses, which sit above E_val on augmented data, so that Eq. 5's gap never turns positive.
    c.es_train_loss = "probe"
    # Optimisation.
    c.optimizer = "adam"            # adam | sgd (momentum)
    c.learning_rate = 2e-3
    c.momentum = 0.9
    c.schedule = "cosine"           # cosine | constant
    c.warmup_steps = 100
    c.num_steps = 6000
    c.batch_size = 64
    c.augment = ml_collections.ConfigDict(dict(
        max_shift=0.05, max_rotation_deg=15.0, scale_min=0.9, scale_max=1.1, flip=False))
    # Bookkeeping.
    c.eval_every = 200              # steps between validation passes (and early-stopping updates)
    c.eval_batch_size = 500
    c.log_every = 100
    c.checkpoint_every = 1000
    return c

"""What the experiment mains share: the training flags, the start of a run, one-line errors."""

from __future__ import annotations

import sys
from typing import Any, Callable, NamedTuple

from absl import app, flags, logging
from ml_collections import config_flags

from tcdcn_jax.train import distributed
from tcdcn_jax.train import setup

# What a user can fix from the command line: said in one line, without a traceback.
USER_ERRORS = (setup.ConfigMismatchError, FloatingPointError, FileNotFoundError, ValueError)
# The flags defined below belong to the main that asks for them (so --helpshort lists them there).
flags.disclaim_key_flags()


class TrainingFlags(NamedTuple):
    config: Any  # flags.FlagHolder of an ml_collections ConfigDict
    workdir: flags.FlagHolder
    allow_config_change: flags.FlagHolder


def define_training_flags(config_file: str, workdir: str) -> TrainingFlags:
    """--config, --workdir, --allow_config_change and the jax.distributed flags, as every training
    main (pretrain, finetune, the ablation, the transfer study) takes them."""
    try:
        # The --config.field overrides on the command line are read here, at definition.
        config = config_flags.DEFINE_config_file(
            "config", config_file, "Python config file (get_config()).", lock_config=True)
    except (AttributeError, KeyError) as e:
        _no_such_field(e, config_file.split(":")[0])
    holders = TrainingFlags(
        config,
        flags.DEFINE_string("workdir", workdir, "Where checkpoints, metrics and reports go."),
        flags.DEFINE_bool("allow_config_change", False,
                          "Resume a workdir whose run had a different config."))
    distributed.define_flags()
    return holders


def run_training(argv, train: Callable[[], Any]) -> Any:
    """The start every training main shares: no stray arguments, INFO logs, the other processes
    joined, and user errors in one line."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    setup.quiet_library_logs()
    try:
        distributed.initialize_from_flags()
        return train()
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")


def parse_flags(argv):
    """absl's parse, but a bad flag or an unknown --config.field ends with one line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {e}\nrun with --helpfull for the flags")
    except (AttributeError, KeyError) as e:
        _no_such_field(e, "the config file")


def _no_such_field(error: Exception, where: str):
    name = str(error).strip("\"'")  # ml_collections wraps the KeyError's quoted name in an AttributeError
    sys.exit(f"error: no such config field '{name}' (see {where} for the fields)")

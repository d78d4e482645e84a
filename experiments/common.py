"""What the experiment mains share: the training flags, the start of a run, one-line errors.

Every error an operator can meet ends in one line on stderr and no traceback (`--verbose` adds it):
exit 2 when the command must change (a bad flag, a missing flagfile, an invalid config, a workdir
in use or holding another config's run), 1 when the machine or the run failed (a full disk, a folder
that refuses writes, a non-finite loss), 128 + the signal when SIGINT or SIGTERM stopped the run
after it saved its state.
"""

from __future__ import annotations

import contextlib
import os
import logging as std_logging
import sys
import threading
import traceback
from typing import Any, Callable, NamedTuple

from absl import flags, logging
from ml_collections import config_flags

from tcdcn_jax.train import distributed
from tcdcn_jax.train import loop
from tcdcn_jax.train import setup
from tcdcn_jax.train import workdir as workdir_lib

USAGE = 2
FAULT = 1
# The command must change. (FileNotFoundError: a path the command names, such as a data folder.)
USAGE_ERRORS = (setup.ConfigMismatchError, workdir_lib.WorkdirInUse, FileNotFoundError, ValueError)
# The same command can work once the machine is fixed.
FAULTS = (workdir_lib.RunFault, FloatingPointError, OSError)
# The flags defined below belong to the main that asks for them (so --helpshort lists them there).
flags.disclaim_key_flags()


class TrainingFlags(NamedTuple):
    config: Any  # flags.FlagHolder of an ml_collections ConfigDict
    workdir: flags.FlagHolder
    allow_config_change: flags.FlagHolder
    verbose: flags.FlagHolder


def define_training_flags(config_file: str, workdir: str) -> TrainingFlags:
    """--config, --workdir, --allow_config_change, --verbose and the jax.distributed flags, as every
    training main (pretrain, finetune, the ablation, the transfer study) takes them."""
    try:
        # The --config.field overrides (and --flagfile) on the command line are read here.
        config = config_flags.DEFINE_config_file(
            "config", config_file, "Python config file (get_config()).", lock_config=True)
    except (AttributeError, KeyError) as e:
        _no_such_field(e, config_file.split(":")[0])
    except flags.Error as e:
        _exit_usage(e)
    holders = TrainingFlags(
        config,
        flags.DEFINE_string("workdir", workdir, "Where checkpoints, metrics and reports go."),
        flags.DEFINE_bool("allow_config_change", False,
                          "Resume a workdir whose run had a different config."),
        flags.DEFINE_bool("verbose", False, "Show the traceback of an error, not only its line."))
    distributed.define_flags()
    return holders


def run_training(argv, holders: TrainingFlags, train: Callable[[], Any]) -> Any:
    """The start every training main shares: no stray arguments, INFO logs, the other processes
    joined, the workdir locked, and every error in one line."""
    if len(argv) > 1:
        _exit_usage(ValueError(f"unexpected arguments: {argv[1:]}"))
    logging.set_verbosity(logging.INFO)
    setup.quiet_library_logs()
    if not holders.verbose.value:
        _background_errors_in_one_line()

    def locked_train():
        distributed.initialize_from_flags()
        hold = (workdir_lib.hold(holders.workdir.value) if distributed.is_primary()
                else contextlib.nullcontext())
        with hold:
            return train()

    try:
        return one_line_errors(locked_train, holders.verbose.value)
    except _AbortExit as e:
        # After a failed write or an abort orbax's writer threads and event loops are broken; at
        # interpreter teardown they print tracebacks under the error line. The run is over: leave.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.code)


def one_line_errors(train: Callable[[], Any], verbose: bool = False) -> Any:
    """train(), with every error it raises turned into one stderr line and the exit code that says
    what kind it is (see the module docstring)."""
    try:
        return train()
    except loop.Interrupted as e:
        _exit(e, str(e), e.exit_code, verbose)
    except KeyboardInterrupt as e:  # before the loop's handler, or a second Ctrl-C (a hard abort)
        _exit(e, "error: interrupted by SIGINT; run the same command to resume from the last "
              "checkpoint", 130, verbose, abort=True)
    except Exception as e:
        fault = workdir_lib.fault_in(e)
        if fault is not None:
            _exit(e, f"error: {_one_line(fault)}", FAULT, verbose, abort=True)
        if workdir_lib.disk_full_error(e) is not None:
            _exit(e, f"error: disk full ({_one_line(e)})", FAULT, verbose, abort=True)
        if isinstance(e, USAGE_ERRORS):
            _exit(e, f"error: {_one_line(e)}", USAGE, verbose)
        if isinstance(e, FAULTS):
            _exit(e, f"error: {_one_line(e)}", FAULT, verbose)
        raise


def parse_flags(argv):
    """absl's parse, but a bad flag or an unknown --config.field ends with one line, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _exit_usage(e)
    except (AttributeError, KeyError) as e:
        _no_such_field(e, "the config file")
    except OSError as e:  # --config names a file that does not load
        _exit_usage(e)


def _background_errors_in_one_line() -> None:
    """An error in a library's background thread or event loop (orbax's writers, when a save meets
    a full disk) is one warning line, not a traceback above the run's own error line."""

    def thread_error(args):
        name = args.thread.name if args.thread is not None else "a thread"
        print(f"warning: in {name}: {args.exc_type.__name__}: {_one_line(args.exc_value)}",
              file=sys.stderr)

    def unraisable(u):
        print(f"warning: ignored {u.exc_type.__name__}: {_one_line(u.exc_value)}", file=sys.stderr)

    def no_traceback(record: std_logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True

    threading.excepthook = thread_error
    sys.unraisablehook = unraisable
    std_logging.getLogger("asyncio").addFilter(no_traceback)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class _AbortExit(SystemExit):
    """An exit that skips interpreter teardown (see run_training)."""


def _exit(error: BaseException, line: str, code: int, verbose: bool, abort: bool = False):
    if verbose:
        traceback.print_exception(error)
    print(line, file=sys.stderr)
    raise (_AbortExit if abort else SystemExit)(code)


def _exit_usage(error: Exception):
    what = _one_line(error).removeprefix("ERROR:: ")  # absl's own prefix on a flagfile error
    print(f"error: {what} (run with --helpfull for the flags)", file=sys.stderr)
    sys.exit(USAGE)


def _no_such_field(error: Exception, where: str):
    name = str(error).strip("\"'")  # ml_collections wraps the KeyError's quoted name in an AttributeError
    print(f"error: no such config field '{name}' (see {where} for the fields)", file=sys.stderr)
    sys.exit(USAGE)

"""Multi-host start-up: absl flags for jax.distributed, read by the experiment mains."""

from __future__ import annotations

import jax
from absl import flags, logging


def define_flags() -> None:
    """--coordinator_address, --num_processes, --process_id, as flags of the main that calls this."""
    flags.disclaim_key_flags()
    flags.DEFINE_string("coordinator_address", None,
                        "host:port of process 0, for multi-host runs (jax.distributed).")
    flags.DEFINE_integer("num_processes", 1, "Number of processes (hosts) in the run.")
    flags.DEFINE_integer("process_id", 0, "This process's index, 0..num_processes-1.")


def initialize_from_flags() -> None:
    """Joins the other processes when --num_processes > 1; a single process needs nothing."""
    f = flags.FLAGS
    if f.num_processes <= 1:
        return
    if not f.coordinator_address:
        raise ValueError("--num_processes > 1 needs --coordinator_address=host:port")
    if not 0 <= f.process_id < f.num_processes:
        raise ValueError(f"--process_id must be in 0..{f.num_processes - 1}, got {f.process_id}")
    jax.distributed.initialize(coordinator_address=f.coordinator_address,
                               num_processes=f.num_processes, process_id=f.process_id)
    logging.info("process %d of %d; %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def is_primary() -> bool:
    """Only process 0 writes the run's JSON and TensorBoard files (orbax coordinates itself)."""
    return jax.process_index() == 0

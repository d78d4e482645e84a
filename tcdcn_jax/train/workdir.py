"""A workdir that one process owns, and writes that no fault leaves half-done.

- `hold(workdir)`: an OS file lock on workdir/.lock for the whole run. The kernel drops it when the
  process dies (even by SIGKILL), so a lock is never stale; a second process gets `WorkdirInUse`
  naming the holder's pid at once instead of writing over the first one's files.
- `preflight(...)`: what can be known before the first step (writable folders, free disk for the
  checkpoints kept plus the one being written, a batch that splits over the devices) is checked
  before anything but the lock is written, so a refused command leaves nothing that refuses the
  corrected one.
- `write_text` / `write_json`: small files written to a temporary file, fsynced and renamed over the
  old one, so a reader sees the old file or the new one, never a cut or empty one.
- `read_metrics`: metrics.jsonl as kept on resume; a line cut by a kill mid-write is dropped with a
  notice instead of blocking every resume.
- `writing(path)`: turns a full disk or a refused write anywhere under it (orbax wraps the OSError)
  into one `RunFault` line that names the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from typing import Any, Iterator

import jax
from absl import logging

LOCK_FILE = ".lock"
METRICS_FILE = "metrics.jsonl"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")
_held: dict[str, list] = {}  # realpath -> [fd, depth]: the locks this process holds


class WorkdirInUse(RuntimeError):
    """Another process holds the workdir's lock (a usage error: wait, or use another workdir)."""


class RunFault(RuntimeError):
    """The machine, not the command, stops the run: a full disk, a folder that refuses writes."""


class DiskFull(RunFault):
    pass


class NotWritable(RunFault):
    pass


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """Holds workdir/.lock (creating workdir) until the block ends; re-entrant within a process,
    so a main and the loop it calls may both hold the same workdir."""
    path = os.path.realpath(workdir)
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    lock = os.path.join(path, LOCK_FILE)
    with writing(path):
        os.makedirs(path, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's pid stays
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirInUse(f"{path} is in use by process {pid} (lock {lock}); wait for it to "
                               "end or use another --workdir") from None
        with writing(lock):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[path] = [fd, 1]
        try:
            yield
        finally:
            del _held[path]
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)


def is_held(workdir: str) -> bool:
    return os.path.realpath(workdir) in _held


def fault_in(exc: BaseException) -> RunFault | None:
    """The first RunFault in exc's chain: a later error while unwinding (a log file closed on the
    same full disk) must not hide the line that says what failed first."""
    seen, first = set(), None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, RunFault):
            first = exc
        exc = exc.__cause__ or exc.__context__
    return first


def disk_full_error(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT OSError somewhere in exc's chain (cause, context, groups), or, when a
    library re-raised it as text, an OSError made from that text; None when the disk is not full."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return e
        if any(t in str(e) for t in _DISK_FULL_TEXT):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return None


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Re-raises a full disk as DiskFull and a refused write as NotWritable, both naming `path`
    (or the file the OSError names)."""
    try:
        yield
    except RunFault:
        raise
    except Exception as e:
        full = disk_full_error(e)
        if full is not None:
            where = full.filename or path
            raise DiskFull(f"disk full writing {where} ({os.strerror(errno.ENOSPC)}); free some "
                           "space and run the same command to resume") from e
        if isinstance(e, OSError) and e.errno in _REFUSED:
            raise NotWritable(f"cannot write {e.filename or path} ({e.strerror})") from e
        raise


def write_text(path: str, text: str) -> None:
    """Writes path whole or not at all: a temporary file beside it, fsynced, renamed over it."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with writing(path):
        try:  # 0o666 less the umask, as open() would make it (mkstemp's 0o600 would hide it)
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # the rename itself durable; not every filesystem can
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_metrics(path: str, upto_step: int) -> list[str]:
    """metrics.jsonl's lines of steps <= upto_step (a resumed run drops what a killed run logged
    after its last checkpoint). A line that does not parse (a kill cut it mid-write) is dropped, with one
    notice that names the file."""
    kept, bad = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                bad.append(number)
                continue
            if step <= upto_step:
                kept.append(line if line.endswith("\n") else line + "\n")
    if bad:
        logging.warning("%s: dropped %d cut line(s) (line %s), left by a run stopped mid-write",
                        path, len(bad), ", ".join(map(str, bad)))
    return kept


def checkpoint_bytes(tree: Any) -> int:
    """The bytes of the arrays a checkpoint of `tree` holds (its files are about this size)."""
    return int(sum(getattr(x, "nbytes", 0) for x in jax.tree_util.tree_leaves(tree)))


def _existing(path: str) -> str:
    """path, or its nearest folder that exists (the one a write there would create under)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_writable(folder: str) -> None:
    """NotWritable (one line) unless a file can be created in folder, or in the nearest existing
    folder above it when it does not exist yet. A real probe: permission bits say nothing for root,
    a read-only mount or a full quota."""
    at = _existing(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=at)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise DiskFull(f"disk full at {at} ({e.strerror})") from e
        raise NotWritable(f"cannot write in {at} ({e.strerror}); fix its permissions or use "
                          "another --workdir") from e


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def check_free_space(folder: str, per_checkpoint: int, kept: int) -> None:
    """DiskFull (one line, with the figures) unless folder's disk has room for the checkpoints kept
    plus the one being written, less those already there (a resumed run reuses their room)."""
    present = 0
    if os.path.isdir(folder):
        present = sum(1 for name in os.listdir(folder) if name.isdigit())
    needed = int(per_checkpoint * 1.1) * max(1, kept + 1 - present)
    free = shutil.disk_usage(_existing(folder)).free
    if free < needed:
        raise DiskFull(f"not enough free disk for {folder}: {kept} checkpoints kept plus one being "
                       f"written, about {_mb(per_checkpoint)} each, need {_mb(needed)} more, "
                       f"{_mb(free)} free")


def check_batch_split(num_devices: int, **batch_sizes: int) -> None:
    """ValueError unless every batch splits evenly over the devices (each device takes a slice)."""
    for name, size in batch_sizes.items():
        if int(size) % num_devices:
            raise ValueError(f"config.{name}={size} does not split over {num_devices} devices: "
                             f"use a multiple of {num_devices}")


def preflight(workdir: str, checkpoint_dir: str, per_checkpoint: int, kept: int,
              num_devices: int, batch_size: int, eval_batch_size: int) -> None:
    """Everything the first save and the first step would find out late, checked before both."""
    check_batch_split(num_devices, batch_size=batch_size, eval_batch_size=eval_batch_size)
    check_writable(workdir)
    check_writable(checkpoint_dir)
    check_free_space(checkpoint_dir, per_checkpoint, kept)

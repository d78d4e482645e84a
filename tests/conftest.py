"""Fixtures the tests share, and the session's caches.

Every process of a session (pytest and the mains it starts) uses one persistent JAX compilation cache
and one synthetic-data cache in a temporary folder, so a program or a data split made once is loaded
by every later run that needs it. The tiny training config and the random splits are built by
tests/support.py (plain functions, so helpers and subprocess workers can use them too).
"""

from __future__ import annotations

import os
import subprocess
import shutil
import tempfile

import pytest

from tests.support import REPO, pretrain_cmd, random_splits

_CACHE_ROOT: str | None = None


def pytest_configure(config):
    """Points this process and every subprocess at the session's caches, before anything compiles."""
    global _CACHE_ROOT
    _CACHE_ROOT = tempfile.mkdtemp(prefix="tcdcn_jax_tests_")
    os.environ.update({
        "JAX_COMPILATION_CACHE_DIR": os.path.join(_CACHE_ROOT, "jax"),
        # Cache every program, however small or quick to compile: the tiny runs are made of them.
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        "TCDCN_CACHE_DIR": os.path.join(_CACHE_ROOT, "data"),
    })
    import jax  # the env vars are read at import; set them here too in case jax came first

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_unconfigure(config):
    if _CACHE_ROOT:
        shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def subprocess_env():
    """The environment of a main started by a test: this one (caches included), on CPU."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="session")
def splits5():
    """Random 5-point splits with every auxiliary label (128 / 40 / 40 faces)."""
    return random_splits(5, (128, 40, 40))


@pytest.fixture(scope="session")
def splits68():
    """Random 68-point splits with two extra test sets, as 300-W has (32 / 16 / 16, 8 + 8 faces)."""
    return random_splits(68, (32, 16, 16), seed=3, extra_tests=(("common", 8), ("challenging", 8)))


@pytest.fixture(scope="session")
def unbroken_run(tmp_path_factory, subprocess_env):
    """The workdir of one finished experiments.pretrain run of tests.support.RUN, never interrupted:
    the reference every killed, stopped or broken run is compared with (support.assert_same_run)."""
    workdir = tmp_path_factory.mktemp("unbroken") / "run"
    subprocess.run(pretrain_cmd(workdir), env=subprocess_env, cwd=REPO, check=True,
                   capture_output=True)
    return workdir

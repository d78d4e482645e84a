"""What the tests share as plain functions: paths, the one tiny training config, random data and params.

conftest.py turns the common ones into fixtures; helpers and subprocess workers import them directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The authors' released files (model.mat, the example image and its output), read where they are.
OFFICIAL_DIR = Path(os.environ.get("TCDCN_OFFICIAL_DIR",
                                   REPO.parent / "shared" / "reference" / "official-tcdcn"))

# The tiny training run: a few seconds once compiled. Tests override only what they are about, so
# that most runs compile the same programs (and load them from the session's compilation cache);
# a constant learning rate keeps num_steps and warmup_steps out of the compiled step.
TINY = dict(num_train=64, num_val=16, num_test=16, image_size=48, num_steps=8, batch_size=16,
            eval_every=4, log_every=4, checkpoint_every=4, eval_batch_size=16, schedule="constant",
            es_strip=2)
TASKS = ("pose", "gender", "glasses", "smile")


def tiny_config(kind: str = "pretrain", **overrides):
    """tcdcn_jax/configs/<kind>.py's get_config() shrunk to TINY, then `overrides` applied."""
    from tcdcn_jax.configs import finetune, pretrain

    config = {"pretrain": pretrain, "finetune": finetune}[kind].get_config()
    config.update(TINY)
    config.update(overrides)
    return config


def tiny_flags(**overrides) -> list[str]:
    """The command-line flags of a pretraining main for tiny_config(**overrides)."""
    values = {**TINY, **overrides}
    return ["--config=tcdcn_jax/configs/pretrain.py",
            *(f"--config.{k}={v}" for k, v in values.items())]


def random_dataset(n: int, num_landmarks: int = 5, seed: int = 0):
    """n random 48 x 48 photos (the tiny synthetic photos' size, so that training on them compiles
    the same programs) with one fixed box, random points inside it and random labels for every task
    (and 'occluded' on every third face): numbers to train on, not faces."""
    from tcdcn_jax.data.pipeline import ArrayDataset

    rng = np.random.default_rng(seed)
    box = np.tile(np.array([8, 8, 32, 32], np.float32), (n, 1))
    lm = box[:, None, :2] + rng.uniform(0.2, 0.8, (n, num_landmarks, 2)).astype(np.float32) * 32
    arrays = dict(image=rng.integers(0, 255, (n, 48, 48), dtype=np.uint8), box=box, landmarks=lm,
                  occluded=(np.arange(n) % 3 == 0).astype(np.int32))
    for task, classes in zip(TASKS, (5, 2, 2, 2)):
        arrays[task] = rng.integers(0, classes, n).astype(np.int32)
    return ArrayDataset(arrays)


def random_splits(num_landmarks: int, sizes=(32, 16, 16), seed: int = 0, extra_tests=()):
    """Splits of random_dataset: train, validation and test (seeds seed, seed + 1, seed + 2), then
    the (name, size) extra test sets (the seeds after those)."""
    from tcdcn_jax.data.sources import Splits

    parts = [random_dataset(n, num_landmarks, seed + i) for i, n in enumerate(sizes)]
    extra = {name: random_dataset(n, num_landmarks, seed + 3 + i)
             for i, (name, n) in enumerate(extra_tests)}
    return Splits(*parts, num_landmarks=num_landmarks, extra_tests=extra)


def random_params(model, seed: int = 0) -> dict:
    """Params for `model` drawn in numpy on its eval_shape (no init compile: it costs seconds here),
    scaled like a fan-in init so that outputs stay finite and vary."""
    import jax

    from tcdcn_jax.model import build

    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: rng.normal(0, 1 / np.sqrt(max(1, np.prod(s.shape[:-1]))), s.shape)
        .astype(np.float32), build.param_shapes(model))


def assert_drawn_png(path, min_side: int = 200) -> None:
    """`path` is a PNG at least min_side px on each side with something drawn on it (more than one
    colour), which an empty or failed figure is not."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG", (path, im.format)
        assert min(im.size) >= min_side, (path, im.size)
        pixels = np.asarray(im.convert("L"))
    assert np.ptp(pixels) > 0, f"{path} is one flat colour"


# A pretraining run long enough to checkpoint, evaluate and resume part-way: the runs that a test
# kills, stops or breaks and then compares with an unbroken one. The tiny config's constant learning
# rate keeps num_steps out of the compiled step, so every process runs the same cached programs.
RUN = dict(num_steps=40, eval_every=10, log_every=10, checkpoint_every=5)


def pretrain_cmd(workdir, **overrides) -> list[str]:
    """The command line of experiments.pretrain on tiny_flags(**RUN, **overrides) in workdir."""
    import sys

    return [sys.executable, "-m", "experiments.pretrain", f"--workdir={workdir}",
            *tiny_flags(**{**RUN, **overrides})]


def wait_for(predicate, proc, timeout: float = 600) -> None:
    """Polls predicate() until it holds; fails with the process's output if it ends first."""
    import time

    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"run ended (rc {proc.returncode}) before the condition:\n{out}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def steps_saved(workdir) -> list[int]:
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def assert_same_run(unbroken, resumed, steps=(10, 20, 30, 40)) -> None:
    """Two finished workdirs of the RUN config hold the same run, to the last bit: test figures,
    task stops, final params, metrics.jsonl (one record per evaluation, none twice)."""
    import json

    import jax

    from tcdcn_jax.train import checkpoints

    a = json.loads((Path(unbroken) / "summary.json").read_text())
    b = json.loads((Path(resumed) / "summary.json").read_text())
    assert a["steps"] == b["steps"] == steps[-1]
    assert a["test"] == b["test"] and a["task_stopped_at"] == b["task_stopped_at"]
    _, pa = checkpoints.load_params(str(unbroken))
    _, pb = checkpoints.load_params(str(resumed))
    jax.tree_util.tree_map(np.testing.assert_array_equal, pa, pb)
    records = [json.loads(l) for l in (Path(resumed) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(steps), "a resumed run must not duplicate records"
    # Every logged figure matches, except the period's mean landmark training loss, which after a
    # resume part-way through a period averages the steps since the resume (logged, not state).
    expected = [json.loads(l) for l in (Path(unbroken) / "metrics.jsonl").read_text().splitlines()]
    for r in records + expected:
        r["train_loss"].pop("landmarks")
    assert records == expected

"""The training benchmark runs and prints figures that agree with each other (no timing is asserted)."""

import json
import subprocess
import sys

import pytest

from tests.support import REPO, tiny_flags


def test_benchmark_train_prints_consistent_figures(subprocess_env):
    out = subprocess.run(
        # The tiny config: the train step other tests compiled is in the session's cache.
        [sys.executable, "-m", "experiments.benchmark_train", "--seconds=0.3", "--train_faces=64",
         *tiny_flags()],
        env=subprocess_env, cwd=REPO, check=True, capture_output=True, text=True)
    f = json.loads(out.stdout.strip().splitlines()[-1])
    assert (f["devices"], f["trunk"], f["batch_size"]) == ("1 x cpu", "eccv", 16)
    # The ECCV trunk with its four auxiliary heads: 3,971,188 multiply-adds per 40x40 face.
    assert f["forward_mflops_per_image"] == 7.94
    # The rates are measured; how they relate is not.
    assert f["steps_per_s"] > 0 and f["sgemm_gflops"] > 0 and f["pipeline_images_per_s"] > 0
    assert f["images_per_s"] == pytest.approx(16 * f["steps_per_s"], rel=1e-3, abs=0.2)
    train_gflops = 3 * 7.94e6 * f["images_per_s"] / 1e9  # forward + backward ~ 3 forward passes
    assert f["train_gflops"] == pytest.approx(train_gflops, rel=1e-2, abs=0.01)
    assert f["flop_ratio"] == pytest.approx(f["train_gflops"] / f["sgemm_gflops"], abs=2e-3)
    assert f["xla_forward_mflops_per_image"] > 0

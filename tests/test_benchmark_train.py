"""The training benchmark runs and prints the figures the README quotes (no timing is asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO as ROOT


def test_benchmark_train_prints_its_figures(tmp_path):
    env = dict(os.environ, TCDCN_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark_train", "--seconds=0.3",
         "--config.batch_size=16"], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("steps_per_s", "images_per_s", "sgemm_gflops", "flop_ratio",
                "pipeline_images_per_s"):
        assert figures[key] > 0, key
    assert figures["batch_size"] == 16
    # The ECCV trunk with its four auxiliary heads: 3,971,188 multiply-adds per 40x40 face.
    assert figures["forward_mflops_per_image"] == 7.94
    assert figures["xla_forward_mflops_per_image"] > 0

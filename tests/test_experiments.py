"""The training mains: every one takes the same flags (the distributed ones included), and an
unknown --config.field ends in one line and exit 2. One fresh process imports all of them. (The
faults a run meets, and their lines: tests/train/test_workdir_faults.py.)"""

import json
import subprocess
import sys

from experiments import common
from tests.support import REPO

MAINS = ("pretrain", "finetune", "transfer_study", "ablate")
COMMON = {"config", "workdir", "allow_config_change", "verbose", "coordinator_address",
          "num_processes", "process_id"}

SCRIPT = r"""
import importlib, json, sys
from absl import flags
out = {}
for name in sys.argv[1:]:
    module = importlib.import_module(f"experiments.{name}")
    out[name] = sorted(f.name for f in flags.FLAGS.get_key_flags_for_module(module))
    for flag in out[name]:
        delattr(flags.FLAGS, flag)  # so that the next main can define its own
sys.argv = ["pretrain", "--config.augment.nope=1"]
del sys.modules["experiments.pretrain"]
try:
    importlib.import_module("experiments.pretrain")
except SystemExit as e:
    out["unknown_field"] = str(e.code)
print(json.dumps(out))
"""


def test_training_mains_take_the_same_flags_and_name_an_unknown_field(subprocess_env):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *MAINS], env=subprocess_env, cwd=REPO,
                          check=True, capture_output=True, text=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in MAINS:
        assert COMMON <= set(out[name]), (name, out[name])
    assert set(out["ablate"]) - COMMON == {"variants", "seeds", "quick", "compile_cache"}
    assert out["unknown_field"] == str(common.USAGE) == "2"
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: no such config field 'nope' (see tcdcn_jax/configs/pretrain.py for the fields)")

"""Cost of TCDCN-Averaged vs one pass: `python -m experiments.benchmark_averaging [--workdir=W]`.

Prints JSON: seconds per call (crop + network, jitted, host-synchronised) of one pass, of Averaged
with shared convolutions, and of Averaged as one full pass per translation, at each batch size, with
the ratios to one pass. Each is the best of `repeats` rounds in which the three alternate (as
benchmark_inference times): on a shared machine a median swung the batch-256 ratio from 1.9 to 3.6
between identical runs. The goal for the shared version is <= 3x one pass. All three run a large
batch in micro-batches (averaging.MICROBATCH faces for Averaged, MICROBATCH_ONE_WINDOW for one pass).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.benchmark_inference import best_seconds
from tcdcn_jax.model import averaging
from tcdcn_jax.train import checkpoints
from tcdcn_jax.model import networks

_WORKDIR = flags.DEFINE_string("workdir", "", "Model to time ('' = a fresh 68-point report model).")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1", "256"], "Batch sizes to time.")
_STEP = flags.DEFINE_integer("step_px", 2, "Translation grid spacing, crop pixels.")
_RADIUS = flags.DEFINE_integer("radius", 2, "Translation grid radius (corners dropped).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed rounds per batch size (a quarter, at least "
                                 "3, from batch 64 up), after one warm-up.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _WORKDIR.value:
        model, params, _ = checkpoints.load_model(_WORKDIR.value)
    else:
        model = networks.make_model(68, (), "report", "relu")
        params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 60, 60, 1)))["params"]
    params = jax.device_put(params)
    offsets = averaging.grid_offsets(_STEP.value, _RADIUS.value)
    single_offsets = np.zeros((1, 2), np.int32)
    fns = {
        "one_pass": (single_offsets, "passes"),
        "averaged_shared": (offsets, "auto"),
        "averaged_full_passes": (offsets, "passes"),
    }
    jitted = {name: jax.jit(lambda p, i, b, o=o, m=m: averaging.averaged_landmarks(model, p, i, b, o, m)[0])
              for name, (o, m) in fns.items()}
    rng = np.random.default_rng(0)
    out = {"device": jax.devices()[0].device_kind, "trunk": model.trunk,
           "translations": int(len(offsets)),
           "microbatch": {"averaged": averaging.MICROBATCH,
                          "one_pass": averaging.MICROBATCH_ONE_WINDOW},
           "sharing": (averaging.sharing_cost(offsets) if networks.shares_convolutions(model.trunk)
                       else "none (passes)"),
           "seconds": {}, "ratio_to_one_pass": {}}
    for b in (int(x) for x in _BATCHES.value):
        image = jnp.asarray(rng.integers(0, 255, (b, 96, 96)).astype(np.uint8))
        box = jnp.asarray(np.tile(np.array([[18.0, 20.0, 56.0, 58.0]], np.float32), (b, 1)))
        repeats = _REPEATS.value if b < 64 else max(3, _REPEATS.value // 4)
        best = best_seconds(*(lambda fn=fn: jax.block_until_ready(fn(params, image, box))
                              for fn in jitted.values()), repeats=repeats)
        secs = dict(zip(jitted, best))
        out["seconds"][f"batch_{b}"] = secs
        out["ratio_to_one_pass"][f"batch_{b}"] = {
            name: round(s / secs["one_pass"], 2) for name, s in secs.items() if name != "one_pass"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    app.run(main)

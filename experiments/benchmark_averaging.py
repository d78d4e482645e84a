"""Cost of TCDCN-Averaged vs one pass: `python -m experiments.benchmark_averaging [--workdir=W]`.

Prints JSON: median seconds per call (crop + network, jitted, host-synchronised) of one pass, of
Averaged with shared convolutions, and of Averaged as one full pass per translation, at each batch size,
with the ratios to one pass. The goal for the shared version is <= 3x one pass.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from tcdcn_jax import averaging, checkpointing, models

_WORKDIR = flags.DEFINE_string("workdir", "", "Model to time ('' = a fresh 68-point report model).")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1", "256"], "Batch sizes to time.")
_STEP = flags.DEFINE_integer("step_px", 2, "Translation grid spacing, crop pixels.")
_RADIUS = flags.DEFINE_integer("radius", 2, "Translation grid radius (corners dropped).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per setting (after one warm-up).")


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _WORKDIR.value:
        model, params, _ = checkpointing.load_model(_WORKDIR.value)
    else:
        model = models.make_model(68, (), "report", "relu")
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
           "sharing": averaging.sharing_cost(offsets) if model.trunk == "report" else "none (passes)",
           "seconds": {}, "ratio_to_one_pass": {}}
    for b in (int(x) for x in _BATCHES.value):
        image = jnp.asarray(rng.integers(0, 255, (b, 96, 96)).astype(np.uint8))
        box = jnp.asarray(np.tile(np.array([[18.0, 20.0, 56.0, 58.0]], np.float32), (b, 1)))
        repeats = _REPEATS.value if b < 64 else max(3, _REPEATS.value // 4)
        secs = {name: _time(fn, params, image, box, repeats=repeats) for name, fn in jitted.items()}
        out["seconds"][f"batch_{b}"] = secs
        out["ratio_to_one_pass"][f"batch_{b}"] = {
            name: round(s / secs["one_pass"], 2) for name, s in secs.items() if name != "one_pass"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    app.run(main)

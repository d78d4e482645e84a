"""Training throughput: `python -m experiments.benchmark_train [--config.x=...]` prints one JSON object.

steps_per_s / images_per_s: the jitted train step at the config's batch size (data already in memory,
host batching included); sgemm_gflops: numpy float32 matmul in the same run; flop_ratio: the step's
FLOP rate (3 x the forward pass's useful FLOPs, networks.forward_flops) over sgemm_gflops; pipeline_images_per_s:
host batching + on-device crop/augmentation on their own, which must outrun the step.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from tcdcn_jax.model import networks
from tcdcn_jax.train import steps as steps_lib
from tcdcn_jax.train import setup
from tcdcn_jax.data import augment, sources
from tcdcn_jax.data.pipeline import BatchIterator

_CONFIG = config_flags.DEFINE_config_file("config", "tcdcn_jax/configs/pretrain.py", "Config.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Time budget of each timed loop.")
_TRAIN_FACES = flags.DEFINE_integer("train_faces", 2048, "Synthetic training faces rendered (at "
                                    "least 4 batches); the timed steps cycle through them.")


def sgemm_gflops(n: int = 1024, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _loop(fn, seconds: float) -> tuple[int, float]:
    """Calls fn(i) until `seconds` pass; returns (calls, elapsed)."""
    t0, i = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn(i)
        i += 1
    return i, time.perf_counter() - t0


def main(argv):
    del argv
    c = _CONFIG.value
    c.num_train, c.num_val, c.num_test = max(4 * c.batch_size, _TRAIN_FACES.value), 64, 64
    splits = sources.load(c)
    model, step_cfg, state = setup.build(c, splits)
    runner = steps_lib.Steps(step_cfg, steps_lib.make_mesh())
    state = runner.put_state(state)
    it = BatchIterator(splits.train, c.batch_size, c.seed)

    def host_batch(i):
        return runner.put_batch(it.batch_at(i))

    holder = {"state": state}

    def train_once(i):
        holder["state"], m = runner.train(holder["state"], host_batch(i))
        return m

    jax.block_until_ready(train_once(0))  # compile
    n, dt = _loop(lambda i: train_once(i), _SECONDS.value)
    jax.block_until_ready(holder["state"].params)
    dt = max(dt, 1e-9)
    steps_per_s = n / dt

    prep = jax.jit(lambda key, b: augment.prepare_batch(key, b, step_cfg.input_size,
                                                        step_cfg.augment, step_cfg.flip_perm))
    key = jax.random.PRNGKey(0)
    jax.block_until_ready(prep(key, host_batch(0)))
    pn, pdt = _loop(lambda i: jax.block_until_ready(prep(key, host_batch(i))), _SECONDS.value / 2)

    size = step_cfg.input_size
    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x))
    x = jnp.zeros((c.batch_size, size, size, 1), jnp.float32)
    cost = fwd.lower(holder["state"].params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops_per_image = float(cost["flops"]) / c.batch_size  # also counts layout work
    fwd_flops_per_image = networks.forward_flops(model)
    gemm = sgemm_gflops()
    achieved = 3 * fwd_flops_per_image * steps_per_s * c.batch_size / 1e9
    print(json.dumps({
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "trunk": c.trunk, "batch_size": c.batch_size,
        "steps_per_s": round(steps_per_s, 2),
        "images_per_s": round(steps_per_s * c.batch_size, 1),
        "forward_mflops_per_image": round(fwd_flops_per_image / 1e6, 2),
        "xla_forward_mflops_per_image": round(xla_flops_per_image / 1e6, 2),
        "train_gflops": round(achieved, 2),
        "sgemm_gflops": round(gemm, 1),
        "flop_ratio": round(achieved / gemm, 3),
        "pipeline_images_per_s": round(pn * c.batch_size / max(pdt, 1e-9), 1),
    }))


if __name__ == "__main__":
    app.run(main)

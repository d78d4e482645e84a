"""Embedded synthetic face world: grey photos of posed 3D faces with 68 iBUG landmarks and auxiliary labels.

Why: no dataset can be downloaded here, yet multi-task learning and task-wise early stopping must mean
something. So the auxiliary labels act on the landmark geometry as on real faces: yaw moves every point
(far-side jaw points slide onto the visible cheek outline, the far eye hides behind the nose), smiling widens
the mouth and lifts its corners, glasses cover the eyes, gender changes jaw, brows, hair and beard.

This module owns the dataset API (generate, split seeds, the on-disk cache, the sample sheet and its CLI);
synthetic_geometry owns the faces' shape, pose and landmarks, synthetic_scene builds every drawn
shape around them, synthetic_render turns those into pixels.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import pathlib
import sys
import tempfile
from typing import Mapping, Sequence

import numpy as np

from tcdcn_jax.data.synthetic_geometry import (JAW_PHI_DEG, POSE_PRIOR, POSE_YAW_DEG, YAW_JITTER_DEG,
                                               landmarks5, sample_attributes)
from tcdcn_jax.data.synthetic_render import render_faces

__all__ = ["GENERATOR_VERSION", "CHUNK_SIZE", "POSE_YAW_DEG", "POSE_PRIOR", "YAW_JITTER_DEG", "JAW_PHI_DEG",
           "SPLITS", "DEFAULT_CACHE_DIR", "ARRAY_KEYS", "generate", "split_seed", "cache_path", "load_split",
           "save_sheet", "main"]

# Bump whenever a change alters the generated arrays: it keys the on-disk cache.
GENERATOR_VERSION = 1
CHUNK_SIZE = 256
SPLITS = ("train", "validation", "test")
DEFAULT_CACHE_DIR = "~/.cache/tcdcn_jax/synthetic"
ARRAY_KEYS = ("image", "box", "landmarks68", "landmarks5", "pose", "gender", "smile", "glasses",
              "yaw", "pitch", "roll", "occluded")


def _generate_chunk(seed_seq: np.random.SeedSequence, b: int, image_size: int,
                    ss: int) -> dict[str, np.ndarray]:
    """Generates one chunk of `b` faces from its own seed sequence (so workers do not change results)."""
    rng = np.random.default_rng(seed_seq)
    a = sample_attributes(rng, b, image_size)
    image, lm = render_faces(a, rng, image_size, ss)
    lo, hi = lm.min(1), lm.max(1)
    return {
        "image": image,
        "box": np.concatenate([lo, hi - lo], 1).astype(np.float32),
        "landmarks68": lm.astype(np.float32),
        "landmarks5": landmarks5(lm).astype(np.float32),
        "pose": a["pose"], "gender": a["gender"], "smile": a["smile"], "glasses": a["glasses"],
        "yaw": a["yaw"].astype(np.float32), "pitch": a["pitch"], "roll": a["roll"],
        "occluded": a["occluded"],
    }


def _chunk_job(args: tuple[int, int, int, int, int]) -> dict[str, np.ndarray]:
    seed, index, b, image_size, ss = args
    return _generate_chunk(np.random.SeedSequence(seed, spawn_key=(index,)), b, image_size, ss)


# ----------------------------------------------------------------------------------------------- API


def generate(n: int, seed: int, image_size: int = 96, num_workers: int | None = None,
             chunk_size: int = CHUNK_SIZE, supersample: int = 4) -> dict[str, np.ndarray]:
    """Generates `n` synthetic faces; same (n, seed, image_size, chunk_size, supersample) -> same arrays.

    Returns numpy arrays: image (n, H, W) uint8; box (n, 4) float32 left, top, width, height (tight box of
    the 68 points); landmarks68 (n, 68, 2) and landmarks5 (n, 5, 2) float32 pixel (x, y); pose (n,) int32
    0..4; gender, smile, glasses, occluded (n,) int32 0/1; yaw, pitch, roll (n,) float32 degrees.
    Chunk c is drawn from SeedSequence(seed, spawn_key=(c,)), so the worker count never changes the result.
    """
    if n < 0 or seed < 0:
        raise ValueError(f"n and seed must be non-negative, got n={n}, seed={seed}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if chunk_size < 1 or supersample < 1:
        raise ValueError(f"chunk_size and supersample must be positive, got {chunk_size}, {supersample}")
    jobs = [(seed, c, min(chunk_size, n - c * chunk_size), image_size, supersample)
            for c in range(-(-n // chunk_size))]
    workers = min(os.cpu_count() or 1, len(jobs)) if num_workers is None else num_workers
    if workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {workers}")
    if workers == 1 or len(jobs) <= 1:
        parts = [_chunk_job(j) for j in jobs]
    else:
        # fork is unsafe once JAX's threads exist; spawn then needs the caller's `if __name__ == "__main__"`.
        ctx = multiprocessing.get_context("spawn" if "jax" in sys.modules else "fork")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = list(pool.map(_chunk_job, jobs))
    if not parts:
        empty = _chunk_job((seed, 0, 1, image_size, supersample))
        return {k: v[:0] for k, v in empty.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in ARRAY_KEYS}


def split_seed(base_seed: int, split: str) -> int:
    """Seed of a split: 3 * base_seed + {train: 0, validation: 1, test: 2}.

    The map (base_seed, split) -> seed is one-to-one, so splits never share a seed, for any base seed.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if base_seed < 0:
        raise ValueError(f"base_seed must be non-negative, got {base_seed}")
    return 3 * int(base_seed) + SPLITS.index(split)


def cache_path(seed: int, n: int, image_size: int, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where a generated set is cached: keyed by seed, n, image size and GENERATOR_VERSION."""
    root = cache_dir or os.environ.get("TCDCN_CACHE_DIR") or DEFAULT_CACHE_DIR
    name = f"synthetic-v{GENERATOR_VERSION}-seed{seed}-n{n}-size{image_size}.npz"
    return pathlib.Path(root).expanduser() / name


def load_split(split: str, n: int, base_seed: int = 0, image_size: int = 96,
               cache_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The `n`-face synthetic split, read from the cache or generated and cached (atomic rename)."""
    seed = split_seed(base_seed, split)
    path = cache_path(seed, n, image_size, cache_dir)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in ARRAY_KEYS}
    data = generate(n, seed, image_size=image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return data


# ----------------------------------------------------------------------------------------------- sheet


def _title(d: Mapping[str, np.ndarray], i: int) -> str:
    """Label line like '+30 M S G' (pose degrees, M/F, S smiling, G glasses, O occluded)."""
    parts = [f"{int(POSE_YAW_DEG[d['pose'][i]]):+d}", "M" if d["gender"][i] else "F"]
    parts += [t for t, k in (("S", "smile"), ("G", "glasses"), ("O", "occluded")) if d[k][i]]
    return " ".join(parts)


def save_sheet(data: Mapping[str, np.ndarray], out: str | os.PathLike, cols: int = 6) -> None:
    """Draws a grid of faces with the 68 points, the 5 points, the box and the labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(data["image"])
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(data["image"][i], cmap="gray", vmin=0, vmax=255)
        lm, l5, (x, y, w, h) = data["landmarks68"][i], data["landmarks5"][i], data["box"][i]
        ax.scatter(lm[:, 0], lm[:, 1], s=1.5, c="cyan", linewidths=0)
        ax.scatter(l5[:, 0], l5[:, 1], s=5, c="red", linewidths=0)
        ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), w + 1, h + 1, fill=False, ec="yellow", lw=0.6))
        ax.set_title(_title(data, i), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: python -m tcdcn_jax.data.synthetic --out sheet.png [--n 24 --seed 0 --image_size 96]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG path of the sample sheet")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=96)
    args = parser.parse_args(argv)
    save_sheet(generate(args.n, args.seed, image_size=args.image_size, num_workers=1), args.out)


if __name__ == "__main__":
    main()

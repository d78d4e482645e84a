"""Host-side batching of in-memory datasets: shuffled training batches, padded evaluation batches.

Datasets are dicts of equally long numpy arrays ('image' N x H x W, 'box' N x 4, 'landmarks'
N x K x 2, plus per-face labels). Batches are plain dicts of numpy arrays with the same keys;
augmentation and cropping happen later, on device (`tcdcn_jax.data.augment.prepare_batch`).

Training order is a pure function of (seed, step) (`BatchIterator.batch_at`), so a run resumed at
step s sees exactly the batches it would have seen, with no iterator state in the checkpoint.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

REQUIRED_KEYS = ("image", "box", "landmarks")
# Key eval_batches adds: True for real faces, False for the padding of the last batch.
MASK_KEY = "mask"

Batch = dict[str, np.ndarray]


class ArrayDataset:
    """A dict of equally long numpy arrays, one row per face."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        missing = [k for k in REQUIRED_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"dataset lacks required arrays {missing}; it has {sorted(arrays)}")
        if MASK_KEY in arrays:
            raise ValueError(f"{MASK_KEY!r} is reserved for eval_batches' padding mask")
        self.arrays: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in arrays.items()}
        lengths = {k: (v.shape[0] if v.ndim else None) for k, v in self.arrays.items()}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise ValueError(f"dataset arrays must share their first dimension, got {lengths}")
        n = lengths["image"]
        shapes = {k: self.arrays[k].shape for k in REQUIRED_KEYS}
        if len(shapes["image"]) != 3:
            raise ValueError(f"'image' must be N x H x W, got {shapes['image']}")
        if shapes["box"] != (n, 4):
            raise ValueError(f"'box' must be N x 4 (left, top, width, height), got {shapes['box']}")
        if len(shapes["landmarks"]) != 3 or shapes["landmarks"][2] != 2:
            raise ValueError(f"'landmarks' must be N x K x 2, got {shapes['landmarks']}")

    def __len__(self) -> int:
        return self.arrays["image"].shape[0]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def keys(self) -> list[str]:
        return list(self.arrays)

    def take(self, indices: np.ndarray) -> Batch:
        """The rows `indices` of every array, as a batch dict."""
        return {k: np.take(v, indices, axis=0) for k, v in self.arrays.items()}

    def subset(self, indices: np.ndarray) -> "ArrayDataset":
        """A new dataset of the rows `indices` (e.g. a train/validation split)."""
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be 1-D integers, got {indices.dtype} {indices.shape}")
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise ValueError(f"indices out of range for a dataset of {len(self)} faces")
        return ArrayDataset(self.take(indices))


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


def epoch_batches(
    dataset: ArrayDataset, batch_size: int, rng: np.random.Generator, drop_last: bool = True
) -> Iterator[Batch]:
    """One epoch in a shuffled order drawn from `rng`; drop_last skips the short last batch."""
    _check_batch_size(batch_size)
    order = rng.permutation(len(dataset))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        yield dataset.take(order[start:start + batch_size])


class BatchIterator:
    """Training batches addressed by global step: the order is a pure function of (seed, step).

    Epoch e uses the permutation np.random.default_rng([seed, e]).permutation(N) and drops its
    last N % batch_size faces, so every batch has the same shape and each face it uses appears once
    per epoch (the dropped ones differ from epoch to epoch).
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, seed: int):
        _check_batch_size(batch_size)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if len(dataset) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the dataset's {len(dataset)} faces")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(dataset) // batch_size
        self._cached_epoch: int | None = None
        self._cached_order: np.ndarray | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The shuffled face order of an epoch (cached: consecutive steps share it)."""
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cached_order = rng.permutation(len(self.dataset))
            self._cached_epoch = epoch
        return self._cached_order

    def indices_at(self, step: int) -> np.ndarray:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, within = divmod(step, self.steps_per_epoch)
        start = within * self.batch_size
        return self.epoch_order(epoch)[start:start + self.batch_size]

    def batch_at(self, step: int) -> Batch:
        """The batch for global step `step`."""
        return self.dataset.take(self.indices_at(step))

    def iterate(self, start_step: int = 0) -> Iterator[Batch]:
        """Endless batches from `start_step` on (resume by passing the restored step)."""
        step = start_step
        while True:
            yield self.batch_at(step)
            step += 1


def eval_batches(dataset: ArrayDataset, batch_size: int) -> Iterator[Batch]:
    """Every face once, in order, in fixed-shape batches (one compile for the whole evaluation).

    The last batch is padded by repeating its first face; batch[MASK_KEY] (bool, batch_size) is True
    on real faces, so metrics must weight by it.
    """
    _check_batch_size(batch_size)
    n = len(dataset)
    for start in range(0, n, batch_size):
        valid = min(batch_size, n - start)
        indices = np.arange(start, start + batch_size)
        indices[valid:] = start
        batch = dataset.take(indices)
        batch[MASK_KEY] = np.arange(batch_size) < valid
        yield batch

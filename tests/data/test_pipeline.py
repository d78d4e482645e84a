"""Tests for host-side batching: restartable training order and exactly-once evaluation."""

import numpy as np
import pytest

from tcdcn_jax.data.pipeline import (MASK_KEY, ArrayDataset, BatchIterator, epoch_batches,
                                     eval_batches)


def _dataset(n: int = 23) -> ArrayDataset:
    rng = np.random.default_rng(0)
    return ArrayDataset({
        "image": rng.integers(0, 256, (n, 8, 9), dtype=np.uint8),
        "box": rng.uniform(0, 5, (n, 4)).astype(np.float32),
        "landmarks": rng.uniform(0, 8, (n, 5, 2)).astype(np.float32),
        "id": np.arange(n),  # which face a row is, to check coverage
        "pose": rng.integers(0, 5, n),
    })


def _rows_match(ds: ArrayDataset, batch: dict) -> None:
    ids = batch["id"]
    for key in ds.keys():
        np.testing.assert_array_equal(batch[key], ds[key][ids], err_msg=key)


def test_array_dataset_validation():
    ds = _dataset()
    arrays = dict(ds.arrays)
    with pytest.raises(ValueError, match="landmarks"):
        ArrayDataset({k: v for k, v in arrays.items() if k != "landmarks"})
    with pytest.raises(ValueError, match="first dimension"):
        ArrayDataset({**arrays, "pose": arrays["pose"][:-1]})
    with pytest.raises(ValueError, match="first dimension"):
        ArrayDataset({**arrays, "pose": np.array(3)})
    with pytest.raises(ValueError, match="'box'"):
        ArrayDataset({**arrays, "box": arrays["box"][:, :3]})
    with pytest.raises(ValueError, match="'image'"):
        ArrayDataset({**arrays, "image": arrays["image"][..., None]})
    with pytest.raises(ValueError, match="'landmarks'"):
        ArrayDataset({**arrays, "landmarks": arrays["landmarks"][..., :1]})
    with pytest.raises(ValueError, match="reserved"):
        ArrayDataset({**arrays, MASK_KEY: np.ones(len(ds), bool)})


def test_subset_and_len():
    ds = _dataset()
    assert len(ds) == 23
    sub = ds.subset(np.array([4, 0, 7]))
    assert len(sub) == 3
    np.testing.assert_array_equal(sub["id"], [4, 0, 7])
    _rows_match(ds, sub.arrays)
    with pytest.raises(ValueError, match="out of range"):
        ds.subset(np.array([23]))
    with pytest.raises(ValueError, match="integer"):
        ds.subset(np.array([0.5]))


def test_epoch_batches_shuffle_and_drop_last():
    ds = _dataset()
    batches = list(epoch_batches(ds, 5, np.random.default_rng(0)))
    assert len(batches) == 4 and all(len(b["id"]) == 5 for b in batches)
    ids = np.concatenate([b["id"] for b in batches])
    assert len(set(ids.tolist())) == 20
    assert not np.array_equal(ids, np.sort(ids))
    for b in batches:
        _rows_match(ds, b)
    full = list(epoch_batches(ds, 5, np.random.default_rng(0), drop_last=False))
    assert [len(b["id"]) for b in full] == [5, 5, 5, 5, 3]
    assert sorted(np.concatenate([b["id"] for b in full]).tolist()) == list(range(23))


def test_batch_at_is_deterministic_and_covers_each_epoch_once():
    ds = _dataset()
    it = BatchIterator(ds, batch_size=5, seed=3)
    assert it.steps_per_epoch == 4
    for epoch in range(3):
        ids = np.concatenate([it.batch_at(epoch * 4 + i)["id"] for i in range(4)])
        assert len(ids) == 20 and len(set(ids.tolist())) == 20
        expected = np.random.default_rng([3, epoch]).permutation(23)[:20]
        np.testing.assert_array_equal(ids, expected)
    # A fresh iterator (a resumed run) reproduces any step without replaying earlier ones.
    fresh = BatchIterator(ds, batch_size=5, seed=3)
    for step in (9, 2, 9, 0):
        np.testing.assert_array_equal(fresh.batch_at(step)["id"], it.batch_at(step)["id"])
        _rows_match(ds, fresh.batch_at(step))
    # Epochs differ from each other, and seeds from each other.
    assert not np.array_equal(it.indices_at(0), it.indices_at(4))
    assert not np.array_equal(it.indices_at(0), BatchIterator(ds, 5, seed=4).indices_at(0))


def test_iterate_resumes_at_a_step():
    ds = _dataset()
    it = BatchIterator(ds, batch_size=5, seed=0)
    stream = it.iterate(start_step=6)
    for step in range(6, 12):
        np.testing.assert_array_equal(next(stream)["id"], it.batch_at(step)["id"])


def test_batch_iterator_validation():
    ds = _dataset()
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(ds, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="exceeds"):
        BatchIterator(ds, batch_size=24, seed=0)
    with pytest.raises(ValueError, match="seed"):
        BatchIterator(ds, batch_size=4, seed=-1)
    with pytest.raises(ValueError, match="step"):
        BatchIterator(ds, batch_size=4, seed=0).batch_at(-1)


@pytest.mark.parametrize("n, batch_size", [(23, 5), (20, 5), (3, 8), (1, 1)])
def test_eval_batches_cover_every_face_once(n, batch_size):
    ds = _dataset(n)
    batches = list(eval_batches(ds, batch_size))
    assert len(batches) == -(-n // batch_size)
    for b in batches:
        assert set(b) == set(ds.keys()) | {MASK_KEY}
        assert all(v.shape[0] == batch_size for v in b.values())
        assert b[MASK_KEY].dtype == bool
        _rows_match(ds, {k: v for k, v in b.items() if k != MASK_KEY})
    valid_ids = np.concatenate([b["id"][b[MASK_KEY]] for b in batches])
    np.testing.assert_array_equal(valid_ids, np.arange(n))
    masks = np.concatenate([b[MASK_KEY] for b in batches])
    # Only the last batch carries padding, at its end.
    np.testing.assert_array_equal(masks, np.arange(len(masks)) < n)

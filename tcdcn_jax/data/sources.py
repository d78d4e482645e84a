"""Dataset selection by config: every source ends as in-memory ArrayDatasets per split."""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np
from absl import logging

from tcdcn_jax import geometry
from tcdcn_jax.data.pipeline import ArrayDataset


@dataclasses.dataclass
class Splits:
    train: ArrayDataset
    validation: ArrayDataset
    test: ArrayDataset
    num_landmarks: int
    extra_tests: Mapping[str, ArrayDataset] = dataclasses.field(default_factory=dict)


def _synthetic(config) -> Splits:
    from tcdcn_jax.data import synthetic

    k = int(config.num_landmarks)
    if k not in (5, 68):
        raise ValueError(f"the synthetic world has 5- or 68-point landmarks, not {k}")
    sizes = {"train": config.num_train, "validation": config.num_val, "test": config.num_test}
    out = {}
    for split, n in sizes.items():
        t0 = time.time()
        arrays = synthetic.load_split(split, int(n), base_seed=int(config.data_seed),
                                      image_size=int(config.image_size),
                                      cache_dir=config.data_dir or None)
        arrays = dict(arrays)
        arrays["landmarks"] = arrays.pop(f"landmarks{k}")
        arrays.pop(f"landmarks{68 if k == 5 else 5}", None)
        out[split] = ArrayDataset(arrays)
        logging.info("synthetic %s: %d faces in %.1f s", split, len(out[split]), time.time() - t0)
    return Splits(out["train"], out["validation"], out["test"], num_landmarks=k)


def _real(module: str, function: str = "load"):
    """A real-dataset loader, imported on first use (TFDS only loads when a real source is picked)."""

    def load_real(config) -> Splits:
        import importlib

        return getattr(importlib.import_module(f"tcdcn_jax.data.{module}"), function)(config)

    return load_real


# Real datasets: config.data_dir is the dataset folder in its published layout (docs/real_datasets.md).
_SOURCES = {
    "synthetic": _synthetic,
    "mtfl": _real("mtfl"),
    "celeba": _real("celeba", "load_celeba"),
    "mafl": _real("celeba", "load_mafl"),
    "aflw": _real("aflw"),
    "300w": _real("ibug300w"),
    "wflw": _real("wflw"),
}


def load(config) -> Splits:
    """Loads the splits the config names (`config.dataset`)."""
    if config.dataset not in _SOURCES:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {sorted(_SOURCES)}")
    return _SOURCES[config.dataset](config)


def mean_shape(dataset: ArrayDataset) -> np.ndarray:
    """Mean box-normalised training shape (K, 2): the baseline every model must beat."""
    box = dataset.arrays["box"].astype(np.float64)
    lm = dataset.arrays["landmarks"].astype(np.float64)
    return geometry.to_box(lm, box).mean(axis=0)

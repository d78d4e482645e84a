"""TCDCN-Averaged in the Predictor: the mean of the points predicted from translated crops.

`make_runner(network)` gives a runner like the network's own, but on the inputs `crops.inputs`
makes for translations: our preprocessing's crops grown by the largest offset (N x L x L x 1), or
the authors' rule's windows (N x T x S x S x 1, each standardised alone, as a single input is). Its
landmarks are the mean over the T translations, shifted back into the box's frame; the auxiliary
probabilities are those of the untranslated crop (offset (0, 0), the first).

On the JAX backend a model whose convolutions are shared (the report trunk) runs them once for all
translations (model/averaging.py: a fraction of T passes); every other case runs the network on each
window, through whatever backend runs it.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from tcdcn_jax import geometry
from tcdcn_jax.model import averaging, networks
from tcdcn_jax.photos import backends, weights


class AveragedRunner:
    """inputs -> {'landmarks': mean lm_NxKx2 (u, v) in the box frame, task: probs_NxC}."""

    def __init__(self, network: weights.Network, offsets_Tx2: np.ndarray | None = None,
                 batch_size: int = 256):
        offsets = averaging.grid_offsets() if offsets_Tx2 is None else np.asarray(offsets_Tx2)
        if offsets.ndim != 2 or offsets.shape[1] != 2 or np.any(offsets[0] != 0):
            raise ValueError("offsets must be (T, 2) with the untranslated (0, 0) first")
        self.network = network
        self.batch_size = batch_size  # windows per network call
        self.offsets_Tx2 = offsets.astype(np.int32)
        self.margin = int(np.abs(offsets).max())
        self._shared = None
        model = network.model
        if (network.backend == "jax" and network.preprocessing == "standard" and model is not None
                and networks.shares_convolutions(model.trunk)):
            params, margin = network.params, self.margin
            self._shared = jax.jit(lambda big: averaging.in_microbatches(
                lambda x: averaging.window_landmarks(model, params, x, offsets, margin, "shared"),
                big, averaging.MICROBATCH))

    def __call__(self, inputs: np.ndarray) -> dict[str, Any]:
        size, n, t = self.network.input_size, len(inputs), len(self.offsets_Tx2)
        if self.network.preprocessing == "official":
            windows = np.asarray(inputs, np.float32)
        elif self._shared is not None:
            m = self.margin
            out = self.network.run(np.ascontiguousarray(inputs[:, m:m + size, m:m + size]))
            out = {k: np.asarray(v) for k, v in out.items()}
            out["landmarks"] = self._mean(np.asarray(self._shared(inputs)))
            return out
        else:
            windows = np.asarray(averaging.windows(inputs, self.offsets_Tx2, size, self.margin))
        out = backends.batched(self.network.run, windows.reshape((n * t, size, size, 1)),
                               self.batch_size)
        out = {k: np.asarray(v).reshape((n, t) + np.shape(v)[1:]) for k, v in out.items()}
        return {k: (self._mean(v) if k == "landmarks" else v[:, 0]) for k, v in out.items()}

    def _mean(self, lm_NxTxKx2: np.ndarray) -> np.ndarray:
        size = self.network.input_size
        return np.asarray(geometry.shift_to_box(lm_NxTxKx2, self.offsets_Tx2, size)).mean(axis=1)


def make_runner(network: weights.Network, batch_size: int = 256) -> AveragedRunner:
    """The Averaged runner of a network, on the paper's 21 translations (averaging.grid_offsets),
    running at most batch_size windows a call."""
    return AveragedRunner(network, batch_size=batch_size)

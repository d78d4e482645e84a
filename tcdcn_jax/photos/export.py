"""Weights in and out: the authors' model.mat as our workdir, and a model as serialised StableHLO.

- `import_official(model.mat, out)` writes the authors' weights as a workdir
  (`checkpoints.write_weights`: config.json, a pretrain config for the report trunk, 68 points, no
  auxiliary tasks, `preprocessing='official'`, `input_gain`; and a checkpoint of the params), so
  `checkpoints.load_model` and `Predictor.from_checkpoint` read it like any run of ours.
- `export_model(predictor, path)` serialises the network (`jax.export`, StableHLO with the weights as
  constants) for the fixed S x S input and a symbolic batch: img_BxSxSx1 float32 (preprocessed as
  `Predictor.preprocess` does) -> {'landmarks': lm_BxKx2 box-normalised, task: probs_BxC}. A JSON
  sidecar (path + '.json') records what the caller needs to preprocess and decode.
  `load_exported(path)` gives back a callable in any process with jax, without this package's models.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

FORMAT = "tcdcn_jax.export/1"


def import_official(mat_path: str | os.PathLike, out_dir: str | os.PathLike) -> str:
    """Writes the authors' 68-point model as a workdir; returns the workdir path."""
    from tcdcn_jax.configs.pretrain import get_config
    from tcdcn_jax.photos import official
    from tcdcn_jax.train import checkpoints

    params = official.load_official_params(mat_path)
    config = get_config()
    config.trunk, config.activation, config.features = "report", "relu", 0
    config.num_landmarks, config.aux_tasks = official.NUM_LANDMARKS, ""
    config.preprocessing = "official"
    config.input_gain = official.OFFICIAL_INPUT_GAIN
    config.source = os.path.abspath(os.fspath(mat_path))
    return checkpoints.write_weights(out_dir, params, config)


def export_model(predictor, path: str | os.PathLike,
                 platforms: Sequence[str] | None = None) -> dict[str, Any]:
    """Serialises predictor's network to `path` (+ a JSON sidecar); returns the sidecar dict."""
    size = predictor.input_size
    model, params = predictor.model, predictor.params

    def network(img_BxSxSx1):
        out = model.apply({"params": params}, img_BxSxSx1)
        return {k: (v if k == "landmarks" else jax.nn.softmax(v, axis=-1)) for k, v in out.items()}

    (batch,) = jax.export.symbolic_shape("b")
    arg = jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32)
    exported = jax.export.export(jax.jit(network), platforms=platforms)(arg)
    meta = {
        "format": FORMAT,
        "input_shape": ["batch", size, size, 1],
        "input_dtype": "float32",
        "preprocessing": predictor.preprocessing,
        "input_gain": predictor.input_gain,
        "num_landmarks": predictor.num_landmarks,
        "aux_tasks": {t: int(c) for t, c in (model.aux_tasks or {}).items()},
        "outputs": "landmarks: (batch, K, 2) box-normalised (u, v); task: (batch, C) probabilities",
        "platforms": list(exported.platforms),
    }
    data = exported.serialize()  # needs the flatbuffers package
    path = os.fspath(path)
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".json", "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def load_exported(path: str | os.PathLike) -> tuple[Callable[[jax.Array], dict], dict[str, Any]]:
    """(call, sidecar) of an exported model; call(img_BxSxSx1) -> the output dict."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        exported = jax.export.deserialize(bytearray(data))
    except Exception as err:  # flatbuffers raises assorted errors for foreign bytes
        raise ValueError(f"{path}: not a jax.export serialisation ({type(err).__name__})") from None
    meta = {}
    if os.path.isfile(path + ".json"):
        with open(path + ".json") as f:
            meta = json.load(f)
    return exported.call, meta

"""Weights in and out: the authors' model.mat as our workdir, and a model as serialised StableHLO.

- `import_official(model.mat, out)` writes the authors' weights as a workdir
  (`checkpoints.write_weights`: config.json, a pretrain config for the report trunk, 68 points, no
  auxiliary tasks, `preprocessing='official'`; and a checkpoint of the params), so
  `checkpoints.load_model` and `Predictor.from_path` read it like any run of ours.
- `export_model(predictor, path, format=...)` serialises the network with the weights inside, for
  the fixed S x S input and a dynamic batch: img_BxSxSx1 float32 (preprocessed as
  `Predictor.preprocess` does) -> {'landmarks': lm_BxKx2 box-normalised, task: probs_BxC}, as
  StableHLO (`jax.export`, the default: no extra package) or ONNX (the `onnx` extra; for ONNX
  Runtime, OpenVINO, browsers, phones). A JSON sidecar (path + '.json', `describe`) says how to
  preprocess and decode, step by step, for a user outside Python.
  `load_exported(path)` gives back a callable in any process with jax, without this package's models.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

FORMAT = "tcdcn_jax.export/1"
ONNX_FORMAT = "tcdcn_jax.onnx/1"
FORMATS = ("stablehlo", "onnx")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # the platforms jax.export lowers for
# How the network's input is made from a photo and a face box, per `preprocessing`.
_STANDARD_STEPS = [
    "1. grey: ITU-R 601 luma of RGB, L = (299 R + 587 G + 114 B) / 1000 rounded, uint8",
    "2. box (left, top, width, height) in pixels, tight around the face's 68 landmarks; pixel "
    "(row i, column j) has its centre at (x, y) = (j, i)",
    "3. crop: output pixel (r, c) of the S x S input samples x = left + (c + 0.5) / S * width, "
    "y = top + (r + 0.5) / S * height, bilinearly, coordinates clamped to the image",
    "4. standardise each crop: (crop - mean) / sqrt(variance + 1e-8), population variance",
    "5. lay out as (batch, S, S, 1) float32, rows first",
]
_OFFICIAL_STEPS = [
    "1. grey: MATLAB rgb2gray, 0.298936 R + 0.587043 G + 0.114021 B, halves rounded up, uint8",
    "2. square: l, t, w = the box's left, top and width rounded to whole pixels (halves up; the "
    "height is not used); crop the (w + 1) x (w + 1) square of 0-based rows t - 1 .. t + w - 1 and "
    "columns l - 1 .. l + w - 1 (MATLAB imcrop(I, [l t w w])), rows and columns outside the image "
    "repeating its edge",
    "3. resize to S x S as MATLAB imresize(crop, [S S], 'bicubic', 'Antialiasing', false): cubic "
    "a = -0.5, output pixel i (1-based) samples input i / scale + (1 - 1 / scale) / 2 "
    "(scale = S / (w + 1)), mirrored edges; rows first, then columns, rounding to uint8 (halves "
    "up) after each pass",
    "4. standardise: (x - mean(x)) / 127.5, the mean over the S x S pixels",
    "5. lay out as (batch, S, S, 1) float32, rows first",
]


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
    config.source = os.path.abspath(os.fspath(mat_path))
    return checkpoints.write_weights(out_dir, params, config)


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    """The platforms as a tuple; ValueError for an unknown or repeated one (jax.export would
    accept any name, and the file would then refuse to run)."""
    platforms = tuple(platforms)
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms or len(set(platforms)) != len(platforms):
        raise ValueError(f"platforms must be distinct names among {', '.join(PLATFORMS)}; got "
                         f"{','.join(platforms) or 'none'}")
    return platforms


def export_model(predictor, path: str | os.PathLike, platforms: Sequence[str] | None = None,
                 format: str = "stablehlo") -> dict[str, Any]:
    """Serialises predictor's network to `path` (+ a JSON sidecar); returns the sidecar dict.

    format 'stablehlo' (jax.export, for `platforms`, default cpu and cuda) or 'onnx' (opset 17,
    photos/onnx_export.py; the sidecar is also stored in the file's metadata).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    size = predictor.input_size
    model, params = predictor.network.model, predictor.network.params
    if model is None:
        raise ValueError(f"{predictor.network.source} is an exported model already; export from "
                         "the workdir or model.mat it came from")
    meta = describe(predictor)
    path = os.fspath(path)
    if format == "onnx":
        from tcdcn_jax.photos import onnx_export

        if platforms is not None:
            raise ValueError("platforms apply to the stablehlo format only")
        meta.update(format=ONNX_FORMAT, input_name=onnx_export.INPUT_NAME,
                    opset=onnx_export.OPSET)
        data = onnx_export.to_onnx(model, params, metadata=meta).SerializeToString()
    else:
        platforms = check_platforms(("cpu", "cuda") if platforms is None else platforms)

        def network(img_BxSxSx1):
            out = model.apply({"params": params}, img_BxSxSx1)
            return {k: (v if k == "landmarks" else jax.nn.softmax(v, axis=-1))
                    for k, v in out.items()}

        (batch,) = jax.export.symbolic_shape("b")
        arg = jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32)
        exported = jax.export.export(jax.jit(network), platforms=platforms)(arg)
        meta["platforms"] = list(exported.platforms)
        data = exported.serialize()  # needs the flatbuffers package
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".json", "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def describe(predictor) -> dict[str, Any]:
    """The sidecar: enough to preprocess and decode without this package, step by step."""
    from tcdcn_jax import layouts, tasks

    size = predictor.input_size
    aux = {t: int(c) for t, c in predictor.aux_tasks.items()}
    official = predictor.preprocessing == "official"
    layout = layouts.LAYOUTS.get(predictor.num_landmarks)
    return {
        "format": FORMAT,
        "input_shape": ["batch", size, size, 1],
        "input_dtype": "float32",
        "preprocessing": predictor.preprocessing,
        "num_landmarks": predictor.num_landmarks,
        "aux_tasks": aux,
        "outputs": "landmarks: (batch, K, 2) box-normalised (u, v); task: (batch, C) probabilities",
        "preprocess": _OFFICIAL_STEPS if official else _STANDARD_STEPS,
        "decode": {
            "landmarks": ("x = (l - 1) + 0.5 + u * (w + 1), y = (t - 1) + 0.5 + v * (w + 1), "
                          "with l, t, w of step 2" if official else
                          "x = left + u * width, y = top + v * height, with the box of step 2")
            + "; 0-based pixel coordinates, pixel (row i, column j) centred at (x, y) = (j, i)",
            "layout": None if layout is None else layout.name,
            "point_names": None if layout is None or layout.point_names is None
            else list(layout.point_names),
            "point_groups": None if layout is None else {g: list(i) for g, i in
                                                         layout.groups.items()},
            "classes": {t: (None if names is None else list(names)) for t, c in aux.items()
                        for names in [tasks.class_names(t, c)]},
        },
    }


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

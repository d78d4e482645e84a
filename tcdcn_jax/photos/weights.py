"""Weights in, a network out: `load(path, backend)` -> `Network`, what the Predictor runs.

`path` is one of:
- a training workdir of ours (config.json + checkpoints/), or one `tcdcn import-official` wrote;
- the authors' `model.mat` (zhzhanp/TCDCN-face-alignment), read directly;
- an ONNX file from `tcdcn export --format onnx` (its sidecar is inside the file and next to it);
- a jax.export file from `tcdcn export` (StableHLO) with its `.json` sidecar.

A `Network` holds only what prediction needs: the input side, the kind of preprocessing, the number
of landmarks, the auxiliary heads' classes and a runner (img_BxSxSx1 -> outputs, backends.py);
the flax model and params only when the weights are ours or the authors' (export and the shared-
convolution TCDCN-Averaged need them). An exported file runs without any flax model.

Near misses get one readable line naming the path (FileNotFoundError or ValueError): a folder that
holds model.mat or an exported model instead of being a workdir, a file inside a workdir, a damaged
checkpoint, a file that is none of the above. Heavy packages load only for the kind of weights
given: orbax for a workdir, scipy for model.mat, onnx / onnxruntime / openvino for their backends.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from tcdcn_jax.photos import backends

if TYPE_CHECKING:  # flax loads only for weights that hold a flax model
    from tcdcn_jax.model import networks

PREPROCESSING = ("standard", "official")
MAT_MAGIC = b"MATLAB 5.0 MAT-file"
EXPORT_FORMATS = ("tcdcn_jax.export/1", "tcdcn_jax.onnx/1")  # export.FORMAT, export.ONNX_FORMAT
WHAT_WEIGHTS_ARE = ("a workdir folder, the authors' model.mat, an ONNX file from `tcdcn export "
                    "--format onnx` or a jax.export file with its .json sidecar")


@dataclasses.dataclass(frozen=True)
class Network:
    """A model ready to run: run(img_BxSxSx1 float32) -> {'landmarks': lm_BxKx2 box-normalised
    (u, v), task: probs_BxC} (numpy), any batch size."""

    input_size: int
    preprocessing: str  # 'standard' (geometry.crop) or 'official' (the authors' rule)
    num_landmarks: int
    aux_tasks: Mapping[str, int]  # task -> number of classes, in head order
    run: backends.Runner
    backend: str
    source: str  # where the weights came from (messages, sidecars)
    model: "networks.TCDCN | None" = None  # our flax model and its params, when we have them
    params: Mapping[str, Any] | None = None


def from_model(model: "networks.TCDCN", params: Mapping[str, Any], preprocessing: str = "standard",
               backend: str = "jax", threads: int | None = None, source: str = "") -> Network:
    """A Network of a flax model and its params (checked against the model)."""
    from tcdcn_jax.model import build, networks

    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
    if preprocessing == "official" and model.trunk != "report":
        raise ValueError("official preprocessing makes 60x60 crops: it needs the report trunk")
    build.check_params(model, params)
    run = backends.make_runner(backend, model=model, params=params, threads=threads)
    return Network(networks.input_size(model.trunk), preprocessing, model.num_landmarks,
                   dict(model.aux_tasks or {}), run, backend, source, model, params)


def load(path: str | os.PathLike, backend: str | None = None, threads: int | None = None
         ) -> Network:
    """The weights at `path` (see the module docstring) on `backend` ('jax', 'onnxruntime',
    'openvino'; None: 'jax', or ONNX Runtime for an ONNX file)."""
    path = os.fspath(path)
    if backend is not None and backend not in backends.BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of "
                         f"{', '.join(backends.BACKENDS)}")
    if os.path.isdir(path):
        return _from_workdir(path, backend or "jax", threads)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or folder")
    workdir = _enclosing_workdir(path)
    if workdir is not None:
        raise ValueError(f"{path} is a file inside the workdir {workdir}: pass the workdir folder")
    kind = _file_kind(path)
    if kind == "mat":
        from tcdcn_jax.photos import official

        return from_model(official.model(), official.load_official_params(path), "official",
                          backend or "jax", threads, path)
    if kind == "onnx":
        return _from_onnx(path, backend, threads)
    if kind == "jax.export":
        return _from_jax_export(path, backend or "jax")
    raise ValueError(f"{path}: not a weights file; pass {WHAT_WEIGHTS_ARE}")


def _enclosing_workdir(path: str, levels: int = 5) -> str | None:
    """The workdir (config.json and checkpoints/) a file lies in, up to `levels` folders up (a
    checkpoint's own files sit 4 deep), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    for _ in range(levels):
        if os.path.isfile(os.path.join(folder, "config.json")) and \
                os.path.isdir(os.path.join(folder, "checkpoints")):
            return folder
        folder = os.path.dirname(folder)
    return None


def _sidecar(path: str) -> dict[str, Any] | None:
    try:
        with open(path + ".json") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") in EXPORT_FORMATS else None


def _file_kind(path: str) -> str | None:
    """'mat', 'onnx', 'jax.export' or None, by content (extensions are only a hint)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(MAT_MAGIC) or path.lower().endswith(".mat"):
        return "mat"  # a damaged .mat gets scipy's reason from the loader
    meta = _sidecar(path)
    if meta is not None:
        return "onnx" if meta["format"] == EXPORT_FORMATS[1] else "jax.export"
    if path.lower().endswith(".onnx"):
        return "onnx"
    return None


def _weights_in(folder: str) -> list[str]:
    names = sorted(os.listdir(folder))
    return [n for n in names if n.lower().endswith((".mat", ".onnx"))
            or _sidecar(os.path.join(folder, n)) is not None]


def _from_workdir(path: str, backend: str, threads: int | None) -> Network:
    if not os.path.isfile(os.path.join(path, "config.json")):
        found = _weights_in(path)
        if found:
            raise ValueError(f"{path} is not a workdir (no config.json) but holds {found[0]}: "
                             f"pass {os.path.join(path, found[0])}")
        raise ValueError(f"{path} is not a workdir (no config.json) and holds no weights file; "
                         f"pass {WHAT_WEIGHTS_ARE}")
    from tcdcn_jax.model import build
    from tcdcn_jax.train import checkpoints

    try:
        config = checkpoints.read_config(path)
    except ValueError as err:  # JSON's own error: one line naming the file
        raise ValueError(f"{os.path.join(path, 'config.json')}: not valid JSON ({err})") from None
    try:
        _, params = checkpoints.load_params(path)
    except FileNotFoundError:
        raise
    except Exception as err:  # orbax's own wording and types for a damaged checkpoint
        raise ValueError(f"{path}: its checkpoint is damaged or incomplete "
                         f"({type(err).__name__} while reading it); train again or restore the "
                         "checkpoints folder") from None
    model = build.from_params(config, params, f"in {path!r}")
    # Workdirs of `tcdcn import-official` may carry an input_gain: the authors' rule replaces it.
    return from_model(model, params, config.get("preprocessing", "standard"), backend, threads,
                      path)


def _describe(meta: dict[str, Any], path: str) -> tuple[int, str, int, dict[str, int]]:
    try:
        size = int(meta["input_shape"][1])
        aux = {str(t): int(c) for t, c in dict(meta.get("aux_tasks") or {}).items()}
        found = (size, str(meta["preprocessing"]), int(meta["num_landmarks"]), aux)
    except (KeyError, TypeError, ValueError, IndexError):
        raise ValueError(f"{path}: its sidecar lacks input_shape, preprocessing or num_landmarks"
                         ) from None
    if found[1] not in PREPROCESSING:
        raise ValueError(f"{path}: unknown preprocessing {found[1]!r} in its sidecar")
    return found


def _from_onnx(path: str, backend: str | None, threads: int | None) -> Network:
    if backend == "jax":
        raise ValueError(f"{path} is an ONNX model: run it with backend 'onnxruntime' or "
                         "'openvino'")
    if backend is None:
        import importlib.util

        backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "openvino"
    meta = _sidecar(path)
    if meta is None:  # the sidecar is also stored in the file
        from tcdcn_jax.photos import onnx_export

        meta = onnx_export.read_metadata(path)
    size, preprocessing, num_landmarks, aux = _describe(meta, path)
    run = backends.make_runner(backend, onnx_file=path, threads=threads)
    return Network(size, preprocessing, num_landmarks, aux, run, backend, path)


def _from_jax_export(path: str, backend: str) -> Network:
    if backend != "jax":
        raise ValueError(f"{path} is a jax.export (StableHLO) file: it runs on backend 'jax' only")
    import jax

    from tcdcn_jax.photos import export

    call, meta = export.load_exported(path)
    size, preprocessing, num_landmarks, aux = _describe(meta, path)
    platforms = meta.get("platforms") or []
    if platforms and jax.default_backend() not in platforms:
        raise ValueError(f"{path} was exported for {', '.join(platforms)}, not for "
                         f"{jax.default_backend()}: export it again with --platforms")
    def run(img):
        return {k: np.asarray(v) for k, v in call(np.asarray(img, np.float32)).items()}

    return Network(size, preprocessing, num_landmarks, aux, run, "jax", path)

"""One network call, three runtimes: `make_runner(backend, ...)`.

    run = backends.make_runner("onnxruntime", model=model, params=params)   # built in memory
    run = backends.make_runner("openvino", onnx_file="tcdcn68.onnx")        # or from an export
    out = run(img_BxSxSx1)      # {'landmarks': lm_BxKx2 (u, v), task: probs_BxC}, numpy float32

- 'jax': our own network (model/inference.py), params compiled in; needs model and params.
- 'onnxruntime', 'openvino': the ONNX graph of photos/onnx_export.py, from `onnx_file` (a path,
  bytes, or an onnx.ModelProto) or built from model and params. Optional extras:
  `pip install 'tcdcn_jax[onnx]'` (onnx, onnxruntime) and `'tcdcn_jax[openvino]'`.

All three take any batch size and give the same outputs (within 1e-5, tested in
tests/photos/test_backends.py).
`threads` caps the runtime's intra-op threads (None: the runtime's default, all cores).

OpenVINO's import sends an anonymous usage report (openvino.tools.ovc starts openvino_telemetry,
which forks a process to send it) unless the user opted out with OpenVINO's own command,
`opt_in_out --opt_out`. We keep that choice: a user who opted in or out gets what they chose; one
who never chose gets no report from an import made here (the import then takes ovc's own no-op
telemetry stub, the path it has for when openvino_telemetry is missing). Nothing is written to the
user's settings, and openvino_telemetry imports normally afterwards.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

if TYPE_CHECKING:  # flax loads only when a flax model is run
    from tcdcn_jax.model import networks

BACKENDS = ("jax", "onnxruntime", "openvino")
_EXTRA = {"onnxruntime": "onnx", "openvino": "openvino"}
Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def _require(module: str, backend: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"backend {backend!r} needs the {module} package: "
                          f"pip install 'tcdcn_jax[{_EXTRA[backend]}]'") from None


def onnx_bytes(onnx_file: Any = None, model: "networks.TCDCN | None" = None,
               params: Mapping[str, Any] | None = None) -> bytes:
    """The serialised ONNX model: read from a path, passed through, or built from model + params."""
    if onnx_file is None:
        if model is None or params is None:
            raise ValueError("give onnx_file, or model and params to build the ONNX graph from")
        from tcdcn_jax.photos import onnx_export

        return onnx_export.to_onnx(model, params).SerializeToString()
    if isinstance(onnx_file, (bytes, bytearray)):
        return bytes(onnx_file)
    if hasattr(onnx_file, "SerializeToString"):
        return onnx_file.SerializeToString()
    path = os.fspath(onnx_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        return f.read()


def _jax_runner(model, params) -> Runner:
    if model is None or params is None:
        raise ValueError("backend 'jax' needs model and params (an ONNX file runs on "
                         "'onnxruntime' or 'openvino')")
    from tcdcn_jax.model import inference

    forward = inference.make_forward(model, params)
    return lambda img: {k: np.asarray(v) for k, v in forward(np.asarray(img, np.float32)).items()}


def _onnxruntime_runner(data: bytes, threads: int | None) -> Runner:
    ort = _require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/InvalidGraph types for foreign bytes
        raise ValueError(f"ONNX Runtime cannot load the model: {' '.join(str(err).split())}"
                         ) from None
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name

    def run(img_BxSxSx1):
        outs = session.run(names, {input_name: np.ascontiguousarray(img_BxSxSx1, np.float32)})
        return dict(zip(names, outs))
    return run


def _import_openvino():
    """openvino, imported as the module docstring says (no report for a user who never chose)."""
    import sys

    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

        # How ovc asks: no opt-in dialog, off in CI.
        undecided = OptInChecker().check(False, True) == ConsentCheckResult.NO_FILE
    except Exception:  # telemetry missing or changed: import as it comes
        undecided = False
    if not undecided:
        return _require("openvino", "openvino")
    saved = {k: v for k, v in sys.modules.items() if k.partition(".")[0] == "openvino_telemetry"}
    sys.modules["openvino_telemetry"] = None  # ovc's `import openvino_telemetry` takes its stub
    try:
        return _require("openvino", "openvino")
    finally:
        del sys.modules["openvino_telemetry"]
        sys.modules.update(saved)


def _openvino_runner(data: bytes, threads: int | None) -> Runner:
    ov = _import_openvino()
    core = ov.Core()
    # f32: on CPUs with bf16 units OpenVINO would otherwise lower precision on its own.
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        graph = core.read_model(data)
    except Exception as err:
        raise ValueError(f"OpenVINO cannot read the model: {' '.join(str(err).split())}") from None
    input_name = graph.inputs[0].get_any_name()
    compiled: dict[int, Any] = {}  # batch size -> compiled model: a static shape per size

    def run(img_BxSxSx1):
        img = np.ascontiguousarray(img_BxSxSx1, np.float32)
        batch = img.shape[0]
        if batch not in compiled:
            shaped = graph.clone()
            shaped.reshape({input_name: [batch, *img.shape[1:]]})
            compiled[batch] = core.compile_model(shaped, "CPU", config)
        net = compiled[batch]
        result = net({input_name: img})
        return {o.get_any_name(): np.asarray(result[o]) for o in net.outputs}
    return run


def bucket(n: int, cap: int = 1 << 30) -> int:
    """Smallest power of two >= n (at most cap): padded batch sizes, so few compilations."""
    return min(cap, 1 << max(0, int(n) - 1).bit_length())


def batched(run: Runner, inputs: np.ndarray, cap: int) -> dict[str, np.ndarray]:
    """run() over inputs `cap` at a time, each chunk padded (repeating its last row) to a power-of-
    two size: a JAX runner compiles for a handful of sizes, none per call."""
    outs = []
    for start in range(0, len(inputs), cap):
        chunk = inputs[start:start + cap]
        pad = bucket(len(chunk), cap) - len(chunk)
        out = run(np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk)
        outs.append({k: np.asarray(v)[:len(chunk)] for k, v in out.items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} if outs else {}


def make_runner(backend: str, model: "networks.TCDCN | None" = None,
                params: Mapping[str, Any] | None = None, onnx_file: Any = None,
                threads: int | None = None) -> Runner:
    """A callable img_BxSxSx1 float32 -> {'landmarks': lm_BxKx2, task: probs_BxC} on `backend`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "jax":
        return _jax_runner(model, params)
    data = onnx_bytes(onnx_file, model, params)
    if backend == "onnxruntime":
        return _onnxruntime_runner(data, threads)
    return _openvino_runner(data, threads)

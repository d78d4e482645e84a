"""A TCDCN as an ONNX graph, built from its params with the `onnx` package (the `onnx` extra).

    proto = onnx_export.to_onnx(model, params)      # onnx.ModelProto, weights inside
    onnx.save(proto, "tcdcn68.onnx")

Input 'image': float32 (batch, S, S, 1), preprocessed as `Predictor.preprocess` makes it (batch is
dynamic). Outputs: 'landmarks' (batch, K, 2) box-normalised (u, v), then one (batch, C) softmax
output per auxiliary task, named after it, in the model's task order.

Why by hand and not with jax2onnx (0.17.1, the maintained JAX exporter): it does express both of
our trunks (outputs within 1.2e-6 of ours in ONNX Runtime), but it pins orbax-checkpoint below
0.11.37 (pip downgrades our checkpoint library from 0.12) and brings huggingface-hub, netron,
equinox, dm-pix and orbax-export; and it traces what the code computes, so the report trunk's
conv1 (fused with its pool through a space-to-depth phase kernel, model/conv_pool.py) arrives as
a scatter over constants plus NonZero/GatherND index arithmetic instead of Conv + MaxPool. The
graph here is the network's own layer list (Conv, Relu, MaxPool, Gemm, Softmax), which every
runtime fuses well, in a module that depends on `onnx` alone.

Layouts: one input channel, so NHWC -> NCHW is a reshape; conv kernels HWIO -> OIHW; the first
fully connected layer's rows go from our (h, w, c) flattening to ONNX's (c, h, w). The ECCV
trunk's locally connected layers are k*k Slices concatenated into patches (channel order
(kh, kw, C), the kernel's rows permuted from nn.ConvLocal's (C, kh, kw) to match) and one MatMul
batched over output positions.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from tcdcn_jax.model import networks

OPSET = 17
INPUT_NAME = "image"
METADATA_KEY = "tcdcn_jax.sidecar"  # the JSON sidecar, also kept inside the file


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'tcdcn_jax[onnx]'"
                          ) from None
    return onnx


class _Graph:
    """Nodes and initialisers under construction; `add` returns the node's output name."""

    def __init__(self):
        self.onnx = _onnx()
        self.nodes, self.inits = [], []

    def const(self, name: str, value: Any) -> str:
        """An initialiser: float params as float32 (they may arrive as float64 or jax arrays)."""
        value = np.asarray(value)
        value = value.astype(np.float32 if value.dtype.kind == "f" else np.int64)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def add(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _act(g: _Graph, x: str, activation: str, name: str) -> str:
    if activation == "relu":
        return g.add("Relu", [x], name)
    t = g.add("Tanh", [x], name if activation == "tanh" else name + "_tanh")
    return t if activation == "tanh" else g.add("Abs", [t], name)


def _pool(g: _Graph, x: str, name: str) -> str:
    # 2x2, stride 2, no padding, floor: an odd side drops its last row/column, as ours.
    return g.add("MaxPool", [x], name, kernel_shape=[2, 2], strides=[2, 2])


def _conv_layers(g: _Graph, x: str, trunk: Mapping[str, Any], activation: str) -> str:
    for i in range(4):
        p = trunk[f"conv{i + 1}"]
        w = g.const(f"conv{i + 1}.weight", np.asarray(p["kernel"]).transpose(3, 2, 0, 1))
        b = g.const(f"conv{i + 1}.bias", np.asarray(p["bias"], np.float32))
        x = _act(g, g.add("Conv", [x, w, b], f"conv{i + 1}"), activation, f"act{i + 1}")
        if i < 3:
            x = _pool(g, x, f"pool{i + 1}")
    return x


def _local_layers(g: _Graph, x: str, trunk: Mapping[str, Any], activation: str, side: int) -> str:
    channels = 1
    for i in range(4):
        p, name = trunk[f"conv{i + 1}"], f"conv{i + 1}"
        kernel = np.asarray(p["kernel"], np.float32)  # Ho x Wo x (C*k*k) x O, rows (C, kh, kw)
        ho, wo, k_feat, o = kernel.shape
        k = side - ho + 1
        # Rows to (kh, kw, C): the order in which the slices below are concatenated.
        kernel = kernel.reshape(ho * wo, channels, k, k, o).transpose(0, 2, 3, 1, 4)
        w = g.const(f"{name}.weight", kernel.reshape(ho * wo, k_feat, o))
        bias = np.asarray(p["bias"], np.float32).transpose(2, 0, 1)  # O x Ho x Wo
        b = g.const(f"{name}.bias", bias)
        axes = g.const(f"{name}.axes", np.array([2, 3], np.int64))
        shifted = []
        for di in range(k):
            for dj in range(k):
                starts = g.const(f"{name}.s{di}_{dj}", np.array([di, dj], np.int64))
                ends = g.const(f"{name}.e{di}_{dj}", np.array([di + ho, dj + wo], np.int64))
                shifted.append(g.add("Slice", [x, starts, ends, axes], f"{name}_slice{di}_{dj}"))
        patches = g.add("Concat", shifted, f"{name}_patches", axis=1)  # B x K x Ho x Wo
        flat = g.add("Reshape", [patches, g.const(f"{name}.bkp", np.array([0, k_feat, -1]))],
                     f"{name}_bkp")
        pbk = g.add("Transpose", [flat], f"{name}_pbk", perm=[2, 0, 1])
        pbo = g.add("MatMul", [pbk, w], f"{name}_pbo")  # per position: (B x K) @ (K x O)
        bop = g.add("Transpose", [pbo], f"{name}_bop", perm=[1, 2, 0])
        maps = g.add("Reshape", [bop, g.const(f"{name}.shape", np.array([0, o, ho, wo]))],
                     f"{name}_maps")
        x = _act(g, g.add("Add", [maps, b], name), activation, f"act{i + 1}")
        if i < 3:
            x = _pool(g, x, f"pool{i + 1}")
            side = ho // 2
        channels = o
    return x


def to_onnx(model: networks.TCDCN, params: Mapping[str, Any],
            metadata: Mapping[str, Any] | None = None):
    """onnx.ModelProto of `model` with `params` inside; `metadata` is stored as JSON in the file."""
    onnx = _onnx()
    helper = onnx.helper
    size = networks.input_size(model.trunk)
    trunk, heads = params["trunk"], params["heads"]
    g = _Graph()
    x = g.add("Reshape", [INPUT_NAME, g.const("nchw", np.array([-1, 1, size, size]))], "nchw_image")
    if model.trunk == "report":
        x = _conv_layers(g, x, trunk, model.activation)
    else:
        x = _local_layers(g, x, trunk, model.activation, size)
    x = g.add("Flatten", [x], "flat", axis=1)  # (c, h, w) order
    fc = np.asarray(trunk["fc"]["kernel"], np.float32)
    last = np.asarray(trunk["conv4"]["bias"]).shape  # (O,) shared conv, (Ho, Wo, O) local
    side = int(round((fc.shape[0] // last[-1]) ** 0.5))
    fc = fc.reshape(side, side, last[-1], -1).transpose(2, 0, 1, 3).reshape(fc.shape)
    x = g.add("Gemm", [x, g.const("fc.weight", fc),
                       g.const("fc.bias", np.asarray(trunk["fc"]["bias"], np.float32))], "fc")
    feat = _act(g, x, model.activation, "features")
    k = model.num_landmarks
    outputs = [helper.make_tensor_value_info("landmarks", onnx.TensorProto.FLOAT,
                                             ["batch", k, 2])]
    lm = g.add("Gemm", [feat, g.const("landmarks.weight", heads["landmarks"]["kernel"]),
                        g.const("landmarks.bias", heads["landmarks"]["bias"])], "landmarks_flat")
    g.add("Reshape", [lm, g.const("bk2", np.array([-1, k, 2]))], "landmarks")
    for task, classes in (model.aux_tasks or {}).items():
        logits = g.add("Gemm", [feat, g.const(f"{task}.weight", heads[task]["kernel"]),
                                g.const(f"{task}.bias", heads[task]["bias"])], f"{task}_logits")
        g.add("Softmax", [logits], task, axis=-1)
        outputs.append(helper.make_tensor_value_info(task, onnx.TensorProto.FLOAT,
                                                     ["batch", int(classes)]))
    inputs = [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT,
                                            ["batch", size, size, 1])]
    graph = helper.make_graph(g.nodes, f"tcdcn_{model.trunk}", inputs, outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tcdcn_jax")
    proto.ir_version = 8  # the oldest IR that carries opset 17: readable by older runtimes too
    if metadata is not None:
        helper.set_model_props(proto, {METADATA_KEY: json.dumps(dict(metadata))})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def read_metadata(path: str) -> dict[str, Any]:
    """The sidecar stored in an ONNX file by `to_onnx` ({} when it holds none)."""
    onnx = _onnx()
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and others for foreign bytes
        raise ValueError(f"{path}: not a readable ONNX file ({type(err).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else {}

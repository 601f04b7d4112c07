"""One-layer ONNX models for a latency table, built directly with
``onnx.helper`` (milliseconds, where a torch export takes a second).

* ``layer_model(config, batch)``: the convolution (``Conv``) or linear layer
  (``Gemm``, or ``MatMul`` + ``Add`` on a 3-D input) of a ``LayerConfig``, with
  random weights, its bias when it has one and a ``Relu`` when an activation
  fuses into it: what the exporter writes for the layer (BatchNorm already
  folded into the bias), so that ORT applies the same fusions.
* ``null_model(config, batch)``: the same input and output shapes and almost
  no work (a one-element ``Slice`` broadcast by ``Expand`` to the output
  shape). Its time is the per-session overhead of a one-layer model: the
  ``run`` call, binding the input, allocating and returning the output.
"""

from __future__ import annotations

import numpy as np

from .layer_graph import LayerConfig
from .runtime import import_onnxruntime

OPSET = 17


def _io_shapes(cfg: LayerConfig, batch: int) -> tuple[list[int], list[int]]:
    """(input shape, output shape) of the layer at batch ``batch``."""
    if cfg.kind == "conv":
        return [batch, cfg.in_channels, *cfg.in_hw], [batch, cfg.out_channels, *cfg.out_hw]
    rows = cfg.in_hw[0] * cfg.in_hw[1]
    if rows == 1:
        return [batch, cfg.in_channels], [batch, cfg.out_channels]
    return [batch, rows, cfg.in_channels], [batch, rows, cfg.out_channels]


def _model(nodes, inits, in_shape: list[int], out_shape: list[int]) -> bytes:
    import_onnxruntime()       # onnx and onnxruntime, or the install hint
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="entroprune")
    model.ir_version = 8
    return model.SerializeToString()


def layer_model(cfg: LayerConfig, batch: int, seed: int = 0) -> bytes:
    """Serialized ONNX model of ``cfg`` on a ``(batch, ...)`` float input."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    in_shape, out_shape = _io_shapes(cfg, batch)
    last = "y_pre" if cfg.act else "y"
    inits, nodes = [], []
    if cfg.kind == "conv":
        w = rng.standard_normal((cfg.out_channels, cfg.in_channels // cfg.groups, *cfg.kernel)) * 0.1
        inits.append(numpy_helper.from_array(w.astype(np.float32), "w"))    # (C_out, C_in/g, kh, kw)
        ins = ["x", "w"]
        if cfg.bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(cfg.out_channels).astype(np.float32), "b"))
            ins.append("b")
        ph, pw = cfg.padding
        nodes.append(helper.make_node("Conv", ins, [last], kernel_shape=list(cfg.kernel), strides=list(cfg.stride),
                                      pads=[ph, pw, ph, pw], dilations=list(cfg.dilation), group=cfg.groups))
    else:
        w = (rng.standard_normal((cfg.out_channels, cfg.in_channels)) * 0.1).astype(np.float32)  # (out, in)
        b = rng.standard_normal(cfg.out_channels).astype(np.float32)
        if len(in_shape) == 2:        # (B, in) -> (B, out): Gemm with a transposed weight, as torch exports it
            inits.append(numpy_helper.from_array(w, "w"))
            ins = ["x", "w"] + (["b"] if cfg.bias else [])
            if cfg.bias:
                inits.append(numpy_helper.from_array(b, "b"))
            nodes.append(helper.make_node("Gemm", ins, [last], transB=1))
        else:                         # (B, L, in) -> (B, L, out): MatMul (+ Add)
            inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "w"))
            mm = "mm" if cfg.bias else last
            nodes.append(helper.make_node("MatMul", ["x", "w"], [mm]))
            if cfg.bias:
                inits.append(numpy_helper.from_array(b, "b"))
                nodes.append(helper.make_node("Add", [mm, "b"], [last]))
    if cfg.act:
        nodes.append(helper.make_node("Relu", [last], ["y"]))
    return _model(nodes, inits, in_shape, out_shape)


def null_model(cfg: LayerConfig, batch: int) -> bytes:
    """Serialized ONNX model with ``cfg``'s input and output shapes that only
    broadcasts one input element to the output shape."""
    from onnx import helper, numpy_helper

    in_shape, out_shape = _io_shapes(cfg, batch)
    rank = len(in_shape)
    const = lambda name, v: numpy_helper.from_array(np.asarray(v, dtype=np.int64), name)  # noqa: E731
    inits = [const("zeros", [0] * rank), const("ones", [1] * rank), const("shape", out_shape)]
    nodes = [helper.make_node("Slice", ["x", "zeros", "ones"], ["one"]),    # (1, ..., 1)
             helper.make_node("Expand", ["one", "shape"], ["y"])]          # out_shape
    return _model(nodes, inits, in_shape, out_shape)

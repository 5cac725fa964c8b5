"""Export a model to ONNX, to serve it with onnxruntime or any other ONNX runtime.

The graph is the model's eval-mode forward pass, ONNX opset 17 (IR version 8), with one
input "input" of shape (batch, *input_shape) and one output "output", the batch
dimension symbolic. Parameters are stored in the graph as constants named after the
model's own (`0.weight`, `2.block.1.running_mean`, ...).

Each layer becomes the ONNX op that computes its formula:

- Linear: Gemm(x, weight, bias) (fastnn's weight is already (in, out), so transB=0);
- Conv2d: Conv (pads, strides, dilations, group); MaxPool2d: MaxPool; AvgPool2d:
  AveragePool with count_include_pad=1 (fastnn counts the zero padding);
  GlobalAvgPool2d: GlobalAveragePool then Flatten to (N, C); Flatten: Flatten(axis=1);
- BatchNorm1d/2d: x * scale + shift, with scale = weight / sqrt(running_var + eps) and
  shift = bias - running_mean * scale computed as fastnn's eval-mode kernel computes
  them, so the graph rounds as fastnn does (a BatchNormalization op would recompute
  them its own way);
- activations: the op(s) in ACTIVATIONS (LeakyReLU is PRelu with the slope as a
  constant of the graph's dtype: LeakyRelu's alpha attribute is a float32, which would
  round a float64 model's slope); Dropout: nothing (the identity in eval mode);
- Residual: Add of the block's output and the shortcut's (or the input's);
  Sequential: its layers in order; both nest in any way.

dtype: a float32 model gives a float32 graph. A float64 model gives a float64 (double)
graph where onnxruntime's CPU provider runs every op in double (MLPs); a float64 model
with Conv2d, AvgPool2d, GlobalAvgPool2d or an exact GELU raises TypeError, since
onnxruntime has no double kernel for them: pass dtype=np.float32 to export any model as
a float32 graph (its parameters rounded to float32).

onnx is an optional dependency: `pip install fastnn[onnx]`.
"""

import os
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
from numpy.typing import DTypeLike

from . import io, nn
from ._checks import POSITIVE, check_instance, check_int
from ._version import __version__
from .nn.linear import _float_dtype

__all__ = ["ACTIVATIONS", "OPSET", "export_onnx"]

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: runtimes that read opset 17 read the file

# Ops that onnxruntime's CPU provider (1.32) has no float64 (double) kernel for.
_FLOAT32_ONLY_OPS = frozenset({"Conv", "AveragePool", "GlobalAveragePool", "Erf"})


class _Graph:
    """The nodes and constants of a graph under construction, all of one dtype."""

    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.dtype = dtype
        self.nodes = []
        self.constants = []

    def node(self, op, *inputs, **attributes):
        """Add an `op` node reading `inputs` (names); returns its output's name."""
        out = f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], name=out,
                                                     **attributes))
        return out

    def const(self, value, name):
        """Add a constant of the graph's dtype named `name` (a qualified parameter name,
        unique in the model); returns the name."""
        array = np.asarray(value).astype(self.dtype)
        self.constants.append(self.onnx.numpy_helper.from_array(array, name))
        return name


# Activation layers: type -> (graph, layer, x, name) -> the name of f(x); one line adds one.
ACTIVATIONS = {
    nn.ReLU: lambda g, layer, x, name: g.node("Relu", x),
    nn.LeakyReLU: lambda g, layer, x, name: g.node("PRelu", x, g.const(layer.slope,
                                                                       name + "slope")),
    nn.Sigmoid: lambda g, layer, x, name: g.node("Sigmoid", x),
    nn.Tanh: lambda g, layer, x, name: g.node("Tanh", x),
    nn.ELU: lambda g, layer, x, name: _elu(g, layer, x, name),
    nn.SiLU: lambda g, layer, x, name: g.node("Mul", x, g.node("Sigmoid", x)),
    nn.GELU: lambda g, layer, x, name: _gelu(g, layer, x, name),
}


def _elu(g, layer, x, name):
    """max(x, 0) + alpha (exp(min(x, 0)) - 1): onnxruntime has no double kernel for Elu."""
    zero, one = g.const(0.0, name + "elu_zero"), g.const(1.0, name + "elu_one")
    neg = g.node("Sub", g.node("Exp", g.node("Min", x, zero)), one)
    return g.node("Add", g.node("Max", x, zero),
                  g.node("Mul", neg, g.const(layer.alpha, name + "elu_alpha")))


def _gelu(g, layer, x, name):
    """x * Phi(x) from Erf, or with approximate="tanh" from Tanh (opset 17 has no Gelu):
    0.5 x (1 + erf(x / sqrt(2))) or 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    if layer.approximate == "tanh":
        cube = g.node("Mul", g.node("Mul", x, x), x)
        inner = g.node("Add", x, g.node("Mul", cube, g.const(0.044715, name + "gelu_c")))
        core = g.node("Tanh", g.node("Mul", inner, g.const(np.sqrt(2 / np.pi),
                                                            name + "gelu_k")))
    else:
        core = g.node("Erf", g.node("Mul", x, g.const(np.sqrt(0.5), name + "gelu_k")))
    half = g.node("Mul", x, g.const(0.5, name + "gelu_half"))
    return g.node("Mul", half, g.node("Add", core, g.const(1.0, name + "gelu_one")))


def _linear(g, layer, x, name):
    bias = () if layer.bias is None else (g.const(layer.bias, name + "bias"),)
    return g.node("Gemm", x, g.const(layer.weight, name + "weight"), *bias)


def _batchnorm(g, layer, x, name):
    # in the model's dtype, as the eval-mode kernel computes them
    inv_std = 1 / np.sqrt(layer.running_var + layer.running_var.dtype.type(layer.eps))
    scale = layer.weight * inv_std
    shift = layer.bias - layer.running_mean * scale
    if isinstance(layer, nn.BatchNorm2d):  # per channel of (N, C, H, W)
        scale, shift = scale[:, None, None], shift[:, None, None]
    return g.node("Add", g.node("Mul", x, g.const(scale, name + "scale")),
                  g.const(shift, name + "shift"))


def _window(layer):
    """The attributes of a 2-D window: ONNX pads are (top, left, bottom, right)."""
    return {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride),
            "pads": [*layer.padding, *layer.padding]}


def _conv(g, layer, x, name):
    bias = () if layer.bias is None else (g.const(layer.bias, name + "bias"),)
    return g.node("Conv", x, g.const(layer.weight, name + "weight"), *bias,
                  dilations=list(layer.dilation), group=layer.groups, **_window(layer))


_LAYERS = {
    **ACTIVATIONS,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.Dropout: lambda g, layer, x, name: x,
    nn.Conv2d: _conv,
    nn.MaxPool2d: lambda g, layer, x, name: g.node("MaxPool", x, **_window(layer)),
    nn.AvgPool2d: lambda g, layer, x, name: g.node("AveragePool", x, count_include_pad=1,
                                                   **_window(layer)),
    nn.GlobalAvgPool2d: lambda g, layer, x, name: g.node(
        "Flatten", g.node("GlobalAveragePool", x), axis=1),
    nn.Flatten: lambda g, layer, x, name: g.node("Flatten", x, axis=1),
}


def _kind(layer):
    """The type whose ONNX form `layer` has: its own, or the one it is saved as
    (SyncBatchNorm: BatchNorm1d, which it equals in eval mode)."""
    own = vars(type(layer))
    if "saved_as" in own and isinstance(layer, io.LAYERS[own["saved_as"]]):
        return io.LAYERS[own["saved_as"]]
    return type(layer)


def _emit(g, module, x, name):
    """Add the nodes of module's eval-mode forward on x; returns its output's name.
    `name` is the module's qualified name with a trailing dot ("" for the model)."""
    if type(module) is nn.Sequential:
        for i, layer in enumerate(module.layers):
            x = _emit(g, layer, x, f"{name}{i}.")
        return x
    if type(module) is nn.Residual:
        skip = x if module.shortcut is None else _emit(g, module.shortcut, x,
                                                       name + "shortcut.")
        return g.node("Add", _emit(g, module.block, x, name + "block."), skip)
    emit = _LAYERS.get(_kind(module))
    if emit is None:
        where = f"layer {name[:-1]!r}" if name else "the model"
        raise TypeError(
            f"export_onnx: {where} is a {type(module).__name__}, which has no ONNX form; "
            f"export_onnx handles Sequential and Residual models of "
            f"{sorted(cls.__name__ for cls in _LAYERS)}")
    return emit(g, module, x, name)


def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as exc:
        raise ImportError("export_onnx needs the onnx package: pip install fastnn[onnx] "
                          "(or pip install onnx)") from exc
    return onnx


def _output_shape(model, input_shape):
    """The per-sample output shape of model's eval-mode forward on a zero sample of
    input_shape; ValueError when the model does not take that shape. Every module's
    mode is as it was afterwards."""
    modes = [(m, m.training) for _, m in model.modules()]
    model.eval()
    try:
        y = model.forward(np.zeros((1, *input_shape), model.param_dtype()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"export_onnx: the model does not take samples of input_shape "
                         f"{tuple(input_shape)}: {exc}") from exc
    finally:
        for m, mode in modes:
            m.training = mode
    return y.shape[1:]


def export_onnx(model: nn.Module, path: Union[str, os.PathLike], input_shape: Sequence[int],
                dtype: Optional[DTypeLike] = None) -> None:
    """Write `model`'s eval-mode forward pass to `path` as an ONNX model (opset 17).

    input_shape: one sample's shape, without the batch dimension: (in_features,) for an
    MLP, (C, H, W) for an image model. The graph maps "input" (batch, *input_shape) to
    "output" (batch, *output_shape) for any batch size; in onnxruntime it gives
    model.eval().forward(x) to float rounding. dtype: the graph's, float32 or float64
    (default: the model's; see the module docstring for float64 models). The model is
    run once on a zero sample to check input_shape, and left in the modes it was in.
    The file is written to a temporary file that replaces `path` only when complete.

    Raises ImportError without the onnx package, TypeError for a layer without an ONNX
    form (named in the message) or an op onnxruntime cannot run in float64, and
    ValueError for an input_shape the model does not take.
    """
    onnx = _import_onnx()
    check_instance(model, "model", nn.Module, "a fastnn.nn.Module")
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape: expected a sequence of ints, got {input_shape!r}")
    input_shape = tuple(check_int(d, "input_shape", POSITIVE) for d in input_shape)
    if not input_shape:
        raise ValueError("input_shape: expected at least one dimension, got ()")
    dtype = model.param_dtype() if dtype is None else _float_dtype(dtype)

    g = _Graph(onnx, dtype)
    out = _emit(g, model, "input", "")
    output_shape = _output_shape(model, input_shape)
    if dtype == np.float64:
        ops = sorted({n.op_type for n in g.nodes} & _FLOAT32_ONLY_OPS)
        if ops:
            raise TypeError(f"export_onnx: onnxruntime has no float64 kernel for {ops}; "
                            f"pass dtype=np.float32 to export the model as a float32 graph")
    if out == "input":  # a model that computes the identity
        out = g.node("Identity", out)
    next(n for n in g.nodes if out in n.output).output[0] = "output"

    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    graph = onnx.helper.make_graph(
        g.nodes, "fastnn", [onnx.helper.make_tensor_value_info("input", elem,
                                                               ["batch", *input_shape])],
        [onnx.helper.make_tensor_value_info("output", elem, ["batch", *output_shape])],
        g.constants)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="fastnn", producer_version=__version__)
    proto.ir_version = IR_VERSION
    # full_check infers every shape and checks them against the declared output
    onnx.checker.check_model(proto, full_check=True)
    io.write_atomic(path, [proto.SerializeToString()])

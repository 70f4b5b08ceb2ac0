"""ONNX models and torch modules -> op graphs with every tensor's shape, in canonical form, encoded.

Exports leave shapes and constants computed at run time (Shape -> Gather -> Concat -> Reshape chains, Split and
Slice with computed sizes, attention masks built from shapes), where ONNX's static shape inference gives up. Given
the input size, all of these are fixed, so conversion never fails for want of a shape on a valid model:

1. static shape inference (with data propagation) fills in what it can, in milliseconds;
2. the *static* tensors are found: constants, the Shape and Size of any tensor whose shape cannot depend on the
   input's values, and whatever is computed from static tensors only. Their operators are folded away; those read
   by the rest of the graph become constants;
3. if shapes are still unknown, or small static values (which the canonical form reads) cannot be read off a
   Constant, ONNX Runtime runs the model once on a random input of the input size and the missing shapes and values
   are read off that run. A model that ONNX Runtime cannot run either fails with an OnnxGraphError naming the
   operator.

ONNX Runtime is the constant folder as well as the shape oracle: onnxslim, tried first, took 90 s of graph
bookkeeping on torchvision's Swin-T (2,500 operators) where one run of the model takes well under a second.

Weights never travel through these steps: every constant of more than WEIGHT_LIMIT elements is replaced by a graph
input of its shape (fed as zeros to ONNX Runtime), which keeps memory and time flat in the size of the model.
Smaller constants keep their values, which the canonical form reads (h-swish's 3 and 6, the axes of a reduction).
"""
from __future__ import annotations

import io
import math
import os
import re
import warnings
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from iterators.onnx_ir.canonical import canonicalize
from iterators.onnx_ir.features import OnnxGraph, OnnxGraphError, encode
from iterators.onnx_ir.ir import WEIGHT_LIMIT, Node, OpGraph, Shape

OPSET = 17
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
_CONSTANT_VALUE_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")
_SHAPE_OPS = frozenset({"Shape", "Size"})
_NEVER_STATIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                           "Bernoulli", "If", "Loop", "Scan"})
_DATA_SHAPED_OPS = frozenset({"NonZero", "Unique", "Compress", "NonMaxSuppression", "If", "Loop", "Scan"})
# operator -> the inputs whose values (not only shapes) set its output's shape
_VALUE_SHAPED = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1,), "Range": (0, 1, 2),
                 "ConstantOfShape": (0,), "Resize": (2, 3), "Upsample": (1,), "OneHot": (1,), "TopK": (1,),
                 "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "ReduceMean": (1,), "ReduceMax": (1,),
                 "ReduceMin": (1,), "ReduceSum": (1,), "ReduceProd": (1,), "ReduceL2": (1,), "CenterCropPad": (1,)}


def load_model(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        try:
            return onnx.load(model)
        except Exception as err:  # protobuf's DecodeError and friends: not an ONNX file
            raise OnnxGraphError(f"not a readable ONNX model ({type(err).__name__}: {err})") from None
    raise TypeError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")


def _value_shape(value: onnx.ValueInfoProto) -> Shape | None:
    """Concrete shape of a tensor, None when any dimension is unknown."""
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    if not all(dim.HasField("dim_value") for dim in tensor.shape.dim):
        return None
    return tuple(dim.dim_value for dim in tensor.shape.dim)


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in STANDARD_DOMAINS else f"{node.domain}::{node.op_type}"


def _small_array(tensor: onnx.TensorProto) -> np.ndarray | None:
    if int(np.prod(tensor.dims, dtype=np.int64)) > WEIGHT_LIMIT or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return numpy_helper.to_array(tensor)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (small tensors as arrays; subgraphs are left out)."""
    attrs = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, onnx.TensorProto):
            value = _small_array(value)
        elif isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, (onnx.GraphProto, onnx.SparseTensorProto)) or (
                isinstance(value, list) and value and not isinstance(value[0], (int, float, bytes))):
            continue
        attrs[a.name] = value
    if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
        given = next((k for k in _CONSTANT_VALUE_ATTRS if k in attrs), None)
        attrs["value"] = np.asarray(attrs[given]) if given and attrs[given] is not None else None
    return attrs


def _set_input_sizes(data_inputs: list[onnx.ValueInfoProto], input_size: Sequence[int] | None) -> bool:
    """Give the first data input ``input_size``; a symbolic batch dimension of any input becomes 1. Returns whether
    any dimension changed."""
    before = [_value_shape(v) for v in data_inputs]
    for i, value in enumerate(data_inputs):
        dims = value.type.tensor_type.shape.dim
        if i == 0 and input_size:
            if not value.type.tensor_type.HasField("shape"):  # not even the rank is known: take the given one
                dims.extend(onnx.TensorShapeProto.Dimension() for _ in input_size)
            if len(dims) != len(input_size):
                raise OnnxGraphError(f"the model input {value.name!r} has {len(dims)} dimensions, the input size "
                                     f"given has {len(input_size)}")
            for dim, size in zip(dims, input_size):
                dim.Clear()
                dim.dim_value = int(size)
        elif len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
        if _value_shape(value) is None:
            raise OnnxGraphError(f"model input {value.name!r} has no known shape")
    return before != [_value_shape(v) for v in data_inputs]


def _weightless(model: onnx.ModelProto, input_size: Sequence[int] | None,
                weight_inputs: Sequence[str] = ()) -> tuple[onnx.ModelProto, dict[str, np.ndarray | None]]:
    """A copy of ``model`` whose large constants are graph inputs, and every constant by name (its value when small).
    ``weight_inputs`` names graph inputs that hold weights (torch exports without parameters)."""
    src = model.graph
    light = onnx.ModelProto()
    light.ir_version, light.producer_name = model.ir_version, model.producer_name
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = src.name
    graph.node.extend(src.node)
    graph.output.extend(src.output)
    constants: dict[str, np.ndarray | None] = {}
    weights = []
    for tensor in src.initializer:
        value = _small_array(tensor)
        constants[tensor.name] = value
        if value is None:
            weights.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            graph.initializer.append(tensor)
    for sparse in src.sparse_initializer:
        constants[sparse.values.name] = None
        weights.append(onnx.helper.make_tensor_value_info(sparse.values.name, sparse.values.data_type,
                                                          list(sparse.dims)))
    data_inputs = []
    for value in src.input:
        if value.name in constants:
            continue
        if value.name in weight_inputs:
            constants[value.name] = None
            weights.append(value)
        else:
            data_inputs.append(value)
    graph.input.extend(data_inputs)
    graph.input.extend(weights)
    if not _set_input_sizes(list(graph.input)[:len(data_inputs)], input_size):
        graph.value_info.extend(src.value_info)  # still true: keep what it says of operators inference cannot read
    return light, constants


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # ONNX Runtime reads the shapes instead
        return model


def _static_tensors(graph: onnx.GraphProto, constants: dict) -> set[str]:
    """Tensors whose value does not depend on the input's values once its size is fixed: constants, Shape and Size
    of tensors whose shape cannot depend on values (see _VALUE_SHAPED), and what is computed from static tensors only
    (random and control-flow operators excepted)."""
    static = set(constants)
    value_shaped: set[str] = set()  # tensors whose shape may depend on the input's values
    for node in graph.node:
        inputs = [t for t in node.input if t]
        if node.op_type in _DATA_SHAPED_OPS or any(t in value_shaped for t in inputs) or any(
                i < len(node.input) and node.input[i] and node.input[i] not in static
                for i in _VALUE_SHAPED.get(node.op_type, ())):
            value_shaped.update(node.output)
        if node.domain not in STANDARD_DOMAINS or node.op_type in _NEVER_STATIC:
            continue
        if node.op_type in _SHAPE_OPS:
            if inputs and inputs[0] not in value_shaped:
                static.update(node.output)
        elif all(t in static for t in inputs):
            static.update(node.output)
    return static


def _runtime_failure(model: onnx.ModelProto, err: Exception) -> str:
    """One line naming the operator ONNX Runtime failed on, and why."""
    message = str(err).replace("\n", " ")
    by_name = {n.name: n for n in model.graph.node if n.name}
    named = re.search(r"[Nn]ode(?: with name|\. Name:)\s*'([^']*)'", message)
    registered = re.search(r"([\w.]*):(\w+)\(-?\d+\) is not a registered", message)
    node = by_name.get(named.group(1)) if named else None
    if node is None and registered:
        domain, op_type = registered.groups()
        node = next((n for n in model.graph.node if n.op_type == op_type and n.domain == domain), None)
    reason = message.split("Status Message:")[-1].strip()
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", reason)
    reason = re.sub(r"^/\S+:\d+ .*?\) ", "", reason)
    label = f"operator {node.name or '(unnamed)'!r} ({_op_name(node)})" if node is not None else "the model"
    return f"{label}: its output shape cannot be inferred and ONNX Runtime cannot run it ({reason[:300]})"


def _run(model: onnx.ModelProto, names: list[str], constants: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """The tensors ``names`` from one run of ONNX Runtime on a random input (weights fed as zeros)."""
    import onnxruntime as ort
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known_outputs = {v.name for v in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known_outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    rng = np.random.default_rng(0)
    feeds = {}
    for value in probe.graph.input:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = _value_shape(value)
        feeds[value.name] = (np.zeros(shape, dtype) if value.name in constants or not np.issubdtype(dtype, np.floating)
                             else rng.standard_normal(shape).astype(dtype))
    for attempt in range(2):
        try:
            session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return dict(zip(names, session.run(names, feeds)))
        except Exception as err:
            supported = re.search(r"max supported IR version: (\d+)", str(err))
            if attempt == 0 and supported and probe.ir_version > int(supported.group(1)):
                probe.ir_version = int(supported.group(1))
                continue
            raise OnnxGraphError(_runtime_failure(model, err)) from None
    raise AssertionError("unreachable")


def op_graph_from_onnx(model: onnx.ModelProto | str | os.PathLike, input_size: Sequence[int] | None = None,
                       weight_inputs: Sequence[str] = ()) -> OpGraph:
    """The op graph of an ONNX model (a ModelProto or a file path) with every tensor's shape, static computations
    folded, before the canonical form. ``input_size`` fixes the first input's shape; a symbolic batch dimension is
    taken as 1. ``weight_inputs`` names graph inputs that hold weights (a torch export without its parameters)."""
    light, constants = _weightless(load_model(model), input_size, weight_inputs)
    light = _infer_shapes(light)
    graph = light.graph
    shapes = {v.name: _value_shape(v) for v in [*graph.input, *graph.value_info, *graph.output]}
    shapes.update({t.name: tuple(t.dims) for t in graph.initializer})
    nodes = [Node(_op_name(n), list(n.input), list(n.output), _attrs(n), n.name) for n in graph.node]
    for node in nodes:  # values that need no run: Constants and their copies
        if node.op_type == "Constant":
            constants[node.outputs[0]] = node.attrs["value"]
        elif node.op_type == "Identity" and node.inputs[0] in constants:
            constants[node.outputs[0]] = constants[node.inputs[0]]
    static = _static_tensors(graph, constants)
    kept = [n for n in nodes if not all(t in static for t in n.outputs if t)]
    read = {t for n in kept for t in n.inputs if t} | {v.name for v in graph.output}
    folded = sorted(t for t in static & read if t not in constants)
    unknown = [t for n in kept for t in n.outputs if t and shapes.get(t) is None]
    unknown += [t for t in folded if shapes.get(t) is None]
    small = [t for t in folded if shapes.get(t) is not None and math.prod(shapes[t]) <= WEIGHT_LIMIT]
    values = {}
    if unknown or small:
        values = _run(light, list(dict.fromkeys(unknown + small)), constants)
    shapes.update({t: tuple(v.shape) for t, v in values.items()})
    constants.update({t: values[t] if t in values and values[t].size <= WEIGHT_LIMIT else None for t in folded})
    data_inputs = [v.name for v in graph.input if v.name not in constants]
    return OpGraph(kept, data_inputs, [v.name for v in graph.output], shapes, constants)


def graph_from_onnx(model: onnx.ModelProto | str | os.PathLike, input_size: Sequence[int] | None = None) -> OnnxGraph:
    """The ONNX-IR graph of an ONNX model (a ModelProto or a file path), in canonical form. Raises OnnxGraphError
    naming the operator when a shape cannot be found even by running the model."""
    return encode(canonicalize(op_graph_from_onnx(model, input_size)))


def export_onnx(module: nn.Module, input_size: Sequence[int], opset: int = OPSET) -> tuple[onnx.ModelProto, list]:
    """``module`` (in eval mode; its mode is restored) exported with a zero input of ``input_size`` through torch's
    TorchScript exporter, without its parameters: returns the model and the names of the graph inputs that stand for
    the parameters. Gradients stay enabled: without them torch takes fused fast paths (multi-head attention) that
    the exporter cannot write."""
    device = next(module.parameters(), torch.empty(0)).device
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter announces its own deprecation and tracer caveats
            torch.onnx.export(module, (torch.zeros(*input_size, device=device),), buffer, opset_version=opset,
                              dynamo=False, export_params=False, input_names=["input"])
    finally:
        module.train(was_training)
    model = onnx.load_from_string(buffer.getvalue())
    return model, [v.name for v in model.graph.input if v.name != "input"]


def op_graph_from_torch(module: nn.Module, input_size: Sequence[int], opset: int = OPSET) -> OpGraph:
    """The op graph (before the canonical form) of ``module`` run on an input of ``input_size``."""
    model, weight_inputs = export_onnx(module, input_size, opset)
    return op_graph_from_onnx(model, weight_inputs=weight_inputs)


def graph_from_torch(module: nn.Module, input_size: Sequence[int], opset: int = OPSET) -> OnnxGraph:
    """The ONNX-IR graph of ``module`` on an input of ``input_size``, e.g. (1, 3, 224, 224), in canonical form."""
    return encode(canonicalize(op_graph_from_torch(module, input_size, opset)))

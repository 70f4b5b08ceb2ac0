"""The ONNX-IR graph format: one node per operator of an ONNX model, with shapes from ONNX shape inference.

A graph has a dummy ``input`` node (index 0, producing the model's inputs), one node per operator in the model's
(topological) order, and a dummy ``output`` node (last, consuming the model's outputs). There is an edge from a
tensor's producer to each of its consumers. Weights are not nodes: initializers, ``Constant`` operators and operators
that read nothing but constants (e.g. the ``Identity`` copies of shared weights the TorchScript exporter emits) are
folded into the constants they produce, and a constant input makes no edge.

Node feature layout (one row per node, ``N_FEATURES`` = 19 columns):

    columns  name            value
    0        op type         index into OP_VOCAB (0: not in the vocabulary, see below)
    1-3      input 0 shape   (C/256, H/128, W/128) of the first data input
    4-6      input 1 shape   the same for the second data input
    7-9      output 0 shape  the same for the first output
    10-12    output 1 shape  the same for the second output
    13-18    attributes      Conv, ConvTranspose: (kernel_h/3, kernel_w/3, group/out_channels, dilation_h,
                             dilation_w, has_bias); pooling ops: (kernel_h/3, kernel_w/3, 0, 0, 0, 0), where a
                             global pool's kernel is its input's H x W; zeros for every other op

A shape drops the batch (first) dimension and keeps the next three, zero-padded: [N, C, H, W] -> (C, H, W),
[N, C] -> (C, 0, 0). Missing tensors (an op with one input, say) are zeros. Data inputs are the non-constant ones, so
a Conv's input 0 is its activation, never its weight. The dummy input node has the model inputs as its outputs, the
dummy output node the model outputs as its inputs.

OP_VOCAB is append-only: a new op goes at the end and VOCAB_VERSION goes up, so indices in stored graphs keep their
meaning. Operators outside it (or in a non-standard domain, named ``domain::op``) get index 0 and are counted in
``OnnxGraph.n_oov``; each graph with any warns once, naming them.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from iterators.caches import CacheError, read_own_cache
from iterators.graphs import GraphSet
from evaluation.ofa_manager import build_subnet
from iterators.safe_pickle import restricted_load
from iterators.search_space import Arch

VOCAB_VERSION = 1
OP_VOCAB: tuple[str, ...] = (
    "<oov>", "input", "output",
    "Conv", "ConvTranspose", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add", "Sub", "Div",
    "MatMul", "Gemm", "GlobalAveragePool", "AveragePool", "MaxPool", "Flatten", "Reshape", "Transpose", "Concat",
    "BatchNormalization", "Softmax", "ReduceMean", "Pad", "Squeeze", "Unsqueeze", "Gather", "Shape", "Slice",
    "Constant", "Identity", "Dropout", "Tanh", "Erf", "Pow", "Sqrt", "LayerNormalization", "Resize", "Split",
    "GlobalMaxPool", "LeakyRelu", "PRelu", "Elu", "Gelu", "Cast", "Expand", "Where", "Equal", "ConstantOfShape",
    "Range", "ReduceSum", "ReduceMax", "Neg", "Exp", "Log", "Reciprocal", "Min", "Max", "Abs", "Einsum",
    "InstanceNormalization", "GroupNormalization", "DepthToSpace", "SpaceToDepth", "Tile", "Upsample",
)
OP_INDEX = {op: i for i, op in enumerate(OP_VOCAB)}
OOV = 0

SHAPE_SCALE = (256.0, 128.0, 128.0)  # C, H, W
N_SHAPES = 4                         # input 0, input 1, output 0, output 1
SHAPE_COLUMNS = slice(1, 1 + 3 * N_SHAPES)
ATTR_COLUMNS = slice(SHAPE_COLUMNS.stop, SHAPE_COLUMNS.stop + 6)
N_FEATURES = ATTR_COLUMNS.stop
ENCODING_VERSION = 1  # bump when the feature layout changes; part of graph_from_arch's cache key

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
POOL_OPS = frozenset({"AveragePool", "MaxPool"})
GLOBAL_POOL_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool"})
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
OPSET = 17

Shape = tuple[int, ...]


class OnnxGraphError(ValueError):
    """A model that cannot be turned into an ONNX-IR graph."""


@dataclass
class OnnxGraph:
    x: np.ndarray         # float32 [n_nodes, N_FEATURES]
    edges: np.ndarray     # int64 [2, n_edges], graph-local node indices
    op_types: list[str]   # per node, "input" and "output" for the dummies
    n_oov: int            # operators outside OP_VOCAB


@dataclass
class _Op:
    """What the encoding needs of one node, whatever it was read from."""
    op_type: str
    inputs: list[Shape] = field(default_factory=list)   # data inputs only
    outputs: list[Shape] = field(default_factory=list)
    kernel: Sequence[int] = ()
    group: int = 1
    dilations: Sequence[int] = ()
    has_bias: bool = False


def _shape_columns(shape: Shape | None) -> list[float]:
    dims = list(shape[1:4]) if shape else []
    dims += [0] * (3 - len(dims))
    return [d / s for d, s in zip(dims, SHAPE_SCALE)]


def _pair(values: Sequence[int], default: int) -> tuple[int, int]:
    """The first two entries of a per-spatial-axis attribute; a missing axis is 0, a missing attribute ``default``."""
    values = list(values) or [default, default]
    return values[0], values[1] if len(values) > 1 else 0


def _attr_columns(op: _Op) -> list[float]:
    if op.op_type in CONV_OPS:
        kh, kw = _pair(op.kernel, 0)
        dh, dw = _pair(op.dilations, 1)
        out_channels = op.outputs[0][1] if op.outputs and len(op.outputs[0]) > 1 else 0
        return [kh / 3, kw / 3, op.group / out_channels if out_channels else 0.0, dh, dw, float(op.has_bias)]
    if op.op_type in POOL_OPS | GLOBAL_POOL_OPS:
        kernel = op.inputs[0][2:] if op.op_type in GLOBAL_POOL_OPS and op.inputs else op.kernel
        kh, kw = _pair(kernel, 0)
        return [kh / 3, kw / 3, 0.0, 0.0, 0.0, 0.0]
    return [0.0] * 6


def _encode(ops: list[_Op], edges: Iterable[tuple[int, int]], warn: bool = True) -> OnnxGraph:
    rows, oov = [], Counter()
    for op in ops:
        index = OP_INDEX.get(op.op_type, OOV)
        if index == OOV:
            oov[op.op_type] += 1
        shapes = (op.inputs + [None, None])[:2] + (op.outputs + [None, None])[:2]
        rows.append([index] + [v for s in shapes for v in _shape_columns(s)] + _attr_columns(op))
    if oov and warn:
        warnings.warn(_oov_message(oov), stacklevel=3)
    unique_edges = list(dict.fromkeys(edges))
    return OnnxGraph(np.asarray(rows, dtype=np.float32).reshape(-1, N_FEATURES),
                     np.asarray(unique_edges, dtype=np.int64).reshape(-1, 2).T.copy(),
                     [op.op_type for op in ops], sum(oov.values()))


def op_counts_text(counts: Counter) -> str:
    """'HardSwish x19, HardSigmoid x9': op types by count, most frequent first."""
    return ", ".join(f"{op} x{n}" for op, n in counts.most_common())


def _oov_message(oov: Counter) -> str:
    return (f"{sum(oov.values())} operator(s) outside OP_VOCAB (version {VOCAB_VERSION}) encoded as index {OOV}: "
            f"{op_counts_text(oov)}")


# --- ONNX models -----------------------------------------------------------------------------------------------

def _value_shape(value: onnx.ValueInfoProto) -> Shape | None:
    """Concrete shape of a tensor, None when unknown (the batch dimension may be symbolic: it is dropped anyway)."""
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    dims = []
    for axis, dim in enumerate(tensor.shape.dim):
        if not dim.HasField("dim_value") and axis > 0:
            return None
        dims.append(dim.dim_value)
    return tuple(dims)


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in STANDARD_DOMAINS else f"{node.domain}::{node.op_type}"


def _node_label(node: onnx.NodeProto, position: int) -> str:
    return f"operator {node.name or f'#{position}'!r} ({_op_name(node)})"


def _load_model(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(model)
    raise TypeError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")


def graph_from_onnx(model: onnx.ModelProto | str | os.PathLike) -> OnnxGraph:
    """The ONNX-IR graph of an ONNX model (a ModelProto or a file path), after ONNX shape inference.
    Raises OnnxGraphError naming the operator when an operator's output shape cannot be inferred."""
    graph = onnx.shape_inference.infer_shapes(_load_model(model), data_prop=True).graph
    shapes = {v.name: _value_shape(v) for v in [*graph.input, *graph.value_info, *graph.output]}
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    shapes.update({t.name: tuple(t.dims) for t in graph.initializer})

    model_inputs = [v.name for v in graph.input if v.name not in constants]
    for name in model_inputs:
        if shapes[name] is None:
            raise OnnxGraphError(f"model input {name!r} has no known shape")
    ops = [_Op("input", outputs=[shapes[n] for n in model_inputs])]
    producer = {name: 0 for name in model_inputs}
    edges = []
    for position, node in enumerate(graph.node):
        data_inputs = [t for t in node.input if t and t not in constants]
        if not data_inputs:  # computes a constant: fold it
            constants.update(node.output)
            continue
        for t in data_inputs:
            if t not in producer:
                raise OnnxGraphError(f"{_node_label(node, position)} reads {t!r}, which nothing produces before it")
            edges.append((producer[t], len(ops)))
        outputs = [t for t in node.output if t]
        for t in outputs:
            if shapes.get(t) is None:
                raise OnnxGraphError(f"{_node_label(node, position)}: the shape of its output {t!r} cannot be "
                                     f"inferred")
            producer[t] = len(ops)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight_shape = shapes.get(node.input[1]) if node.op_type in CONV_OPS else None
        kernel = attrs.get("kernel_shape") or (weight_shape or ())[2:]
        ops.append(_Op(_op_name(node),
                       inputs=[shapes[t] for t in data_inputs], outputs=[shapes[t] for t in outputs],
                       kernel=kernel, group=attrs.get("group", 1), dilations=attrs.get("dilations", ()),
                       has_bias=len(node.input) > 2 and node.input[2] != ""))
    model_outputs = [v.name for v in graph.output]
    edges += [(producer[t], len(ops)) for t in model_outputs if t in producer]
    ops.append(_Op("output", inputs=[shapes[t] for t in model_outputs if shapes.get(t) is not None]))
    return _encode(ops, edges)


def graph_from_torch(module: nn.Module, input_size: Sequence[int], opset: int = OPSET) -> OnnxGraph:
    """Export ``module`` (in eval mode, without gradients; its mode is restored) with a zero input of
    ``input_size``, e.g. (1, 3, 224, 224), through torch's TorchScript ONNX exporter, and encode the result."""
    device = next(module.parameters(), torch.empty(0)).device
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the exporter announces its own deprecation
            torch.onnx.export(module, (torch.zeros(*input_size, device=device),), buffer, opset_version=opset,
                              dynamo=False)
    finally:
        module.train(was_training)
    return graph_from_onnx(onnx.load_from_string(buffer.getvalue()))


def graph_from_arch(arch: Arch, cache_dir: str | os.PathLike = ".ofa_graph_cache") -> OnnxGraph:
    """The ONNX-IR graph of an OFA subnet at (1, 3, resolution, resolution), kept in ``cache_dir`` as one .npz per
    architecture (named by a hash of ``arch.key()`` and the encoding/vocabulary versions) and read from there next
    time."""
    key = f"onnx_ir:{ENCODING_VERSION}:{VOCAB_VERSION}:{arch.key()}"
    path = os.path.join(cache_dir, hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            return OnnxGraph(f["x"], f["edges"], f["op_types"].tolist(), int(f["n_oov"]))
    graph = graph_from_torch(build_subnet(arch), (1, 3, arch.resolution, arch.resolution))
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, key=np.array(key), x=graph.x, edges=graph.edges, op_types=np.array(graph.op_types, dtype=str),
                 n_oov=np.array(graph.n_oov))
    os.replace(tmp, path)
    return graph


def graphs_to_graphset(graphs: Sequence[OnnxGraph]) -> GraphSet:
    return GraphSet.from_lists([g.x for g in graphs], [g.edges for g in graphs])


def op_counts(graphs: Iterable[OnnxGraph]) -> Counter:
    """How often each op type (dummies included) occurs over ``graphs``."""
    counts = Counter()
    for g in graphs:
        counts.update(g.op_types)
    return counts


# --- Legacy pickles (the published ``*_onnx_ir_cache.pkl``) -------------------------------------------------------

class LegacyNode:
    """State of the original code's ``onnx_ir.node.Node``; rebuilt from pickles as plain data."""
    str_id: str
    name: str
    op_type: str
    inputs: list[dict]   # ONNX value infos in protobuf JSON form
    outputs: list[dict]
    attribute: Any       # protobuf-JSON attributes, as a list or a dict by name
    initializer: Any     # the node's weights, as a list of protobuf-JSON tensors or a dict by name


class LegacyGraph:
    """State of the original code's ``onnx_ir.graph.Graph``; rebuilt from pickles as plain data."""
    onnx_meta_info: Any
    metadata: Any
    nodes: Any                    # list of LegacyNode, or a dict of them by str_id
    src2dst: dict[str, list[str]]
    input_nodes: list[str]
    output_nodes: list[str]


LEGACY_CLASSES: dict[tuple[str, str], type] = {("onnx_ir.graph", "Graph"): LegacyGraph,
                                                ("onnx_ir.node", "Node"): LegacyNode}


def _json_shape(value: dict) -> Shape:
    """Shape of a protobuf-JSON value info; unknown dimensions read as 0."""
    dims = value.get("type", {}).get("tensorType", {}).get("shape", {}).get("dim", [])
    return tuple(int(d.get("dimValue", 0)) for d in dims)


def _json_attribute(value: Any) -> Any:
    """A protobuf-JSON attribute ({"name", "i" | "ints" | "f" | ...}) -> its value; any other value as is."""
    if not isinstance(value, dict):
        return value
    if "ints" in value:
        return [int(v) for v in value["ints"]]
    if "i" in value:
        return int(value["i"])
    return next((value[k] for k in ("f", "s", "floats", "strings") if k in value), None)


def _named(items: Any) -> dict[str, Any]:
    """A list of {"name": ...} dicts, or a dict by name, as a dict by name."""
    if isinstance(items, dict):
        return items
    return {item["name"]: item for item in items or () if isinstance(item, dict) and "name" in item}


def _data_inputs(node: LegacyNode) -> list[dict]:
    """The node's input value infos that are not its weights."""
    weights = _named(getattr(node, "initializer", None))
    return [v for v in node.inputs if v.get("name") not in weights]


def _legacy_op(node: LegacyNode) -> _Op:
    weights = _named(getattr(node, "initializer", None))
    attrs = {name: _json_attribute(v) for name, v in _named(getattr(node, "attribute", None)).items()}
    has_bias = len(node.inputs) > 2 or any("bias" in name.lower() for name in weights)
    return _Op(node.op_type, inputs=[_json_shape(v) for v in _data_inputs(node)],
               outputs=[_json_shape(v) for v in node.outputs], kernel=attrs.get("kernel_shape") or (),
               group=attrs.get("group") or 1, dilations=attrs.get("dilations") or (), has_bias=has_bias)


def _legacy_graph(graph: LegacyGraph, warn: bool = True) -> OnnxGraph:
    nodes = list(graph.nodes.values()) if isinstance(graph.nodes, dict) else list(graph.nodes)
    index = {node.str_id: i for i, node in enumerate(nodes, start=1)}
    by_id = dict(zip(index, nodes))
    sink = len(nodes) + 1

    def at(str_id: str) -> int:
        if str_id not in index:
            raise CacheError(f"legacy graph refers to node {str_id!r}, which it does not contain")
        return index[str_id]

    edges = [(0, at(i)) for i in graph.input_nodes]
    edges += [(at(src), at(dst)) for src, dsts in graph.src2dst.items() for dst in dsts]
    edges += [(at(o), sink) for o in graph.output_nodes]
    model_inputs = {v.get("name"): _json_shape(v) for i in graph.input_nodes for v in _data_inputs(by_id[i])}
    model_outputs = [_json_shape(v) for o in graph.output_nodes for v in by_id[o].outputs[:1]]
    ops = [_Op("input", outputs=list(model_inputs.values())), *map(_legacy_op, nodes),
           _Op("output", inputs=model_outputs)]
    return _encode(ops, edges, warn)


def read_legacy_onnx_cache(path: str | os.PathLike) -> list[dict]:
    """A published ONNX-IR cache (pickled list of dicts, each holding an ``onnx_ir.graph.Graph`` under "graph"),
    read through the restricted unpickler: every entry comes back with "graph" as an OnnxGraph and its other keys
    unchanged. Operators outside OP_VOCAB are reported in one warning for the whole file."""
    data = restricted_load(path, LEGACY_CLASSES)
    if not isinstance(data, list) or not all(isinstance(e, dict) and isinstance(e.get("graph"), LegacyGraph)
                                             for e in data):
        raise CacheError(f"{path}: expected a list of dicts, each with an onnx_ir graph under 'graph'")
    entries = [{**entry, "graph": _legacy_graph(entry["graph"], warn=False)} for entry in data]
    oov = Counter(op for e in entries for op in e["graph"].op_types if OP_INDEX.get(op, OOV) == OOV)
    if oov:
        warnings.warn(f"{path}: {_oov_message(oov)}", stacklevel=2)
    return entries


def graph_record(graph: OnnxGraph) -> dict:
    """An OnnxGraph as plain arrays for the JSON-lines cache."""
    return {"x": np.round(graph.x, 6).tolist(), "edges": graph.edges.tolist(), "op_types": graph.op_types}


def graph_from_record(record: dict) -> OnnxGraph:
    x = np.asarray(record["x"], dtype=np.float32).reshape(-1, N_FEATURES)
    ops = record["op_types"]
    return OnnxGraph(x, np.asarray(record["edges"], dtype=np.int64).reshape(2, -1), ops,
                     sum(OP_INDEX.get(op, OOV) == OOV for op in ops))


def load_graph_cache(path: str, family: str) -> tuple[list[OnnxGraph], list[dict]]:
    """Graphs and metric dicts of an onnx_ir cache: the toolkit's (.jsonl.gz) or a published pickle (.pkl)."""
    if path.endswith(".pkl"):
        entries = read_legacy_onnx_cache(path)
        graphs = [e.pop("graph") for e in entries]
        return graphs, [{k: v for k, v in e.items() if isinstance(v, (int, float))} for e in entries]
    cache = read_own_cache(path, family)
    if cache.graphs is None:
        raise CacheError(f"{path} is a {cache.header.get('format')} cache, not onnx_ir")
    return [graph_from_record(g) for g in cache.graphs], cache.entries

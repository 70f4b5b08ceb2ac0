"""The op vocabulary and the node feature layout of ONNX-IR graphs, and the encoding of an OpGraph into them.

An encoded graph has a dummy ``input`` node (index 0, producing the model's inputs), one node per operator in
topological order, and a dummy ``output`` node (last, consuming the model's outputs), with an edge from a tensor's
producer to each of its consumers. Weights are not nodes, and a constant input makes no edge.

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
meaning. The version also names the form the graphs are in (VOCAB_HISTORY): a predictor records the version of the
graphs it was trained on, and one trained on an older version keeps loading with that version's vocabulary.
Operators outside the vocabulary (or in a non-standard domain, named ``domain::op``) get index 0 and are counted in
``OnnxGraph.n_oov``; each graph with any warns once, naming them.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from iterators.graphs import GraphSet
from iterators.onnx_ir.ir import OpGraph, Shape

OP_VOCAB: tuple[str, ...] = (
    # version 1
    "<oov>", "input", "output",
    "Conv", "ConvTranspose", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add", "Sub", "Div",
    "MatMul", "Gemm", "GlobalAveragePool", "AveragePool", "MaxPool", "Flatten", "Reshape", "Transpose", "Concat",
    "BatchNormalization", "Softmax", "ReduceMean", "Pad", "Squeeze", "Unsqueeze", "Gather", "Shape", "Slice",
    "Constant", "Identity", "Dropout", "Tanh", "Erf", "Pow", "Sqrt", "LayerNormalization", "Resize", "Split",
    "GlobalMaxPool", "LeakyRelu", "PRelu", "Elu", "Gelu", "Cast", "Expand", "Where", "Equal", "ConstantOfShape",
    "Range", "ReduceSum", "ReduceMax", "Neg", "Exp", "Log", "Reciprocal", "Min", "Max", "Abs", "Einsum",
    "InstanceNormalization", "GroupNormalization", "DepthToSpace", "SpaceToDepth", "Tile", "Upsample",
    # version 2
    "Swish",
)
VOCAB_HISTORY = {  # version -> (vocabulary size, what the graphs of that version are)
    1: (69, "operators as exported, constants folded"),
    2: (70, "canonical form 1 (iterators/onnx_ir/canonical.py): one spelling per computation"),
}
VOCAB_VERSION = max(VOCAB_HISTORY)
assert VOCAB_HISTORY[VOCAB_VERSION][0] == len(OP_VOCAB), "a new op needs a new VOCAB_HISTORY entry"
OP_INDEX = {op: i for i, op in enumerate(OP_VOCAB)}
OOV = 0
DUMMY_OPS = frozenset({"input", "output"})

SHAPE_SCALE = (256.0, 128.0, 128.0)  # C, H, W
N_SHAPES = 4                         # input 0, input 1, output 0, output 1
SHAPE_COLUMNS = slice(1, 1 + 3 * N_SHAPES)
ATTR_COLUMNS = slice(SHAPE_COLUMNS.stop, SHAPE_COLUMNS.stop + 6)
N_FEATURES = ATTR_COLUMNS.stop
ENCODING_VERSION = 1  # bump when the feature layout changes

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
POOL_OPS = frozenset({"AveragePool", "MaxPool"})
GLOBAL_POOL_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool"})


def vocabulary(version: int = VOCAB_VERSION) -> tuple[str, ...]:
    """The op vocabulary of ``version`` (a prefix of OP_VOCAB)."""
    if version not in VOCAB_HISTORY:
        raise ValueError(f"unknown op vocabulary version {version}; this toolkit knows versions "
                         f"{', '.join(map(str, VOCAB_HISTORY))}")
    return OP_VOCAB[:VOCAB_HISTORY[version][0]]


class OnnxGraphError(ValueError):
    """A model that cannot be turned into an ONNX-IR graph."""


@dataclass
class OnnxGraph:
    x: np.ndarray         # float32 [n_nodes, N_FEATURES]
    edges: np.ndarray     # int64 [2, n_edges], graph-local node indices
    op_types: list[str]   # per node, "input" and "output" for the dummies
    n_oov: int            # operators outside OP_VOCAB
    vocab_version: int = VOCAB_VERSION  # the form the graph is in (VOCAB_HISTORY)


def _shape_columns(shape: Shape | None) -> list[float]:
    dims = list(shape[1:4]) if shape else []
    dims += [0] * (3 - len(dims))
    return [d / s for d, s in zip(dims, SHAPE_SCALE)]


def _pair(values: Sequence[int], default: int) -> tuple[int, int]:
    """The first two entries of a per-spatial-axis attribute; a missing axis is 0, a missing attribute ``default``."""
    values = list(values) or [default, default]
    return values[0], values[1] if len(values) > 1 else 0


def _attr_columns(op_type: str, attrs: dict, inputs: list[Shape | None], outputs: list[Shape | None],
                  weight: Shape | None, has_bias: bool) -> list[float]:
    if op_type in CONV_OPS:
        kh, kw = _pair(attrs.get("kernel_shape") or (weight or ())[2:], 0)
        dh, dw = _pair(attrs.get("dilations", ()), 1)
        out = outputs[0] if outputs else None
        out_channels = out[1] if out and len(out) > 1 else 0
        return [kh / 3, kw / 3, attrs.get("group", 1) / out_channels if out_channels else 0.0, dh, dw,
                float(has_bias)]
    if op_type in POOL_OPS | GLOBAL_POOL_OPS:
        kernel = (inputs[0] or ())[2:] if op_type in GLOBAL_POOL_OPS and inputs else attrs.get("kernel_shape", ())
        kh, kw = _pair(kernel, 0)
        return [kh / 3, kw / 3, 0.0, 0.0, 0.0, 0.0]
    return [0.0] * 6


def _row(op_type: str, inputs: list, outputs: list, attrs: dict | None = None, weight: Shape | None = None,
         has_bias: bool = False) -> list[float]:
    shapes = (inputs + [None, None])[:2] + (outputs + [None, None])[:2]
    return ([OP_INDEX.get(op_type, OOV)] + [v for s in shapes for v in _shape_columns(s)]
            + _attr_columns(op_type, attrs or {}, inputs, outputs, weight, has_bias))


def encode(graph: OpGraph, warn: bool = True) -> OnnxGraph:
    """The ONNX-IR encoding of ``graph``. Every node must read at least one data tensor (fold constant computations
    first: canonical.canonicalize does) and every tensor it touches must have a shape."""
    model_inputs = [graph.shapes.get(t) for t in graph.inputs]
    rows = [_row("input", [], model_inputs)]
    op_types = ["input"]
    producer = {t: 0 for t in graph.inputs}
    edges = []
    for node in graph.nodes:
        data = graph.data_inputs(node)
        label = f"operator {node.name or '#' + str(len(op_types))!r} ({node.op_type})"
        if not data:
            raise OnnxGraphError(f"{label} reads no data: fold constant computations before encoding")
        for t in data:
            if t not in producer:
                raise OnnxGraphError(f"{label} reads {t!r}, which nothing produces before it")
            edges.append((producer[t], len(op_types)))
        outputs = [t for t in node.outputs if t]
        for t in outputs + data:
            if graph.shapes.get(t) is None:
                raise OnnxGraphError(f"{label}: the shape of its tensor {t!r} is unknown")
        for t in outputs:
            producer[t] = len(op_types)
        weight = graph.shapes.get(node.inputs[1]) if node.op_type in CONV_OPS and len(node.inputs) > 1 else None
        has_bias = len(node.inputs) > 2 and node.inputs[2] != ""
        rows.append(_row(node.op_type, [graph.shapes[t] for t in data], [graph.shapes[t] for t in outputs],
                         node.attrs, weight, has_bias))
        op_types.append(node.op_type)
    edges += [(producer[t], len(op_types)) for t in graph.outputs if t in producer]
    rows.append(_row("output", [graph.shapes[t] for t in graph.outputs if graph.shapes.get(t) is not None], []))
    op_types.append("output")
    oov = Counter(op for op in op_types if op not in OP_INDEX)
    if oov and warn:
        warnings.warn(oov_message(oov), stacklevel=2)
    return OnnxGraph(np.asarray(rows, dtype=np.float32).reshape(-1, N_FEATURES),
                     np.asarray(list(dict.fromkeys(edges)), dtype=np.int64).reshape(-1, 2).T.copy(),
                     op_types, sum(oov.values()))


def op_counts_text(counts: Counter) -> str:
    """'HardSwish x19, HardSigmoid x9': op types by count, most frequent first."""
    return ", ".join(f"{op} x{n}" for op, n in counts.most_common())


def oov_message(oov: Counter) -> str:
    return (f"{sum(oov.values())} operator(s) outside OP_VOCAB (version {VOCAB_VERSION}) encoded as index {OOV}: "
            f"{op_counts_text(oov)}")


def unknown_ops(op_types: Iterable[str], known: Iterable[str]) -> Counter:
    """The operators of a graph (dummies left out) whose type is not in ``known``, by type."""
    known = set(known)
    return Counter(op for op in op_types if op not in DUMMY_OPS and op not in known)


def n_operators(graph: OnnxGraph) -> int:
    """Operators of the graph, the dummy input and output nodes left out."""
    return len(graph.op_types) - 2


def graphs_to_graphset(graphs: Sequence[OnnxGraph]) -> GraphSet:
    return GraphSet.from_lists([g.x for g in graphs], [g.edges for g in graphs])

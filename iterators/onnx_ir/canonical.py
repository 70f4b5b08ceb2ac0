"""The canonical form of op graphs: one spelling per computation, applied to every graph at conversion.

Exporters spell one computation many ways: OFA's h-swish comes out of torch as Add/Clip/Mul/Div, torchvision's as
HardSwish; OFA pools with two ReduceMeans, torchvision with GlobalAveragePool; a linear layer is a Gemm or a
MatMul and an Add. A predictor trained on one spelling sees the others as unknown operators, so every front end
(ONNX files, torch modules, OFA subnets, the published pickles) hands its graph to ``canonicalize`` before encoding.

Canonical form 1 (op vocabulary version 2): the rules of RULES, applied in this order.

    rule                matched                                                          becomes
    constants           Constant; any operator that reads only constants                 folded into the constants
    pass-through        Identity; Dropout (its mask unread)                              removed
    batch norm          Conv/ConvTranspose -> BatchNormalization (its only reader)       the Conv, with a bias
    fully connected     MatMul(x, W) with a constant 2-D W, or Gemm(x, W), either one    Gemm(x, W[, b]), whatever
                        followed by Add(b) with a constant b                             the rank of x
    h-swish             Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(6) or Mul(1/6)       HardSwish(x)
    h-sigmoid           Add(x, 3) -> Clip(0, 6) -> Div(6) or Mul(1/6)                    HardSigmoid(x)
    h-swish             Mul(x, HardSigmoid(x)), alpha 1/6 and beta 1/2 (HardSwish        HardSwish(x)
                        before opset 14, or x * (relu6(x + 3) / 6) after the rule above)
    swish (SiLU)        Mul(x, Sigmoid(x))                                               Swish(x)
    GELU                Div(x, sqrt 2) or Mul(x, 1/sqrt 2) -> Erf -> Add(1), multiplied  Gelu(x)
                        by x and by 0.5 in any order
    reductions          ReduceMean (ReduceMax) whose only reader is another over other   one ReduceMean (ReduceMax)
                        axes with the same keepdims (OFA's x.mean(3).mean(2))            over both axes
    global pooling      ReduceMean (ReduceMax) over H and W of an NCHW tensor;           GlobalAveragePool(x)
                        AveragePool (MaxPool) whose kernel is its whole unpadded input   (GlobalMaxPool), then a
                                                                                         Flatten if H, W are dropped
    views               Reshape, Flatten, Squeeze, Unsqueeze in a row                    one Reshape
                        any of them keeping its input's shape                            removed
    flatten             a view from [N, d1, d2, ...] to [N, d1 * d2 * ...]               Flatten(x)
    dead operators      nothing reads any of their outputs                               removed

Spellings already canonical stay as they are: HardSwish, HardSigmoid, GlobalAveragePool, Flatten(axis 1), Gemm with
its bias, Gelu (opset 20). The first h-swish rule runs before the h-sigmoid one, so x * relu6(x + 3) / 6 is one
HardSwish, while OFA's squeeze-and-excitation gate, Mul(x, HardSigmoid(y)) with y another tensor, stays a Mul.
A pattern matches only where its inner tensors have no other reader, so a rewrite never changes what the rest of
the graph computes. Constants are compared with a relative tolerance of 1e-3 (exporters write 1/6 and sqrt 2 in
float32). Shapes are those the graph holds (parsing.py finds every one), so rules that look at shapes (pooling,
views) see the model at its input size.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from iterators.onnx_ir.ir import Node, OpGraph

_TOLERANCE = 1e-3
_VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


class _View:
    """Readers and producers of every tensor of a graph, and its small constants, for matching patterns."""

    def __init__(self, graph: OpGraph):
        self.graph = graph
        self.readers = graph.consumers()
        self.producer = graph.producers()
        self.model_outputs = set(graph.outputs)

    def only_reader(self, tensor: str, op_types: tuple[str, ...]) -> Node | None:
        """The single node that reads ``tensor`` when it has one of ``op_types`` and the tensor is not a model
        output (so that removing the tensor loses nothing)."""
        readers = self.readers.get(tensor, [])
        if len(readers) == 1 and tensor not in self.model_outputs and readers[0].op_type in op_types:
            return readers[0]
        return None

    def value(self, tensor: str) -> np.ndarray | None:
        return self.graph.constants.get(tensor) if tensor else None

    def is_scalar(self, tensor: str, target: float) -> bool:
        v = self.value(tensor)
        return (v is not None and v.size == 1 and np.issubdtype(v.dtype, np.number)
                and math.isclose(float(v.reshape(-1)[0]), target, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE))

    def split_scalar(self, node: Node, target: float) -> str | None:
        """For a binary node with a data operand and the constant ``target``, the data operand."""
        if len(node.inputs) != 2:
            return None
        a, b = node.inputs
        if self.is_scalar(b, target) and a not in self.graph.constants:
            return a
        if node.op_type in ("Add", "Mul") and self.is_scalar(a, target) and b not in self.graph.constants:
            return b
        return None

    def other_operand(self, node: Node, tensor: str) -> str | None:
        """The operand of the binary ``node`` besides ``tensor``."""
        if len(node.inputs) != 2 or tensor not in node.inputs:
            return None
        a, b = node.inputs
        return b if a == tensor else a

    def scaled_by_sixth(self, tensor: str) -> Node | None:
        """The node computing ``tensor / 6`` (Div by 6 or Mul by 1/6), when it is the tensor's only reader."""
        node = self.only_reader(tensor, ("Div", "Mul"))
        if node is None:
            return None
        target = 6.0 if node.op_type == "Div" else 1 / 6
        return node if self.split_scalar(node, target) == tensor else None

    def is_relu6(self, node: Node) -> bool:
        """Clip to [0, 6], bounds as inputs (opset >= 11) or attributes."""
        if node.op_type != "Clip":
            return False
        low, high = (node.inputs + ["", ""])[1:3]
        low_ok = self.is_scalar(low, 0.0) if low else math.isclose(node.attrs.get("min", math.nan), 0.0)
        high_ok = self.is_scalar(high, 6.0) if high else math.isclose(node.attrs.get("max", math.nan), 6.0)
        return low_ok and high_ok

    def axes(self, node: Node) -> list[int] | None:
        """The normalised axes of a reduction (attribute before opset 18, input since), None when unknown."""
        rank = len(self.graph.shapes.get(node.inputs[0]) or ())
        if not rank:
            return None
        if "axes" in node.attrs:
            axes = node.attrs["axes"]
        elif len(node.inputs) > 1 and node.inputs[1]:
            value = self.value(node.inputs[1])
            if value is None:
                return None
            axes = value.reshape(-1).tolist()
        else:
            axes = [] if node.attrs.get("noop_with_empty_axes") else list(range(rank))
        return sorted({int(a) % rank for a in axes})


class _Rewrite:
    """Collects pattern replacements over one pass, then rebuilds the node list: each replacement's new nodes go
    where its last matched node was, so the order stays topological."""

    def __init__(self, graph: OpGraph):
        self.graph = graph
        self.position = {id(node): i for i, node in enumerate(graph.nodes)}
        self.removed: set[int] = set()
        self.inserted: dict[int, list[Node]] = {}

    def free(self, *nodes: Node) -> bool:
        return not any(id(n) in self.removed for n in nodes)

    def replace(self, matched: list[Node], new: list[Node]) -> None:
        last = max(matched, key=lambda n: self.position[id(n)])
        self.removed.update(id(n) for n in matched)
        self.inserted[id(last)] = new

    def apply(self) -> bool:
        if not self.removed:
            return False
        nodes = []
        for node in self.graph.nodes:
            nodes += self.inserted.get(id(node), [])
            if id(node) not in self.removed:
                nodes.append(node)
        self.graph.nodes = nodes
        return True


def _rename(graph: OpGraph, renames: dict[str, str]) -> None:
    def resolve(t: str) -> str:
        while t in renames:
            t = renames[t]
        return t
    for node in graph.nodes:
        node.inputs = [resolve(t) for t in node.inputs]
    graph.outputs = [resolve(t) for t in graph.outputs]


def fold_constants(graph: OpGraph) -> None:
    """Operators that read only constants compute constants: their outputs join ``graph.constants``."""
    kept = []
    for node in graph.nodes:
        if graph.data_inputs(node):
            kept.append(node)
            continue
        for t in node.outputs:
            if node.op_type == "Constant":
                value = node.attrs.get("value")
            elif node.op_type == "Identity":
                value = graph.constants.get(node.inputs[0])
            else:
                value = None
            graph.constants[t] = value
            if value is not None:
                graph.shapes[t] = tuple(value.shape)
    graph.nodes = kept


def remove_pass_through(graph: OpGraph) -> None:
    readers = graph.consumers()
    renames, kept = {}, []
    for node in graph.nodes:
        drop = node.op_type == "Identity" or (node.op_type == "Dropout" and not any(
            readers.get(t) or t in graph.outputs for t in node.outputs[1:] if t))
        if drop:
            renames[node.outputs[0]] = node.inputs[0]
        else:
            kept.append(node)
    graph.nodes = kept
    _rename(graph, renames)


def fold_batch_norm(graph: OpGraph) -> None:
    view = _View(graph)
    renames, removed = {}, set()
    for bn in graph.nodes:
        if bn.op_type != "BatchNormalization" or any(view.readers.get(t) for t in bn.outputs[1:] if t):
            continue
        conv = view.producer.get(bn.inputs[0])
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose") or view.only_reader(
                bn.inputs[0], ("BatchNormalization",)) is not bn:
            continue
        if len(conv.inputs) < 3 or not conv.inputs[2]:
            conv.inputs = conv.inputs[:2] + [bn.inputs[2]]  # BN's shift is the folded bias's shape, [C]
        removed.add(id(bn))
        renames[bn.outputs[0]] = conv.outputs[0]
    graph.nodes = [n for n in graph.nodes if id(n) not in removed]
    _rename(graph, renames)


def fully_connected(graph: OpGraph) -> bool:
    view, rewrite = _View(graph), _Rewrite(graph)
    for node in graph.nodes:
        if node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2 or node.inputs[0] in graph.constants:
            continue
        weight = node.inputs[1]
        if weight not in graph.constants or (node.op_type == "MatMul" and len(graph.shapes.get(weight) or ()) != 2):
            continue
        inputs, matched, output = node.inputs[:2], [node], node.outputs[0]
        if len(node.inputs) < 3 or not node.inputs[2]:
            add = view.only_reader(output, ("Add",))
            bias = view.other_operand(add, output) if add else None
            if bias in graph.constants and len(graph.shapes.get(bias) or ()) <= 2:
                inputs, matched, output = inputs + [bias], matched + [add], add.outputs[0]
        else:
            inputs = node.inputs
        if node.op_type == "Gemm" and len(matched) == 1:
            continue  # already canonical
        rewrite.replace(matched, [Node("Gemm", inputs, [output], node.attrs if node.op_type == "Gemm" else {},
                                       node.name)])
    return rewrite.apply()


def _gated(view: _View, gate: Node, x: str) -> Node | None:
    """The Mul that multiplies ``x`` by ``gate``'s output, when it is the gate's only reader."""
    mul = view.only_reader(gate.outputs[0], ("Mul",))
    return mul if mul is not None and view.other_operand(mul, gate.outputs[0]) == x else None


def hard_swish_chain(graph: OpGraph) -> bool:
    """x * relu6(x + 3) / 6 as OFA's Hswish exports it: Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(6)."""
    view, rewrite = _View(graph), _Rewrite(graph)
    for add in graph.nodes:
        x = view.split_scalar(add, 3.0) if add.op_type == "Add" else None
        clip = view.only_reader(add.outputs[0], ("Clip",)) if x else None
        mul = _gated(view, clip, x) if clip is not None and view.is_relu6(clip) else None
        div = view.scaled_by_sixth(mul.outputs[0]) if mul else None
        if div is not None:
            rewrite.replace([add, clip, mul, div], [Node("HardSwish", [x], div.outputs, name=add.name)])
    return rewrite.apply()


def hard_sigmoid(graph: OpGraph) -> bool:
    """relu6(x + 3) / 6: Add(x, 3) -> Clip(0, 6) -> Div(6)."""
    view, rewrite = _View(graph), _Rewrite(graph)
    for add in graph.nodes:
        x = view.split_scalar(add, 3.0) if add.op_type == "Add" else None
        clip = view.only_reader(add.outputs[0], ("Clip",)) if x else None
        div = view.scaled_by_sixth(clip.outputs[0]) if clip is not None and view.is_relu6(clip) else None
        if div is not None:
            rewrite.replace([add, clip, div], [Node("HardSigmoid", [x], div.outputs, {"alpha": 1 / 6, "beta": 0.5},
                                                    add.name)])
    return rewrite.apply()


def hard_swish_gate(graph: OpGraph) -> bool:
    """x * hardsigmoid(x), with the h-sigmoid of h-swish (alpha 1/6, beta 1/2)."""
    view, rewrite = _View(graph), _Rewrite(graph)
    for node in graph.nodes:
        if node.op_type != "HardSigmoid" or not (
                math.isclose(node.attrs.get("alpha", 0.2), 1 / 6, rel_tol=_TOLERANCE)
                and math.isclose(node.attrs.get("beta", 0.5), 0.5, rel_tol=_TOLERANCE)):
            continue
        mul = _gated(view, node, node.inputs[0])
        if mul is not None:
            rewrite.replace([node, mul], [Node("HardSwish", node.inputs[:1], mul.outputs, name=node.name)])
    return rewrite.apply()


def swish(graph: OpGraph) -> bool:
    """x * sigmoid(x)."""
    view, rewrite = _View(graph), _Rewrite(graph)
    for sigmoid in graph.nodes:
        mul = _gated(view, sigmoid, sigmoid.inputs[0]) if sigmoid.op_type == "Sigmoid" else None
        if mul is not None:
            rewrite.replace([sigmoid, mul], [Node("Swish", sigmoid.inputs[:1], mul.outputs, name=sigmoid.name)])
    return rewrite.apply()


def _gelu_product(view: _View, add: Node, x: str) -> list[Node] | None:
    """The Muls that multiply (1 + erf) by x and by 0.5, in the orders exporters write, the last one last."""
    first = view.only_reader(add.outputs[0], ("Mul",))
    other = view.other_operand(first, add.outputs[0]) if first else None
    if other is None:
        return None
    half = view.producer.get(other)
    if half is not None and half.op_type == "Mul" and view.split_scalar(half, 0.5) == x \
            and view.only_reader(other, ("Mul",)) is first:
        return [half, first]  # (1 + erf) * (x * 0.5)
    second = view.only_reader(first.outputs[0], ("Mul",))
    last = view.other_operand(second, first.outputs[0]) if second else None
    if last is not None and ((other == x and view.is_scalar(last, 0.5)) or (view.is_scalar(other, 0.5) and last == x)):
        return [first, second]  # (1 + erf) * x * 0.5 or (1 + erf) * 0.5 * x
    return None


def gelu(graph: OpGraph) -> bool:
    """x * 0.5 * (1 + erf(x / sqrt 2)), torch's export of the exact GELU before opset 20."""
    view, rewrite = _View(graph), _Rewrite(graph)
    for erf in graph.nodes:
        scale = view.producer.get(erf.inputs[0]) if erf.op_type == "Erf" else None
        if scale is None or scale.op_type not in ("Div", "Mul") or view.only_reader(erf.inputs[0], ("Erf",)) is None:
            continue
        x = view.split_scalar(scale, math.sqrt(2) if scale.op_type == "Div" else 1 / math.sqrt(2))
        add = view.only_reader(erf.outputs[0], ("Add",))
        if x is None or add is None or view.split_scalar(add, 1.0) != erf.outputs[0]:
            continue
        product = _gelu_product(view, add, x)
        if product is not None and rewrite.free(scale, *product):
            rewrite.replace([scale, erf, add, *product], [Node("Gelu", [x], product[-1].outputs, name=erf.name)])
    return rewrite.apply()


def merge_reductions(graph: OpGraph) -> bool:
    """ReduceMean(a) -> ReduceMean(b) (the first's only reader, same keepdims) -> one ReduceMean over a and b."""
    view, rewrite = _View(graph), _Rewrite(graph)
    for first in graph.nodes:
        if first.op_type not in ("ReduceMean", "ReduceMax") or not rewrite.free(first):
            continue
        second = view.only_reader(first.outputs[0], (first.op_type,))
        keep = first.attrs.get("keepdims", 1)
        if second is None or second.attrs.get("keepdims", 1) != keep or not rewrite.free(second):
            continue
        axes, later = view.axes(first), view.axes(second)
        if axes is None or later is None:
            continue
        rank = len(graph.shapes[first.inputs[0]])
        remaining = list(range(rank)) if keep else [a for a in range(rank) if a not in axes]
        merged = sorted(set(axes) | {remaining[a] for a in later})
        rewrite.replace([first, second], [Node(first.op_type, first.inputs[:1], second.outputs,
                                               {"axes": merged, "keepdims": keep}, first.name)])
    return rewrite.apply()


def global_pooling(graph: OpGraph) -> bool:
    view, rewrite = _View(graph), _Rewrite(graph)
    pooled_by = {"ReduceMean": "GlobalAveragePool", "AveragePool": "GlobalAveragePool",
                 "ReduceMax": "GlobalMaxPool", "MaxPool": "GlobalMaxPool"}
    for node in graph.nodes:
        if node.op_type not in pooled_by:
            continue
        shape = graph.shapes.get(node.inputs[0]) or ()
        if len(shape) != 4:
            continue
        if node.op_type.startswith("Reduce"):
            if view.axes(node) != [2, 3]:
                continue
            keep = node.attrs.get("keepdims", 1)
        else:
            pads = node.attrs.get("pads", [0, 0, 0, 0])
            if (list(node.attrs.get("kernel_shape", ())) != list(shape[2:]) or any(pads) or len(node.outputs) > 1
                    or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID")):
                continue
            keep = 1
        out = node.outputs[0]
        if keep:
            rewrite.replace([node], [Node(pooled_by[node.op_type], node.inputs[:1], [out], name=node.name)])
        else:
            pooled = f"{out}/pooled"
            graph.shapes[pooled] = tuple(shape[:2]) + (1, 1)
            rewrite.replace([node], [Node(pooled_by[node.op_type], node.inputs[:1], [pooled], name=node.name),
                                     Node("Flatten", [pooled], [out], {"axis": 1}, node.name)])
    return rewrite.apply()


def merge_reshapes(graph: OpGraph) -> bool:
    """Views in a row (Reshape, Flatten, Squeeze, Unsqueeze, each the previous one's only reader) are one Reshape
    from the first one's input shape to the last one's output shape; a view that keeps its input's shape is removed."""
    view, rewrite = _View(graph), _Rewrite(graph)
    renames = {}
    for first in graph.nodes:
        if first.op_type not in _VIEWS or not rewrite.free(first) or not first.inputs:
            continue
        second = view.only_reader(first.outputs[0], _VIEWS)
        if second is not None and second.inputs[0] == first.outputs[0] and rewrite.free(second):
            rewrite.replace([first, second], [Node("Reshape", first.inputs[:1], second.outputs[:1], name=first.name)])
        elif second is None and graph.shapes.get(first.inputs[0]) == graph.shapes.get(first.outputs[0]) and \
                graph.shapes.get(first.inputs[0]) is not None:
            rewrite.replace([first], [])
            renames[first.outputs[0]] = first.inputs[0]
    changed = rewrite.apply()
    _rename(graph, renames)
    return changed


def flatten(graph: OpGraph) -> bool:
    rewrite = _Rewrite(graph)
    for node in graph.nodes:
        if node.op_type not in ("Flatten", "Reshape", "Squeeze") or not node.inputs or not node.outputs:
            continue
        before, after = graph.shapes.get(node.inputs[0]), graph.shapes.get(node.outputs[0])
        if not before or not after or len(before) < 3 or len(after) != 2:
            continue
        if after[0] == before[0] and after[1] == math.prod(before[1:]) and (
                node.op_type != "Flatten" or node.attrs.get("axis", 1) != 1 or len(node.inputs) > 1):
            rewrite.replace([node], [Node("Flatten", node.inputs[:1], node.outputs[:1], {"axis": 1}, node.name)])
    return rewrite.apply()


def remove_dead(graph: OpGraph) -> None:
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(t in live for t in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    graph.nodes = kept[::-1]


RULES: tuple[Callable[[OpGraph], object], ...] = (
    fold_constants, remove_pass_through, fold_batch_norm, fully_connected, hard_swish_chain, hard_sigmoid,
    hard_swish_gate, swish, gelu, merge_reductions, global_pooling, merge_reshapes, flatten, remove_dead)
REPEATED = (merge_reductions, merge_reshapes)  # applied until nothing changes: chains merge pair by pair


def canonicalize(graph: OpGraph) -> OpGraph:
    """``graph`` in canonical form (rewritten in place and returned)."""
    for rule in RULES:
        if rule in REPEATED:
            while rule(graph):
                pass
        else:
            rule(graph)
    return graph

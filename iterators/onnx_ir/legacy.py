"""The published ONNX-IR caches (``*_onnx_ir_cache.pkl`` of the original AutoBuild code), read without its code.

Their graphs are pickled ``onnx_ir.graph.Graph`` objects holding ``onnx_ir.node.Node`` s, whose fields are ONNX
value infos, attributes and tensors in protobuf-JSON form. The restricted unpickler rebuilds them as the plain-data
classes below; each becomes an OpGraph (tensors connected by name), goes through the same canonical form as every
other graph, and is encoded.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Any

import numpy as np

from iterators.caches import CacheError
from iterators.onnx_ir.canonical import canonicalize
from iterators.onnx_ir.features import OP_INDEX, OnnxGraph, encode, oov_message
from iterators.onnx_ir.ir import WEIGHT_LIMIT, Node, OpGraph, Shape
from iterators.safe_pickle import restricted_load

DUMMY_TYPES = ("input_dummy", "output_dummy")  # the original code's own boundary nodes, when a pickle has them


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


def _json_tensor(tensor: Any) -> np.ndarray | None:
    """The value of a small protobuf-JSON tensor, None for a large one or one stored without its data."""
    if not isinstance(tensor, dict) or int(np.prod([int(d) for d in tensor.get("dims", [])])) > WEIGHT_LIMIT:
        return None
    from google.protobuf.json_format import ParseDict
    from onnx import TensorProto, numpy_helper
    try:
        return numpy_helper.to_array(ParseDict(tensor, TensorProto(), ignore_unknown_fields=True))
    except Exception:  # no data stored, or not a tensor after all: the shape is all there is
        return None


def _json_attribute(value: Any) -> Any:
    """A protobuf-JSON attribute ({"name", "i" | "ints" | "f" | "t" | ...}) -> its value; any other value as is."""
    if not isinstance(value, dict):
        return value
    if "ints" in value:
        return [int(v) for v in value["ints"]]
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "t" in value:
        return _json_tensor(value["t"])
    return next((value[k] for k in ("s", "floats", "strings") if k in value), None)


def _named(items: Any) -> dict[str, Any]:
    """A list of {"name": ...} dicts, or a dict by name, as a dict by name."""
    if isinstance(items, dict):
        return items
    return {item["name"]: item for item in items or () if isinstance(item, dict) and "name" in item}


def _tensor_name(key: str, tensor: Any) -> str:
    return tensor.get("name", key) if isinstance(tensor, dict) else key


def legacy_op_graph(graph: LegacyGraph) -> OpGraph:
    """The op graph of a legacy graph: tensors are connected by name, weights come from each node's initializers."""
    legacy_nodes = list(graph.nodes.values()) if isinstance(graph.nodes, dict) else list(graph.nodes)
    by_id = {node.str_id: node for node in legacy_nodes}
    for str_id in [*graph.input_nodes, *graph.output_nodes]:
        if str_id not in by_id:
            raise CacheError(f"legacy graph refers to node {str_id!r}, which it does not contain")
    shapes, constants, nodes, model_inputs, model_outputs = {}, {}, [], [], []
    for node in legacy_nodes:
        weights = {_tensor_name(k, t): t for k, t in _named(getattr(node, "initializer", None)).items()}
        for name, tensor in weights.items():
            constants[name] = _json_tensor(tensor)
            shapes[name] = tuple(int(d) for d in tensor.get("dims", [])) if isinstance(tensor, dict) else None
        for value in [*node.inputs, *node.outputs]:
            shapes.setdefault(value.get("name", ""), _json_shape(value))
        inputs = [v.get("name", "") for v in node.inputs]
        outputs = [v.get("name", "") for v in node.outputs]
        if node.op_type == "input_dummy":
            model_inputs += outputs
            continue
        if node.op_type == "output_dummy":
            model_outputs += inputs
            continue
        attrs = {name: _json_attribute(v) for name, v in _named(getattr(node, "attribute", None)).items()}
        nodes.append(Node(node.op_type, inputs + [w for w in weights if w not in inputs], outputs, attrs,
                          getattr(node, "name", "")))
    produced = {t for n in nodes for t in n.outputs} | set(model_inputs)
    for n in nodes:  # what no node produces and no weight holds is read from the model's input
        model_inputs += [t for t in n.inputs if t and t not in produced and t not in constants
                         and t not in model_inputs]
    if not model_outputs:
        model_outputs = [by_id[i].outputs[0].get("name", "") for i in graph.output_nodes
                         if by_id[i].op_type not in DUMMY_TYPES and by_id[i].outputs]
    return OpGraph(nodes, model_inputs, model_outputs, shapes, constants)


def read_legacy_onnx_cache(path: str | os.PathLike) -> list[dict]:
    """A published ONNX-IR cache (pickled list of dicts, each holding an ``onnx_ir.graph.Graph`` under "graph"),
    read through the restricted unpickler: every entry comes back with "graph" as an OnnxGraph in canonical form and
    its other keys unchanged. Operators outside OP_VOCAB are reported in one warning for the whole file."""
    data = restricted_load(path, LEGACY_CLASSES)
    if not isinstance(data, list) or not all(isinstance(e, dict) and isinstance(e.get("graph"), LegacyGraph)
                                             for e in data):
        raise CacheError(f"{path}: expected a list of dicts, each with an onnx_ir graph under 'graph'")
    entries = [{**entry, "graph": encode(canonicalize(legacy_op_graph(entry["graph"])), warn=False)}
               for entry in data]
    oov = Counter(op for e in entries for op in e["graph"].op_types if op not in OP_INDEX)
    if oov:
        warnings.warn(f"{path}: {oov_message(oov)}", stacklevel=2)
    return entries

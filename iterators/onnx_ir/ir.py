"""The tensor-level op graph every front end produces and the canonical form rewrites, before it is encoded.

An ``OpGraph`` is a list of ``Node`` s in topological order that read and write named tensors, the names of the
model's data inputs and outputs, every tensor's shape and the set of constant tensors (weights, initializers,
folded ``Constant`` s) with their value where it is small enough to keep (the canonical form reads scalars such as
h-swish's 3 and 6 and the axes of a reduction) and None where only its shape is known.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Shape = tuple[int, ...]
WEIGHT_LIMIT = 64  # constants of more elements (weights) keep only their shape; smaller ones keep their value


@dataclass
class Node:
    op_type: str                     # "domain::op" for an operator outside the standard ONNX domain
    inputs: list[str]                # tensor names in ONNX order, "" for an omitted optional input
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class OpGraph:
    nodes: list[Node]
    inputs: list[str]                            # the model's data inputs
    outputs: list[str]
    shapes: dict[str, Shape | None]              # None: unknown
    constants: dict[str, np.ndarray | None]      # constant tensors: value, or None when only the shape is kept

    def data_inputs(self, node: Node) -> list[str]:
        """The inputs of ``node`` that carry data (neither omitted nor constant)."""
        return [t for t in node.inputs if t and t not in self.constants]

    def consumers(self) -> dict[str, list[Node]]:
        """Tensor name -> the nodes that read it (once per node)."""
        readers = defaultdict(list)
        for node in self.nodes:
            for t in dict.fromkeys(node.inputs):
                if t:
                    readers[t].append(node)
        return readers

    def producers(self) -> dict[str, Node]:
        return {t: node for node in self.nodes for t in node.outputs if t}


def chain(parts: list[OpGraph]) -> OpGraph:
    """Graphs of modules run one after another (each with one data input and one output) as one graph: part i's
    input becomes part i-1's output. Tensor names get a per-part prefix so that the parts cannot clash."""
    if not parts:
        raise ValueError("chain() needs at least one graph")
    for i, part in enumerate(parts):
        if len(part.inputs) != 1 or len(part.outputs) != 1:
            raise ValueError(f"part {i} has {len(part.inputs)} inputs and {len(part.outputs)} outputs; chain() "
                             f"joins graphs with one of each")
    nodes, shapes, constants = [], {}, {}
    previous = None
    for i, part in enumerate(parts):
        def rename(t: str, i=i, part=part, previous=previous) -> str:
            if not t:
                return t
            return previous if previous is not None and t == part.inputs[0] else f"{i}/{t}"
        nodes += [Node(n.op_type, [rename(t) for t in n.inputs], [rename(t) for t in n.outputs], n.attrs, n.name)
                  for n in part.nodes]
        shapes.update({rename(t): s for t, s in part.shapes.items()})
        constants.update({rename(t): v for t, v in part.constants.items()})
        previous = rename(part.outputs[0])
    return OpGraph(nodes, [f"0/{parts[0].inputs[0]}"], [previous], shapes, constants)

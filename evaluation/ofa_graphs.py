"""OFA subnets as ONNX-IR op graphs, converted once and kept on disk.

An OFA subnet is a chain of modules: the first convolution, the blocks, the head. Each distinct module (by its
structure, ``repr``) at its input shape is exported to ONNX once per process and its op graph kept in memory; a
subnet's graph is the chain of its modules' graphs, in canonical form. That is the graph of exporting the whole
subnet (tests/test_onnx_ir.py checks it), but random subnets share most of their modules, so converting one costs a
few milliseconds once the common modules have been seen, instead of a second for the whole export.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
from ofa.imagenet_classification.networks import MobileNetV3, ProxylessNASNets
from torch import nn

from evaluation.ofa_manager import build_subnet
from iterators.onnx_ir.canonical import canonicalize
from iterators.onnx_ir.features import ENCODING_VERSION, VOCAB_VERSION, OnnxGraph, encode
from iterators.onnx_ir.ir import OpGraph, Shape, chain
from iterators.onnx_ir.parsing import op_graph_from_torch
from iterators.search_space import Arch

CACHE_DIR = ".ofa_graph_cache"
_module_graphs: dict[tuple[str, Shape], OpGraph] = {}


def subnet_modules(net: nn.Module) -> list[nn.Module]:
    """The modules an OFA subnet runs one after another (its ``forward``, with the view to a vector as a Flatten)."""
    if isinstance(net, MobileNetV3):
        return [net.first_conv, *net.blocks, net.final_expand_layer, net.global_avg_pool, net.feature_mix_layer,
                nn.Flatten(), net.classifier]
    if isinstance(net, ProxylessNASNets):
        head = [net.feature_mix_layer] if net.feature_mix_layer is not None else []
        return [net.first_conv, *net.blocks, *head, net.global_avg_pool, net.classifier]
    raise TypeError(f"not an OFA subnet: {type(net).__name__}")


def _module_graph(module: nn.Module, input_size: Shape) -> OpGraph:
    key = (repr(module), tuple(input_size))
    if key not in _module_graphs:
        _module_graphs[key] = op_graph_from_torch(module, input_size)
    return _module_graphs[key]


def subnet_graph(net: nn.Module, resolution: int) -> OnnxGraph:
    """The ONNX-IR graph of an OFA subnet on a (1, 3, resolution, resolution) input, from its modules' graphs."""
    parts, size = [], (1, 3, resolution, resolution)
    for module in subnet_modules(net):
        part = _module_graph(module, size)
        parts.append(part)
        size = part.shapes[part.outputs[0]]
    return encode(canonicalize(chain(parts)))


def graph_from_arch(arch: Arch, cache_dir: str | os.PathLike = CACHE_DIR) -> OnnxGraph:
    """The ONNX-IR graph of an OFA subnet at (1, 3, resolution, resolution), kept in ``cache_dir`` as one .npz per
    architecture (named by a hash of ``arch.key()`` and the encoding/vocabulary versions) and read from there next
    time."""
    key = f"onnx_ir:{ENCODING_VERSION}:{VOCAB_VERSION}:{arch.key()}"
    path = os.path.join(cache_dir, hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            return OnnxGraph(f["x"], f["edges"], f["op_types"].tolist(), int(f["n_oov"]))
    graph = subnet_graph(build_subnet(arch), arch.resolution)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, key=np.array(key), x=graph.x, edges=graph.edges, op_types=np.array(graph.op_types, dtype=str),
                 n_oov=np.array(graph.n_oov))
    os.replace(tmp, path)
    return graph

"""ONNX-IR: any network as a graph with one node per operator, in one canonical form, encoded for the predictor.

    features.py   the op vocabulary (append-only, versioned), the node feature layout, encoding an op graph
    ir.py         the tensor-level op graph every front end produces
    canonical.py  the canonical form: one spelling per computation (h-swish, pooling, linear layers, ...)
    parsing.py    ONNX models and torch modules -> op graphs with every shape (onnxslim, shape inference, ONNX Runtime)
    legacy.py     the published *_onnx_ir_cache.pkl, read through the restricted unpickler
    records.py    op graphs in the toolkit's onnx_ir caches

OFA subnets are converted above this package (evaluation/ofa_graphs.py), which knows how to build them. This package
imports neither evaluation/ nor OFA; parsing.py (onnx, torch) is imported only where models are converted.
"""
from iterators.onnx_ir.features import (ATTR_COLUMNS, N_FEATURES, OP_INDEX, OP_VOCAB, SHAPE_COLUMNS, VOCAB_HISTORY,
                                        VOCAB_VERSION, OnnxGraph, OnnxGraphError, graphs_to_graphset, n_operators,
                                        op_counts_text, unknown_ops, vocabulary)
from iterators.onnx_ir.records import graph_from_record, graph_record, load_graph_cache, write_graph_cache

__all__ = ["ATTR_COLUMNS", "N_FEATURES", "OP_INDEX", "OP_VOCAB", "SHAPE_COLUMNS", "VOCAB_HISTORY", "VOCAB_VERSION",
           "OnnxGraph", "OnnxGraphError", "graphs_to_graphset", "n_operators", "op_counts_text", "unknown_ops",
           "vocabulary", "graph_from_record", "graph_record", "load_graph_cache",
           "write_graph_cache"]

"""Op graphs on disk: the rows of the toolkit's onnx_ir caches (.jsonl.gz) and the published pickles (.pkl)."""
from __future__ import annotations

import warnings

import numpy as np

from iterators.caches import CacheError, read_own_cache, write_cache
from iterators.onnx_ir.features import N_FEATURES, OP_INDEX, OOV, VOCAB_HISTORY, VOCAB_VERSION, OnnxGraph
from iterators.search_space import Arch


def graph_record(graph: OnnxGraph) -> dict:
    """An OnnxGraph as plain arrays for the JSON-lines cache."""
    return {"x": np.round(graph.x, 6).tolist(), "edges": graph.edges.tolist(), "op_types": graph.op_types}


def graph_from_record(record: dict, vocab_version: int = VOCAB_VERSION) -> OnnxGraph:
    x = np.asarray(record["x"], dtype=np.float32).reshape(-1, N_FEATURES)
    ops = record["op_types"]
    return OnnxGraph(x, np.asarray(record["edges"], dtype=np.int64).reshape(2, -1), ops,
                     sum(OP_INDEX.get(op, OOV) == OOV for op in ops), vocab_version)


def write_graph_cache(path: str, family: str, archs: list[Arch | None], entries: list[dict], metrics: dict,
                      graphs: list[OnnxGraph], notes: str = "") -> None:
    """An onnx_ir cache of ``graphs`` (today's op vocabulary version, recorded in the header) and their labels."""
    write_cache(path, family, archs, entries, metrics, notes=notes, graph_format="onnx_ir",
                graphs=[graph_record(g) for g in graphs], extra_header={"vocab_version": VOCAB_VERSION})


def load_graph_cache(path: str, family: str) -> tuple[list[OnnxGraph], list[dict]]:
    """Graphs and metric dicts of an onnx_ir cache: the toolkit's (.jsonl.gz) or a published pickle (.pkl).
    The toolkit's caches name the op vocabulary version their graphs are in (version 1 when they do not); an older
    version than this toolkit's is read as it is, with a warning, since its graphs are not in today's form."""
    if path.endswith(".pkl"):
        from iterators.onnx_ir.legacy import read_legacy_onnx_cache
        entries = read_legacy_onnx_cache(path)
        graphs = [e.pop("graph") for e in entries]
        return graphs, [{k: v for k, v in e.items() if isinstance(v, (int, float))} for e in entries]
    cache = read_own_cache(path, family)
    if cache.graphs is None:
        raise CacheError(f"{path} is a {cache.header.get('format')} cache, not onnx_ir")
    version = int(cache.header.get("vocab_version", 1))
    if version not in VOCAB_HISTORY:
        raise CacheError(f"{path}: op vocabulary version {version} is newer than this toolkit's ({VOCAB_VERSION}); "
                         f"update the toolkit")
    if version < VOCAB_VERSION:
        warnings.warn(f"{path}: graphs of op vocabulary version {version} ({VOCAB_HISTORY[version][1]}); this "
                      f"toolkit converts to version {VOCAB_VERSION}: rebuild the cache with make_onnx_ir_caches.py",
                      stacklevel=2)
    return [graph_from_record(g, version) for g in cache.graphs], cache.entries

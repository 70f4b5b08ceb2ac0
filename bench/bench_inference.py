"""Predictor inference throughput: architectures per second, from Arch objects to predictions, batched.

    python bench/bench_inference.py [-n 20000] [-threads 2]

Target on a 2-core CPU: over 20,000 architectures per second. The onnx_ir rows time the default predictor on the
op graphs of the shipped onnx_ir caches (2,000 per family, 150-320 nodes each), from encoded graphs: converting an
OFA subnet to ONNX takes far longer and is done once per architecture (cached on disk).
"""
from __future__ import annotations

import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from iterators.errors import ArgumentParser, run_cli  # noqa: E402
from iterators.onnx_ir import graphs_to_graphset, load_graph_cache  # noqa: E402
from iterators.paths import CACHE_DIR  # noqa: E402
from iterators.runtime import reuse_freed_memory  # noqa: E402
from iterators.search_space import random_arch  # noqa: E402
from models.predictor import build_predictor, predict_archs, predict_graphs  # noqa: E402


PREDICTORS = {  # name -> training config
    "default (GATv2Conv, dim 32)": {"gnn_type": "GATv2Conv", "gnn_dim": 32, "aggr_method": "mean"},
    "paper's published (GraphConv, dim 128)": {"gnn_type": "GraphConv", "gnn_dim": 128, "aggr_method": "sum"},
}


def main() -> None:
    p = ArgumentParser(__doc__)
    p.add_argument("-n", type=int, default=20000)
    p.add_argument("-threads", type=int, default=torch.get_num_threads())
    p.add_argument("-repeats", type=int, default=3)
    args = p.parse_args()
    reuse_freed_memory()
    torch.set_num_threads(args.threads)
    rows = []
    for family in ("ofa_mbv3", "ofa_pn"):
        rng = random.Random(0)
        archs = [random_arch(family, rng) for _ in range(args.n)]
        for name, cfg in PREDICTORS.items():
            model = build_predictor({"families": family, "family": family, "num_layers": 4, **cfg}).eval()
            predict_archs(model, archs[:1000])  # warm-up
            best = min(_timed(predict_archs, model, archs) for _ in range(args.repeats))
            rows.append((family, name, args.n / best))
        graphs = graphs_to_graphset(load_graph_cache(os.path.join(CACHE_DIR, f"{family}_onnx_ir_cache.jsonl.gz"),
                                                     family)[0])
        model = build_predictor({"families": family, "family": family, "format": "onnx_ir", "num_layers": 4,
                                 **PREDICTORS["default (GATv2Conv, dim 32)"]}).eval()
        best = min(_timed(predict_graphs, model, graphs) for _ in range(args.repeats))
        rows.append((family, "onnx_ir default, from encoded op graphs", len(graphs) / best))
    print(f"\ntorch threads: {args.threads}, {args.n} architectures per run, best of {args.repeats}\n")
    print(f"| {'family':<9} | {'predictor':<40} | {'archs/s':>10} |\n|{'-' * 11}|{'-' * 42}|{'-' * 12}|")
    for family, name, rate in rows:
        print(f"| {family:<9} | {name:<40} | {rate:>10,.0f} |")


def _timed(fn, *a) -> float:
    start = time.perf_counter()
    fn(*a)
    return time.perf_counter() - start


if __name__ == "__main__":
    run_cli(main)

"""Seconds to convert one OFA subnet to its ONNX-IR graph: the whole-subnet export against the module chain.

    python bench/bench_ofa_graphs.py [-n 20]

For the first n architectures of each demo cache (cache/<family>_custom_cache.jsonl.gz), in cache order, interleaved
per architecture:
  whole   the subnet exported to ONNX as a whole (weights included) and converted: the toolkit's path before the
          module chain (torch export, ONNX shape inference, encoding), plus today's canonical form;
  chain   evaluation/ofa_graphs.subnet_graph: each distinct module exported once per process, the subnet's graph
          chained from its modules' graphs. Its first architecture starts cold (no module seen yet); later ones
          reuse the modules seen so far, as when a cache is built or a search converts many subnets.
Both include building the subnet. The disk cache of graph_from_arch is not used. Target: under 0.5 s per subnet.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import warnings

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import onnx  # noqa: E402
import torch  # noqa: E402

from evaluation import ofa_graphs  # noqa: E402
from evaluation.ofa_manager import build_subnet  # noqa: E402
from iterators.caches import cache_path, load_cache  # noqa: E402
from iterators.onnx_ir.parsing import graph_from_onnx  # noqa: E402


def whole_export(net: torch.nn.Module, resolution: int):
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, resolution, resolution),), buffer, opset_version=17, dynamo=False)
    return graph_from_onnx(onnx.load_from_string(buffer.getvalue()))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=20, help="architectures per family")
    p.add_argument("-families", nargs="+", default=["ofa_mbv3", "ofa_pn"])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for family in args.families:
        archs = load_cache(cache_path(family, "custom")).archs[:args.n]
        whole, chain, nodes = [], [], []
        for arch in archs:
            start = time.perf_counter()
            reference = whole_export(build_subnet(arch), arch.resolution)
            whole.append(time.perf_counter() - start)
            start = time.perf_counter()
            graph = ofa_graphs.subnet_graph(build_subnet(arch), arch.resolution)
            chain.append(time.perf_counter() - start)
            assert graph.op_types == reference.op_types and np.array_equal(graph.x, reference.x)
            nodes.append(len(graph.op_types))
        results[family] = (whole, chain)
        print(f"{family}: {len(archs)} subnets of {min(nodes)}-{max(nodes)} nodes (same graphs both ways)")
        print(f"  whole export   median {np.median(whole):.3f} s   max {max(whole):.2f} s")
        print(f"  module chain   median {np.median(chain):.3f} s   first (cold) {chain[0]:.2f} s   max after the first "
              f"{max(chain[1:], default=0):.2f} s   whole/chain {np.median(whole) / np.median(chain):.0f}x")
    return results


if __name__ == "__main__":
    main()

"""Build the onnx_ir caches from the custom demo caches: every architecture's OFA subnet -> op graph.

    python make_onnx_ir_caches.py -families ofa_mbv3 ofa_pn [-n N]

Labels (acc, flops, latency, ...) are copied from cache/<family>_custom_cache.jsonl.gz. Graphs are in the canonical
form of today's op vocabulary version, which the cache header records. Conversions are cached on disk per
architecture (.ofa_graph_cache/), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from tqdm import tqdm

from evaluation.ofa_graphs import graph_from_arch
from iterators.caches import CACHE_DIR, cache_path, check_not_smaller, load_cache
from iterators.errors import ArgumentParser, check_output_dir, run_cli
from iterators.onnx_ir import N_FEATURES, VOCAB_VERSION, write_graph_cache


def main(argv=None) -> None:
    p = ArgumentParser(__doc__)
    p.add_argument("-families", nargs="+", default=["ofa_mbv3", "ofa_pn"])
    p.add_argument("-n", type=int, default=None, help="convert only the first N architectures of each cache")
    p.add_argument("-graph_cache", default=".ofa_graph_cache")
    p.add_argument("-out_dir", default=CACHE_DIR)
    p.add_argument("-force", action="store_true", help="replace an existing cache with more graphs than -n")
    args = p.parse_args(argv)
    if args.n is not None and args.n < 1:
        p.error(f"-n {args.n}: give at least 1 (or leave it out for all)")
    check_output_dir(args.out_dir, "-out_dir")
    sources = {family: load_cache(cache_path(family, "custom"), family) for family in args.families}
    for family, source in sources.items():
        check_not_smaller(os.path.join(args.out_dir, f"{family}_onnx_ir_cache.jsonl.gz"),
                          len(source) if args.n is None else min(args.n, len(source)), args.force)
    torch.set_num_threads(1)
    os.makedirs(args.out_dir, exist_ok=True)
    for family, source in sources.items():
        n = len(source) if args.n is None else min(args.n, len(source))
        graphs, seconds = [], []
        for arch in tqdm(source.archs[:n], desc=f"onnx_ir {family}", unit="arch"):
            start = time.perf_counter()
            graphs.append(graph_from_arch(arch, args.graph_cache))
            seconds.append(time.perf_counter() - start)
        out = os.path.join(args.out_dir, f"{family}_onnx_ir_cache.jsonl.gz")
        write_graph_cache(out, family, source.archs[:n], source.entries[:n], source.header["metrics"], graphs,
                          notes=f"ONNX-IR graphs (op vocabulary v{VOCAB_VERSION}, canonical form, {N_FEATURES} "
                                f"features per node) of the architectures of "
                                f"{os.path.basename(cache_path(family, 'custom'))}, same labels")
        print(f"wrote {out}: {n} graphs, {os.path.getsize(out) / 1e6:.1f} MB; conversion {np.median(seconds):.3f} s "
              f"median, {max(seconds):.2f} s max per subnet")


if __name__ == "__main__":
    run_cli(main)

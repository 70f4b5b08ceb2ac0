"""Build the onnx_ir caches from the custom demo caches: every architecture's OFA subnet -> ONNX -> op graph.

    python make_onnx_ir_caches.py -families ofa_mbv3 ofa_pn [-n N]

Labels (acc, flops, latency, ...) are copied from cache/<family>_custom_cache.jsonl.gz. Conversions are cached on
disk per architecture (.ofa_graph_cache/), so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import os

import torch
from tqdm import tqdm

from iterators.caches import CACHE_DIR, cache_path, check_not_smaller, load_cache, write_cache
from iterators.errors import ArgumentParser, check_output_dir, run_cli
from iterators.onnx_ir import N_FEATURES, VOCAB_VERSION, graph_from_arch, graph_record


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
        graphs = [graph_record(graph_from_arch(a, args.graph_cache))
                  for a in tqdm(source.archs[:n], desc=f"onnx_ir {family}", unit="arch")]
        out = os.path.join(args.out_dir, f"{family}_onnx_ir_cache.jsonl.gz")
        write_cache(out, family, source.archs[:n], source.entries[:n], source.header["metrics"],
                    notes=f"ONNX-IR graphs (op vocabulary v{VOCAB_VERSION}, {N_FEATURES} features per node) of the "
                          f"architectures of {os.path.basename(cache_path(family, 'custom'))}, same labels",
                    graph_format="onnx_ir", graphs=graphs)
        print(f"wrote {out}: {n} graphs, {os.path.getsize(out) / 1e6:.1f} MB")


if __name__ == "__main__":
    run_cli(main)

"""Inference speed: batched prediction throughput and start-up, this toolkit against torch_geometric's layers.

    python bench/bench_inference.py [-n 20000] [-repeats 3] [-threads 1 2]

Throughput is architectures per second from ``Arch`` objects to predictions (encoding included), batches of 256, for
the default predictor (GATv2Conv, dim 32, random weights) and the published GraphConv-128 accuracy predictors of
../shared/upstream_l1, on the chain path and on the general path (the same weights through torch_geometric's
layers: the baseline a user can rerun without the original code). The onnx_ir rows time the default predictor on
the op graphs of the shipped onnx_ir caches, from encoded graphs (exporting an OFA subnet to ONNX takes far longer
and is done once per architecture). Runs alternate general, chain, general, chain ... and the table gives medians.

The whole-process rows time fresh processes: ``label_units.py`` scoring all MBv3 units with the published MBv3
accuracy predictor (imports, scoring, the JSON file and the plot), and ``predict.py --help``.
"""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from iterators.errors import ArgumentParser, run_cli  # noqa: E402
from iterators.onnx_ir import graphs_to_graphset, load_graph_cache  # noqa: E402
from iterators.paths import CACHE_DIR  # noqa: E402
from iterators.runtime import configure  # noqa: E402
from iterators.search_space import random_arch  # noqa: E402
from models.checkpoints import load_predictor  # noqa: E402
from models.predictor import build_predictor, predict_archs, predict_graphs  # noqa: E402

PUBLISHED = os.path.join(os.path.dirname(REPO), "shared", "upstream_l1", "l1_models",
                         "minMAE_{}_custom_acc_GraphConv_sum_directed_srcc1_predictor.pt")
DEFAULT = {"gnn_type": "GATv2Conv", "gnn_dim": 32, "num_layers": 4, "aggr_method": "mean"}


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def interleaved(fn, model, data, repeats: int) -> dict[str, float]:
    """Median seconds of fn(model, data) on the general and the chain path, runs alternating."""
    times: dict[str, list[float]] = {"general": [], "chain": []}
    for _ in range(repeats):
        for path in times:
            model.chain_path = path == "chain"
            times[path].append(_timed(fn, model, data))
    return {path: statistics.median(t) for path, t in times.items()}


def wall(cmd: list[str], repeats: int) -> float:
    """Median wall seconds of a fresh process."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = ArgumentParser(__doc__)
    p.add_argument("-n", type=int, default=20000, help="architectures per throughput run")
    p.add_argument("-repeats", type=int, default=3)
    p.add_argument("-threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("-no_onnx", action="store_true", help="skip the onnx_ir rows (loading their caches takes a while)")
    args = p.parse_args()
    configure(args.threads[0])
    rows = []
    onnx_graphs = {} if args.no_onnx else {
        f: graphs_to_graphset(load_graph_cache(os.path.join(CACHE_DIR, f"{f}_onnx_ir_cache.jsonl.gz"), f)[0])
        for f in ("ofa_mbv3", "ofa_pn")}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for family in ("ofa_mbv3", "ofa_pn"):
            rng = random.Random(0)
            archs = [random_arch(family, rng) for _ in range(args.n)]
            models = {"default (GATv2Conv, dim 32)": build_predictor({"family": family, **DEFAULT}),
                      "published (GraphConv, dim 128)": load_predictor(PUBLISHED.format(family))[0]}
            for name, model in models.items():
                model.eval()
                for model.chain_path in (False, True):  # warm-up (the general path imports torch_geometric)
                    predict_archs(model, archs[:2000])
                for path, seconds in interleaved(predict_archs, model, archs, args.repeats).items():
                    rows.append((threads, family, name, path, len(archs) / seconds))
            if family in onnx_graphs:
                model = build_predictor({"family": family, "format": "onnx_ir", **DEFAULT}).eval()
                graphs = onnx_graphs[family]
                for path, seconds in interleaved(predict_graphs, model, graphs, args.repeats).items():
                    rows.append((threads, family, "onnx_ir default, encoded op graphs", path, len(graphs) / seconds))
    print(f"\nbatched prediction, {args.n} architectures per run, medians of {args.repeats} interleaved runs\n")
    print(f"| {'threads':>7} | {'family':<8} | {'predictor':<34} | {'general, archs/s':>16} | "
          f"{'chain, archs/s':>14} | {'ratio':>6} |")
    print(f"|{'-' * 9}|{'-' * 10}|{'-' * 36}|{'-' * 18}|{'-' * 16}|{'-' * 8}|")
    by_key = {(t, f, n, path): rate for t, f, n, path, rate in rows}
    for t, f, n in dict.fromkeys((t, f, n) for t, f, n, _, _ in rows):
        general, chain = by_key[t, f, n, "general"], by_key[t, f, n, "chain"]
        print(f"| {t:>7} | {f:<8} | {n:<34} | {general:>16,.0f} | {chain:>14,.0f} | {chain / general:>5.2f}x |")

    with tempfile.TemporaryDirectory() as tmp:
        label = wall([sys.executable, "label_units.py", "-chkpt", PUBLISHED.format("ofa_mbv3"), "-out_dir", tmp,
                      "-quiet"], args.repeats)
    help_seconds = wall([sys.executable, "predict.py", "--help"], args.repeats)
    print(f"\nwhole processes, medians of {args.repeats}\n")
    print(f"| {'command':<58} | {'wall, s':>7} |\n|{'-' * 60}|{'-' * 9}|")
    print(f"| {'label_units.py, all 36,855 MBv3 units, published predictor':<58} | {label:>7.2f} |")
    print(f"| {'predict.py --help':<58} | {help_seconds:>7.2f} |")


if __name__ == "__main__":
    run_cli(main)

"""Training speed: 200 epochs on 3,000 OFA-MBv3 architectures (HELP's measured GPU latency), default predictor.

    python bench/bench_train.py [-epochs 200] [-n 3000] [-threads 2]

Prints a table of seconds per epoch and the final test Spearman. Target on a 2-core CPU: < 0.5 s per epoch.
"""
from __future__ import annotations

import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_predictor  # noqa: E402
from iterators.caches import load_cache, write_cache  # noqa: E402
from iterators.errors import ArgumentParser, run_cli  # noqa: E402

HELP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "HELP",
                    "ofa_mbv3_gpu_latency.json")


def main() -> None:
    p = ArgumentParser(__doc__)
    p.add_argument("-epochs", type=int, default=200)
    p.add_argument("-n", type=int, default=3000)
    p.add_argument("-threads", type=int, default=torch.get_num_threads())
    p.add_argument("-target", default="latency_2080ti_64")
    p.add_argument("-batch_size", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cache = load_cache(HELP)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.jsonl.gz")
        write_cache(path, cache.family, cache.archs[:args.n], cache.entries[:args.n], cache.header["metrics"])
        config = train_predictor.main(["-cache", path, "-target", args.target, "-epochs_predictor", str(args.epochs),
                                       "-batch_size", str(args.batch_size), "-out_dir", tmp, "-quiet"])
    res = config["results"]
    rows = [("architectures (train/test)", f"{res['n_train']}/{res['n_test']}"), ("epochs", res["epochs_done"]),
            ("batch size", args.batch_size), ("torch threads", args.threads),
            ("seconds per epoch", f"{res['seconds_per_epoch']:.3f}"),
            ("test Spearman", f"{res['test']['Spearman']:.4f}"), ("test MAPE %", f"{res['test']['MAPE']:.2f}")]
    print(f"\n| {'measure':<28} | {'value':>12} |\n|{'-' * 30}|{'-' * 14}|")
    for name, value in rows:
        print(f"| {name:<28} | {str(value):>12} |")


if __name__ == "__main__":
    run_cli(main)

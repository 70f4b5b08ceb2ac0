"""Build a per-block latency table (the additive latency model of BINAS and aw_nas) and say how well it predicts.

    python make_latency_table.py -cache cache/ofa_mbv3_custom_cache.jsonl.gz -target latency_cpu        # fitted
    python make_latency_table.py -cache ../shared/HELP/ofa_mbv3_gpu_latency.json -target latency_2080ti_64
    python make_latency_table.py -family ofa_mbv3 -measure cpu -resolutions 192 208 224 -check 30       # measured

Fitted: ridge least squares over the block indicators on the training split of the cache (the split
train_predictor.py uses), reported on its test split. Measured: every OFA block timed alone at its input shape on
this machine (-measure cpu or cuda), reported against the whole networks of -cache when given (e.g. latency_cpu, if
measured on this machine's kind of CPU) and against -check N networks timed whole right now. Writes
<out_dir>/<family>_<device>_latency_table.json, which -metric <device>_table of eval_topk_ofa.py, rm_search and
run_budget_search.py reads (device: -device, default the target's name without latency_, or cpu_blocks/gpu_blocks).
"""
from __future__ import annotations

import argparse
import os
import random

import numpy as np
from tqdm import tqdm

from iterators.caches import load_cache
from iterators.errors import ArgumentParser, UserError, check_output_dir, reading, run_cli
from iterators.paths import L1_DIR
from iterators.search_space import FAMILIES, RESOLUTIONS, random_arch, resolution_flag
from iterators.targets import Target
from models.latency_table import FIT_MODES, LatencyTable
from models.training import regression_metrics, split_indices


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(__doc__)
    p.add_argument("-cache", default=None, help="latency cache: fit the table to it, or check a measured table")
    p.add_argument("-target", default="latency_cpu", help="the cache's latency metric (an expression is allowed)")
    p.add_argument("-family", choices=sorted(FAMILIES), default=None, help="with -measure and no -cache")
    p.add_argument("-measure", choices=("cpu", "cuda"), default=None, help="time every block on this machine")
    p.add_argument("-resolutions", type=resolution_flag, nargs="+", default=None,
                   help="-measure: resolutions to time (default: those of -cache, else 128-224 in steps of 4)")
    p.add_argument("-threads", type=int, default=1, help="-measure: torch threads")
    p.add_argument("-repeats", type=int, default=15, help="-measure: timed rounds per block")
    p.add_argument("-check", type=int, default=0, help="-measure: also time this many random whole networks")
    p.add_argument("-mode", choices=FIT_MODES, default="affine", help="fit: how resolution enters (see "
                   "models/latency_table.py)")
    p.add_argument("-ridge", type=float, default=None, help="fit: ridge penalty (default: leave-one-out choice)")
    p.add_argument("-seed", type=int, default=12345, help="train/test split of the cache (as train_predictor.py)")
    p.add_argument("-device", default=None, help="the table's device name: its metric is <device>_table")
    p.add_argument("-out_dir", default=L1_DIR, help="where the table is written (default: l1_models/)")
    args = p.parse_args(argv)
    if args.cache is None and args.measure is None:
        p.error("give -cache (fit a table to it) or -measure cpu/cuda (time the blocks here)")
    if args.cache is None and args.family is None:
        p.error("-measure without -cache needs -family")
    if args.threads < 1 or args.repeats < 1 or args.check < 0:
        p.error("-threads and -repeats must be at least 1, -check at least 0")
    return args


def report(name: str, y: np.ndarray, pred: np.ndarray) -> dict:
    metrics = regression_metrics(y, pred)
    print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" + ("%" if k == "MAPE" else "") for k, v in metrics.items())
          + f"; median predicted/measured {np.median(pred / y):.3f}")
    return metrics


def main(argv=None) -> LatencyTable:
    args = parse_args(argv)
    check_output_dir(args.out_dir, "-out_dir")
    archs, y = None, None
    if args.cache:
        with reading(args.cache, "cache"):
            cache = load_cache(args.cache)
        y, keep = Target(args.target).evaluate(cache.entries, cache.metrics)
        archs = [a for a, k in zip(cache.archs, keep) if k]
        if args.family and args.family != cache.family:
            raise UserError(f"-family {args.family}: -cache {args.cache} holds {cache.family} networks")
        args.family = cache.family
        print(f"{args.cache}: {len(archs)} {cache.family} networks with {args.target}")
        if len(archs) < 20:
            raise UserError(f"-cache {args.cache}: only {len(archs)} networks have {args.target}")

    if args.measure:
        from evaluation.block_latency import measure_block_table  # OFA and the supernet only when timing
        resolutions = args.resolutions or (sorted({a.resolution for a in archs}) if archs else list(RESOLUTIONS))
        device = args.device or f"{args.measure.replace('cuda', 'gpu')}_blocks"
        table = measure_block_table(args.family, resolutions, args.measure, args.threads, repeats=args.repeats,
                                    label=device)
        print(f"timed every {args.family} block at {len(resolutions)} resolution(s) on {table.details['device_name']}"
              f" (median relative IQR per resolution: "
              + ", ".join(f"r{r} {v:.2f}" for r, v in table.details["median_relative_iqr"].items()) + ")")
        if archs:
            inside = [i for i, a in enumerate(archs) if a.resolution in table.entries]
            table.details["vs_cache"] = report(f"vs {args.target} of the cache ({len(inside)} networks)",
                                               y[inside], table.predict([archs[i] for i in inside]))
        if args.check:
            from evaluation import ofa_manager as ofa
            rng = random.Random(args.seed)
            nets = [random_arch(args.family, rng, resolutions) for _ in range(args.check)]
            whole = np.array([ofa.measure_latency(ofa.build_subnet(a), a.resolution, threads=args.threads,
                                                  warmup=3, repeats=args.repeats)["median_ms"]
                              for a in tqdm(nets, desc="time whole networks", unit="net")])
            table.details["vs_whole_networks"] = report(f"vs {args.check} whole networks timed now", whole,
                                                        table.predict(nets))
    else:
        train_idx, test_idx = split_indices(len(y), args.seed)
        device = args.device or (args.target[len("latency_"):] if args.target.startswith("latency_")
                                 else Target(args.target).file_tag())
        table = LatencyTable.fit([archs[i] for i in train_idx], y[train_idx], device, args.mode, args.ridge,
                                 f"fitted ({args.mode}) to {args.target} of {os.path.basename(args.cache)}")
        print(f"fitted a {args.mode} table on {len(train_idx)} networks (ridge penalty "
              f"{table.details['ridge_lambda']})")
        table.details["train"] = report("train", y[train_idx], table.predict([archs[i] for i in train_idx]))
        table.details["test"] = report(f"test ({len(test_idx)} networks)", y[test_idx],
                                       table.predict([archs[i] for i in test_idx]))
    path = table.save(os.path.join(args.out_dir, f"{args.family}_{table.device}_latency_table.json"))
    print(f"wrote {path} (metric {table.device}_table; resolutions {table.resolutions[0]}-{table.resolutions[-1]}; "
          f"fastest network at r{table.resolutions[-1]}: {table.fastest(table.resolutions[-1]):.4g} {table.unit})")
    return table


if __name__ == "__main__":
    run_cli(main)

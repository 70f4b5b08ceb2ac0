"""Evaluation throughput on Ray against the in-process run, and what Ray costs to start.

    python bench/bench_ray.py [-n_counted 40] [-n_predicted 5000] [-repeats 3]

For FLOPs, parameters (exact counts: an OFA subnet is built and profiled per network) and a latency predictor
(``cpu_predicted``, batched graph-network inference), it times the same random MBv3 networks evaluated in this
process and on a local Ray with 1 and 2 workers, interleaved (in-process, 1 worker, 2 workers, again ...) and
reports the median networks per second. Workers are started and have built their evaluators before the timed runs;
those one-off costs are reported apart: starting Ray, starting the workers, building each evaluator in a worker.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evaluation.backends import InProcessBackend  # noqa: E402
from evaluation.evaluators import make_evaluator  # noqa: E402
from iterators.runtime import reuse_freed_memory  # noqa: E402
from iterators.search_space import random_arch  # noqa: E402

FAMILY = "ofa_mbv3"
WORKERS = (1, 2)


def _rate(evaluator, archs) -> float:
    start = time.perf_counter()
    done = sum(1 for _ in evaluator(archs))
    assert done == len(archs)
    return len(archs) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n_counted", type=int, default=40, help="networks per run for flops and params")
    p.add_argument("-n_predicted", type=int, default=5000, help="networks per run for cpu_predicted")
    p.add_argument("-repeats", type=int, default=3)
    p.add_argument("-threads", type=int, default=torch.get_num_threads(), help="torch threads of the in-process run")
    args = p.parse_args()
    reuse_freed_memory()
    torch.set_num_threads(args.threads)
    import logging

    import ray
    from evaluation.ray_backend import RayBackend, quiet_ray
    quiet_ray()

    start = time.perf_counter()
    # one CPU slot per worker of both pools (the idle pool waits while the other one runs)
    ray.init(address="local", num_cpus=sum(WORKERS), include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    ray_init_s = time.perf_counter() - start

    rng = random.Random(0)
    metrics = {"flops": args.n_counted, "params": args.n_counted, "cpu_predicted": args.n_predicted}
    archs = {m: [random_arch(FAMILY, rng) for _ in range(n)] for m, n in metrics.items()}
    local = InProcessBackend()
    backends = {w: RayBackend(workers=w) for w in WORKERS}
    evaluators = {(b, m): (backends[b] if b else local).evaluator(make_evaluator, m, FAMILY)
                  for b in (0, *WORKERS) for m in metrics}
    startup = {}
    for w, backend in backends.items():
        for m in metrics:  # warm-up: start the workers, build the evaluators, run a few networks
            t = time.perf_counter()
            list(evaluators[w, m](archs[m][:2 * w]))
            startup[w, m] = time.perf_counter() - t
    for m in metrics:
        list(evaluators[0, m](archs[m][:2]))

    rates = {key: [] for key in evaluators}
    for _ in range(args.repeats):
        for m in metrics:
            for b in (0, *WORKERS):
                rates[b, m].append(_rate(evaluators[b, m], archs[m]))

    print(f"\nMBv3 networks (random, resolutions 192-224); median of {args.repeats} interleaved runs; in-process: "
          f"{args.threads} torch threads; Ray workers: 1 CPU (1 torch thread) each; {os.cpu_count()} CPU cores\n")
    print("| metric | networks per run | in-process net/s | Ray, 1 worker net/s | Ray, 2 workers net/s | "
          "2 workers / in-process |")
    print("|---|---:|---:|---:|---:|---:|")
    for m, n in metrics.items():
        med = {b: statistics.median(rates[b, m]) for b in (0, *WORKERS)}
        print(f"| {m} | {n:,} | {med[0]:,.1f} | {med[1]:,.1f} | {med[2]:,.1f} | {med[2] / med[0]:.2f} |")
    print(f"\nRay start-up: ray.init (local) {ray_init_s:.1f} s; workers ready: "
          + ", ".join(f"{w} worker(s) {backends[w].pool_start_s:.1f} s" for w in WORKERS))
    print("first call per metric (evaluator built in each worker, first networks): "
          + "; ".join(f"{m}: " + ", ".join(f"{w} worker(s) {startup[w, m]:.1f} s" for w in WORKERS) for m in metrics))
    for backend in backends.values():
        backend.close()
    ray.shutdown()


if __name__ == "__main__":
    main()

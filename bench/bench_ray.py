"""Evaluation throughput on Ray against the in-process run, and what Ray costs to start.

    python bench/bench_ray.py [-n_counted 24] [-n_predicted 5000] [-repeats 5]

For FLOPs, parameters (exact counts: an OFA subnet is built and profiled per network), a latency predictor
(``cpu_predicted``, batched graph-network inference) and a stand-in for work that waits instead of computing (50 ms
per network, as when a GPU or the disk is the limit), it times the same random MBv3 networks evaluated in this
process and on a local Ray with 1 and 2 workers, interleaved (in-process, 1 worker, 2 workers, again ...) and
reports the median networks per second. Workers are started and have built their evaluators before the timed runs;
those one-off costs are reported apart: starting Ray, starting the workers, building each evaluator in a worker. On
a shared machine, 2 workers compute faster than 1 only if two cores are free: the header says how many two busy
processes got, and the per-worker table each worker's own rate.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evaluation.backends import InProcessBackend  # noqa: E402
from evaluation.evaluators import Evaluator, make_evaluator  # noqa: E402
from iterators.runtime import reuse_freed_memory  # noqa: E402
from iterators.search_space import random_arch  # noqa: E402

FAMILY = "ofa_mbv3"
WORKERS = (1, 2)
WAIT_S = 0.05
BENCH = os.path.dirname(os.path.abspath(__file__))


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def cores_free(n: int = 10_000_000) -> float:
    """How many cores two busy processes get here and now (2.0 on an idle machine of 2 or more cores): a shared
    machine decides whether 2 workers can run twice as fast as 1."""
    start = time.perf_counter()
    _spin(n)
    one = time.perf_counter() - start
    procs = [multiprocessing.get_context("fork").Process(target=_spin, args=(n,)) for _ in range(2)]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return 2 * one / (time.perf_counter() - start)


def waiting_evaluator(seconds: float) -> Evaluator:
    """A stand-in for evaluation that waits on a GPU or on I/O: ``seconds`` per network, no CPU. It shows what the
    backend itself costs and gains where the machine's cores are not the limit."""
    def run(archs):
        for i, _ in enumerate(archs):
            time.sleep(seconds)
            yield i, seconds, {}
    return Evaluator(f"wait {seconds * 1e3:g} ms", "s", False, run)


def _rate(evaluator, archs) -> float:
    start = time.perf_counter()
    done = sum(1 for _ in evaluator(archs))
    assert done == len(archs)
    return len(archs) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n_counted", type=int, default=24, help="networks per run for flops, params and the 50 ms wait")
    p.add_argument("-n_predicted", type=int, default=5000, help="networks per run for cpu_predicted")
    p.add_argument("-repeats", type=int, default=5)
    p.add_argument("-threads", type=int, default=1, help="torch threads of the in-process run (default 1, as in a "
                   "Ray worker holding 1 CPU)")
    args = p.parse_args()
    reuse_freed_memory()
    torch.set_num_threads(args.threads)
    free = [cores_free()]
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
    waiting = f"wait {WAIT_S * 1e3:g} ms"
    metrics = {"flops": args.n_counted, "params": args.n_counted, "cpu_predicted": args.n_predicted,
               waiting: args.n_counted}
    archs = {m: [random_arch(FAMILY, rng) for _ in range(n)] for m, n in metrics.items()}
    local = InProcessBackend()
    backends = {w: RayBackend(workers=w) for w in WORKERS}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (BENCH, os.environ.get("PYTHONPATH"))))  # for workers
    from bench_ray import waiting_evaluator as importable_waiting  # by its module name, not __main__
    evaluators = {(b, m): ((backends[b] if b else local).evaluator(make_evaluator, m, FAMILY) if m != waiting
                           else (backends[b] if b else local).evaluator(importable_waiting, WAIT_S))
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
    free.append(cores_free())

    print(f"\nMBv3 networks (random, resolutions 192-224); median of {args.repeats} interleaved runs; in-process: "
          f"{args.threads} torch threads; Ray workers: 1 CPU (1 torch thread) each; {os.cpu_count()} CPU cores, of "
          f"which two busy processes got {free[0]:.2f} before and {free[1]:.2f} after the runs\n")
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
    for w, backend in backends.items():
        print(f"\n{w} worker(s), all runs: {backend.summary()}")
        backend.close()
    ray.shutdown()


if __name__ == "__main__":
    main()

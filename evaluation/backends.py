"""Where networks are evaluated: in this process, or on Ray workers spread over one machine or a cluster.

One interface, two implementations. A script hands a backend a metric's *recipe* -- a module-level function that
builds an ``Evaluator`` plus its arguments, e.g. ``backend.evaluator(make_evaluator, "flops", "ofa_mbv3")`` -- and
gets back an ``Evaluator`` with the usual contract: ``evaluator(archs)`` yields ``(index, value, details)`` for every
network, in whatever order the results arrive.

* ``InProcessBackend`` builds the evaluator here and runs it here, exactly as before: Ray is never imported.
* ``RayBackend`` (evaluation/ray_backend.py, imported only when asked for) builds the evaluator here once to check
  its inputs and learn its name and unit, then ships the recipe to worker actors; each worker builds its own copy
  once (supernet, data loaders, predictor) and evaluates the chunks of networks it is sent.

Either way the caller, the driver, stays the only writer of the results store: it stores every result as it arrives,
so an interrupted run loses only the networks in flight and a re-run skips what is stored.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from collections import defaultdict
from typing import Callable, Iterator, Sequence

from evaluation.evaluators import Evaluator
from iterators.errors import UserError
from iterators.search_space import Arch


class Tally:
    """Networks evaluated and seconds spent, per (worker, metric), for the progress bar and the closing summary."""

    def __init__(self):
        self.networks: dict[tuple[str, str], int] = defaultdict(int)
        self.busy: dict[tuple[str, str], float] = defaultdict(float)  # seconds the worker spent evaluating
        self.wall: dict[str, float] = defaultdict(float)               # seconds from first dispatch to last result
        self.hosts: dict[str, str] = {}                                # worker -> "pid@host" (the latest one)

    def add(self, worker: str, metric: str, networks: int, seconds: float) -> None:
        self.networks[worker, metric] += networks
        self.busy[worker, metric] += seconds

    def rates(self, metric: str) -> str:
        """``w1 12.3/s w2 11.9/s``: networks per busy second of each worker for ``metric``."""
        return " ".join(f"{w} {n / max(self.busy[w, m], 1e-9):.3g}/s" for (w, m), n in self.networks.items()
                        if m == metric and n)

    def table(self) -> list[str]:
        width = max([len("metric")] + [len(m) for _, m in self.networks])
        lines = [f"{'worker':<8} {'pid@host':<24} {'metric':<{width}} {'networks':>8} {'busy s':>8} {'networks/s':>10}"]
        for (w, m), n in sorted(self.networks.items(), key=lambda kv: (kv[0][1], _natural(kv[0][0]))):
            lines.append(f"{w:<8} {self.hosts.get(w, ''):<24} {m:<{width}} {n:>8} {self.busy[w, m]:>8.2f} "
                         f"{n / max(self.busy[w, m], 1e-9):>10.3g}")
        for m in sorted({m for _, m in self.networks}):
            n = sum(v for (_, mm), v in self.networks.items() if mm == m)
            workers = sum(1 for (_, mm), v in self.networks.items() if mm == m and v)
            lines.append(f"{'all':<8} {f'{workers} worker(s)':<24} {m:<{width}} {n:>8} {self.wall[m]:>8.2f} "
                         f"{n / max(self.wall[m], 1e-9):>10.3g}  (wall clock)")
        return lines


def _natural(label: str) -> tuple:
    return (len(label), label)


class Backend:
    """Evaluates networks for metrics; results come back one by one as they are measured. Use as a context manager
    (``close`` releases workers). ``evaluator`` is the one method an implementation must provide."""

    name = "backend"

    def __init__(self):
        self.tally = Tally()
        self._bar = None

    def evaluator(self, build: Callable[..., Evaluator], *args, **kwargs) -> Evaluator:
        """The evaluator that ``build(*args, **kwargs)`` makes, running on this backend. ``build`` must be a
        module-level function (Ray workers import it by name) and the arguments picklable."""
        raise NotImplementedError

    def evaluate(self, archs: Sequence[Arch], evaluators: Sequence[Evaluator]) -> Iterator[tuple[int, str, float,
                                                                                                 dict]]:
        """``(index, metric, value, details)`` for every network of ``archs`` and every one of ``evaluators`` (made
        by this backend), metric after metric, each metric spread over the workers; timings come last."""
        for ev in sorted(evaluators, key=lambda ev: ev.timing_device is not None):
            for i, value, details in ev(list(archs)):
                yield i, ev.metric, value, details

    def show_rates(self, bar) -> None:
        """Write every worker's throughput into ``bar``'s postfix (a tqdm bar) as results arrive."""
        self._bar = bar

    def _update_bar(self, metric: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self.tally.rates(metric), refresh=False)

    def summary(self) -> str:
        """Networks per second per worker (and in all) for every metric evaluated so far."""
        return "\n".join([f"evaluation {self.name}:"] + self.tally.table()) if self.tally.networks else ""

    def close(self) -> None:
        pass

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessBackend(Backend):
    """Evaluation in this process, one network after the other (the default: no Ray)."""

    name = "in this process"

    def evaluator(self, build, *args, **kwargs) -> Evaluator:
        ev = build(*args, **kwargs)
        worker = f"pid {os.getpid()}"
        self.tally.hosts[worker] = ""

        def run(archs):
            start = time.perf_counter()
            it = iter(ev(archs))
            try:
                while True:
                    t = time.perf_counter()
                    try:
                        result = next(it)
                    except StopIteration:
                        return
                    self.tally.add(worker, ev.metric, 1, time.perf_counter() - t)
                    self._update_bar(ev.metric)
                    yield result
            finally:
                self.tally.wall[ev.metric] += time.perf_counter() - start
        return dataclasses.replace(ev, run=run)


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose a backend: -workers, -ray_address, -gpus_per_worker."""
    g = p.add_argument_group("evaluation on Ray (default: in this process, without Ray)")
    g.add_argument("-workers", type=int, default=None,
                   help="evaluate on N Ray worker processes (a local Ray is started unless -ray_address is given)")
    g.add_argument("-ray_address", default=None,
                   help="join this Ray cluster (host:port of its head, or 'auto' on one of its nodes); "
                        "-workers then defaults to one worker per CPU (or per -gpus_per_worker GPUs) of the cluster")
    g.add_argument("-gpus_per_worker", type=float, default=0,
                   help="GPUs each worker reserves; ImageNet accuracy runs on a worker's GPU when it holds one, else "
                        "on its CPU (whatever -device says)")


def make_backend(workers: int | None = None, ray_address: str | None = None, gpus_per_worker: float = 0,
                 init_options: dict | None = None) -> Backend:
    """In-process without ``workers`` and ``ray_address``, else a RayBackend (Ray is imported only then), which
    passes ``init_options`` to ``ray.init`` if it starts or joins Ray itself."""
    if workers is not None and workers < 1:
        raise UserError(f"-workers {workers}: give at least 1 worker, or leave -workers out to evaluate in this "
                        "process")
    if gpus_per_worker < 0:
        raise UserError(f"-gpus_per_worker {gpus_per_worker}: must be >= 0")
    if workers is None and ray_address is None:
        if gpus_per_worker:
            raise UserError("-gpus_per_worker applies to Ray workers: add -workers N or -ray_address ADDR")
        return InProcessBackend()
    from evaluation.ray_backend import RayBackend
    return RayBackend(workers, ray_address, gpus_per_worker, init_options)


def backend_from_args(args: argparse.Namespace) -> Backend:
    return make_backend(args.workers, args.ray_address, args.gpus_per_worker)


def recipe(build: Callable[..., Evaluator], *args, **kwargs) -> functools.partial:
    """``build`` with its arguments, checked to be something a Ray worker can rebuild by name."""
    if getattr(build, "__qualname__", "").count("<") or build.__module__ == "__main__":
        raise TypeError(f"{build!r}: a recipe needs a module-level function that workers can import by name")
    return functools.partial(build, *args, **kwargs)

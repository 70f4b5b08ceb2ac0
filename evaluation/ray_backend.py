"""Evaluation on Ray: worker actors on one machine or a cluster; the driver keeps the queue and the results store.

How work is spread. Each metric's networks are cut into chunks and sent to the workers, two chunks in flight per
worker so none waits for the driver. A chunk starts at one network; once a metric's time per network is known,
chunks hold about ``TARGET_TASK_S`` seconds of work (so a FLOPs count or a predictor batch does not pay Ray's
per-call overhead per network, while an ImageNet evaluation is sent one network at a time), and never more than a
quarter of a worker's share of what is left, so the run ends evenly.

Workers. A pool of ``workers`` actors (1 CPU and ``gpus_per_worker`` GPUs each) evaluates every metric that is not
a timing. Each worker builds an evaluator from the metric's recipe on its first chunk and keeps it (the supernet,
data loaders, predictor are loaded once per worker). ImageNet accuracy runs on the GPU Ray gave the worker, and on
its CPU when it holds none (a worker without GPUs must not use the node's unreserved ones).

Timings (``cpu``, ``gpu`` latency: evaluators with a ``timing_device``) must not share their device with other work,
so they never go to the pool. They go to one timing actor per node (per node with a GPU for ``gpu``), pinned to it,
and the backend runs one metric at a time: while a timing metric is measured, no pool work is in flight anywhere,
and each node measures one network at a time. Other Ray jobs sharing the cluster are outside this run's control:
give timing runs a cluster (or nodes) of their own.

Failures. A worker that dies (killed, out of memory, its node lost) takes its chunks with it: they are re-sent to
the others and a replacement worker is started; a chunk whose worker died ``MAX_SENDS`` times is reported instead
of re-sent again (its networks probably kill their worker). Results are handed on once per network, and the driver
stores them with INSERT OR IGNORE, so nothing is stored twice. An exception raised by an evaluator stops the run and
is raised again in the driver as itself.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import logging
import math
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field

import ray
from ray.exceptions import AuthenticationError, GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from evaluation.backends import Backend, recipe
from evaluation.evaluators import Evaluator
from iterators.errors import UserError

TARGET_TASK_S = 0.5     # seconds of work per chunk once a metric's speed is known
IN_FLIGHT = 2           # chunks queued on each worker
MAX_SENDS = 3           # sends of one chunk whose worker died each time before the run gives up
START_TIMEOUT_S = 600   # workers that do not start within this are taken to be unschedulable
RAY_LOGS = "/tmp/ray/session_latest/logs"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EvalWorker:
    """A Ray actor: builds each metric's evaluator once from its recipe and evaluates the chunks it is sent."""

    def __init__(self):
        import torch
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))
        self.evaluators: dict[str, Evaluator] = {}

    def ready(self) -> tuple[int, str]:
        return os.getpid(), socket.gethostname()

    def evaluate(self, key: str, build, archs) -> tuple[list, float, float, int, str]:
        """(results as (index in ``archs``, value, details), seconds evaluating, seconds building, pid, host)."""
        built = 0.0
        if key not in self.evaluators:
            start = time.perf_counter()
            self.evaluators[key] = build()
            built = time.perf_counter() - start
        start = time.perf_counter()
        results = list(self.evaluators[key](archs))
        return results, time.perf_counter() - start, built, os.getpid(), socket.gethostname()

    def forget(self, keys: list[str]) -> None:
        """Drop these evaluators (and the supernets, data and predictors they hold)."""
        for key in keys:
            self.evaluators.pop(key, None)


def quiet_ray() -> None:
    """Before ``ray.init``: send no usage reports from the user's machine, and leave ``builtins.print`` alone (Ray
    swaps in its own the first time it relays a worker's message)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")


@functools.cache
def _actor_class():
    return ray.remote(EvalWorker)


@dataclass
class _Slot:
    """One worker position: the actor now filling it and how to start a replacement."""
    label: str
    options: dict
    node: str | None = None  # the node a timing actor is pinned to
    actor: object = None
    in_flight: int = 0
    deaths: int = 0
    alive: bool = True

    def start(self) -> None:
        # workers import the toolkit from the driver's checkout (the same path on every node) whatever their cwd
        path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
        self.actor = _actor_class().options(max_restarts=0, runtime_env={"env_vars": {"PYTHONPATH": path}},
                                            **self.options).remote()


@dataclass
class _Chunk:
    indices: list[int]
    sends: int = 0
    deaths: list[str] = field(default_factory=list)


# Workers kept between backends of one process that did not start Ray itself (a notebook, a test module), so the next
# evaluation starts warm: (driver's node, workers, GPUs per worker, PYTHONPATH) -> (pool, timing slots per device)
_KEPT: dict[tuple, tuple[list[_Slot], dict[str, list[_Slot]]]] = {}
_KEYS = itertools.count()


class RayBackend(Backend):
    """Evaluation on Ray actors (see the module docstring). Joins the cluster at ``address``, or starts a local Ray
    with ``workers`` CPUs when no Ray is running in this process yet. A Ray already running in this process (a
    notebook's, a test's) is used as it is, and its workers are kept for the next backend when this one closes."""

    name = "on Ray"

    def __init__(self, workers: int | None = None, address: str | None = None, gpus_per_worker: float = 0,
                 init_options: dict | None = None):
        super().__init__()
        self.workers, self.address, self.gpus_per_worker = workers, address, gpus_per_worker
        self.init_options = init_options or {}
        self.started_ray = False
        self.init_s = 0.0
        self.n_workers = 0
        self.pool: list[_Slot] = []
        self.timing: dict[str, list[_Slot]] = {}  # device -> one slot per node
        self.pool_start_s = 0.0
        self.build_s: dict[str, float] = {}  # metric -> seconds workers spent building its evaluator
        self.resent = 0
        self.deaths: list[str] = []
        self._kept_as = None
        self._keys: list[str] = []           # evaluators this backend had the workers build
        self._stragglers: list = []          # tasks of a run stopped early that may still be running
        self._busy = False
        self._sec_per_net: dict[str, float] = {}

    # --- cluster ---------------------------------------------------------------------------------------------

    def connect(self) -> None:
        """Join or start Ray and check that it can hold the workers (done on the first ``evaluator`` call, after
        the metric's inputs have been checked here)."""
        if self._kept_as is not None:
            return
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            start = time.perf_counter()
            self._init(self.workers, self.address, self.init_options)
            self.init_s = time.perf_counter() - start
        self.n_workers = self._check_resources(self.workers)
        self._kept_as = (ray.get_runtime_context().get_node_id(), self.n_workers, self.gpus_per_worker,
                         os.environ.get("PYTHONPATH"))
        self.pool, self.timing = _KEPT.pop(self._kept_as, ([], {}))
        for pool, timing in _KEPT.values():  # workers kept for other settings would hold CPUs and GPUs idle
            for slot in pool + [s for slots in timing.values() for s in slots]:
                ray.kill(slot.actor, no_restart=True)
        _KEPT.clear()

    @staticmethod
    def _init(workers: int | None, address: str | None, options: dict) -> None:
        quiet_ray()
        kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, **options)
        if address is None:
            kwargs.update(address="local", num_cpus=workers)
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError) as err:
            causes, cause = [], err
            while cause is not None:
                causes.append(cause)
                cause = cause.__cause__ or cause.__context__
            # Ray reports a refused token as a ConnectionError whose cause holds the AuthenticationError as text
            if any(isinstance(c, AuthenticationError) or "AuthenticationError" in str(c) for c in causes):
                raise UserError(f"-ray_address {address}: the cluster wants its token: copy the head's "
                                "~/.ray/auth_token to this machine and set RAY_AUTH_MODE=token (see README, 'More "
                                "than one machine')") from None
            if isinstance(err, ConnectionError):
                raise UserError(f"-ray_address {address}: no Ray cluster answers there ({err}); start one with "
                                "`ray start --head` and pass the address it prints") from None
            raise

    def _check_resources(self, workers: int | None) -> int:
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
        if workers is None:  # joined a cluster: fill it
            workers = int(gpus // self.gpus_per_worker) if self.gpus_per_worker else int(cpus)
            if workers < 1:
                raise UserError(f"-ray_address: the cluster has {cpus:g} CPUs and {gpus:g} GPUs, not enough for one "
                                f"worker with {self.gpus_per_worker:g} GPUs")
        if workers > cpus:
            raise UserError(f"-workers {workers}: the Ray cluster has only {cpus:g} CPUs (one per worker)")
        if workers * self.gpus_per_worker > gpus:
            raise UserError(f"-workers {workers} -gpus_per_worker {self.gpus_per_worker:g}: the Ray cluster has only "
                            f"{gpus:g} GPUs")
        return workers

    def _start_pool(self) -> list[_Slot]:
        if not self.pool:
            self.pool = [_Slot(f"w{i + 1}", dict(num_cpus=1, num_gpus=self.gpus_per_worker))
                         for i in range(self.n_workers)]
        if any(s.label not in self.tally.hosts for s in self.pool):  # new, or kept from an earlier backend
            start = time.perf_counter()
            self._wait_ready(self.pool)
            self.pool_start_s += time.perf_counter() - start
        return self.pool

    def _start_timing(self, device: str) -> list[_Slot]:
        if device not in self.timing:
            resource = "GPU" if device.startswith("cuda") else "CPU"
            nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource, 0) > 0]
            if not nodes:
                raise UserError(f"timing on {device}: no node of the Ray cluster has a {resource}")
            # num_cpus=0: the idle pool may hold every CPU; the backend itself keeps the pool idle meanwhile
            self.timing[device] = [_Slot(f"{resource[0].lower()}{i + 1}", dict(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)),
                node=n["NodeID"]) for i, n in enumerate(nodes)]
        slots = self.timing[device]
        if any(s.label not in self.tally.hosts for s in slots):
            self._wait_ready(slots)
        # a timing runs alone: let whatever an interrupted run left queued finish first
        if self._stragglers:
            ray.wait(self._stragglers, num_returns=len(self._stragglers))
            self._stragglers = []
        return slots

    def _wait_ready(self, slots: list[_Slot]) -> None:
        """Start the slots' actors (or check that kept ones still live) and learn their pid and host."""
        for slot in slots:
            if slot.actor is None:
                slot.start()
        refs = [slot.actor.ready.remote() for slot in slots]
        for slot, ref in zip(slots, refs):
            try:
                try:
                    pid, host = ray.get(ref, timeout=START_TIMEOUT_S)
                except RayActorError:  # a kept worker that died since
                    slot.start()
                    pid, host = ray.get(slot.actor.ready.remote(), timeout=START_TIMEOUT_S)
            except GetTimeoutError:
                raise RuntimeError(f"Ray workers did not start within {START_TIMEOUT_S} s: the cluster lacks the "
                                   "CPUs or GPUs they reserve") from None
            self.tally.hosts[slot.label] = f"{pid}@{host}"

    def _slots(self) -> list[_Slot]:
        return self.pool + [s for slots in self.timing.values() for s in slots]

    def pids(self) -> dict[str, int]:
        """{worker label: pid} of the live workers (pool and timing actors) that have answered."""
        return {s.label: int(self.tally.hosts[s.label].split("@")[0]) for s in self._slots()
                if s.alive and s.label in self.tally.hosts}

    # --- evaluation ------------------------------------------------------------------------------------------

    def evaluator(self, build, *args, **kwargs) -> Evaluator:
        # built here once: it checks its inputs before any worker starts and tells the metric's name and unit
        local = build(*args, **kwargs)
        metric, device = local.metric, local.timing_device
        if not device and ("device" in kwargs or "device" in inspect.signature(build).parameters):
            # the pool's GPUs are the ones Ray reserved for it: a worker sees only its own as "cuda"
            kwargs = {**kwargs, "device": "cuda" if self.gpus_per_worker else "cpu"}
        remote_recipe = recipe(build, *args, **kwargs)
        self.connect()
        key = f"{metric}#{next(_KEYS)}"  # workers cache evaluators by recipe, not by metric name
        self._keys.append(key)

        def run(archs):
            if not archs:
                return iter(())
            slots = self._start_timing(device) if device else self._start_pool()
            return self._run(metric, key, remote_recipe, list(archs), slots)
        return dataclasses.replace(local, run=run)

    def _chunk_size(self, metric: str, left: int, slots: int) -> int:
        if metric not in self._sec_per_net:
            return 1
        share = max(1, math.ceil(left / (4 * slots)))
        return max(1, min(share, int(TARGET_TASK_S / max(self._sec_per_net[metric], 1e-9))))

    def _run(self, metric: str, key: str, build, archs: list, slots: list[_Slot]):
        if self._busy:
            raise RuntimeError("a RayBackend evaluates one metric at a time: finish the previous evaluation first")
        self._busy = True
        todo = deque(range(len(archs)))
        resend: deque[_Chunk] = deque()
        in_flight: dict = {}  # ObjectRef -> (slot, actor, chunk)
        delivered: set[int] = set()
        start = time.perf_counter()
        try:
            while todo or resend or in_flight:
                self._dispatch(metric, key, build, archs, slots, todo, resend, in_flight)
                if not in_flight:
                    raise RuntimeError(f"no Ray worker left for {metric}: {'; '.join(self.deaths)}")
                [ref], _ = ray.wait(list(in_flight), num_returns=1)
                slot, actor, chunk = in_flight.pop(ref)
                slot.in_flight -= 1
                try:
                    results, busy, built, pid, host = ray.get(ref)
                except RayTaskError as err:
                    raise err.cause from None
                except RayActorError as err:
                    self._lost(slot, actor, chunk, err, resend)
                    continue
                self.tally.hosts[slot.label] = f"{pid}@{host}"
                self.build_s[metric] = self.build_s.get(metric, 0.0) + built
                fresh = [(chunk.indices[i], value, details) for i, value, details in results
                         if chunk.indices[i] not in delivered]
                delivered.update(i for i, _, _ in fresh)
                self.tally.add(slot.label, metric, len(results), busy)
                per_net = busy / max(1, len(results))
                old = self._sec_per_net.get(metric)
                self._sec_per_net[metric] = per_net if old is None else 0.5 * (old + per_net)
                self._update_bar(metric)
                yield from fresh
        finally:
            self.tally.wall[metric] += time.perf_counter() - start
            self._busy = False
            for ref in in_flight:  # stopped early (Ctrl-C, an error): drop what has not started
                ray.cancel(ref)
            for slot in slots:
                slot.in_flight = 0
            self._stragglers += list(in_flight)

    def _dispatch(self, metric, key, build, archs, slots, todo, resend, in_flight) -> None:
        live = [s for s in slots if s.alive]
        for _ in range(IN_FLIGHT):
            for slot in live:
                if slot.in_flight >= IN_FLIGHT or not (todo or resend):
                    continue
                if resend:
                    chunk = resend.popleft()
                else:
                    size = self._chunk_size(metric, len(todo), len(live))
                    chunk = _Chunk([todo.popleft() for _ in range(min(size, len(todo)))])
                chunk.sends += 1
                ref = slot.actor.evaluate.remote(key, build, [archs[i] for i in chunk.indices])
                in_flight[ref] = (slot, slot.actor, chunk)
                slot.in_flight += 1

    def _lost(self, slot: _Slot, actor, chunk: _Chunk, err: Exception, resend: deque) -> None:
        """A chunk whose worker died: re-send it (first, to another worker) and replace the worker once."""
        if slot.actor is actor:  # the first of its chunks to come back: the death is news
            self.deaths.append(f"{slot.label} ({self.tally.hosts.get(slot.label, '?')}): {type(err).__name__}")
            self._replace(slot)
        chunk.deaths.append(slot.label)
        if chunk.sends >= MAX_SENDS:
            raise RuntimeError(f"the workers evaluating networks {chunk.indices} died {chunk.sends} times "
                               f"({', '.join(chunk.deaths)}); they may run out of memory on them: see {RAY_LOGS}")
        self.resent += len(chunk.indices)
        resend.appendleft(chunk)

    def _replace(self, slot: _Slot) -> None:
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # already gone
            pass
        slot.in_flight = 0
        slot.deaths += 1
        node_alive = slot.node is None or any(n["NodeID"] == slot.node and n["Alive"] for n in ray.nodes())
        if node_alive and slot.deaths <= MAX_SENDS:
            slot.start()
        else:
            slot.alive = False

    # --- reporting and closing -------------------------------------------------------------------------------

    def summary(self) -> str:
        if not self.tally.networks:
            return ""
        hosts = len({where.split("@", 1)[1] for where in self.tally.hosts.values()})
        head = (f"evaluation on Ray: {self.n_workers} workers, {hosts} host(s); start-up: "
                + (f"Ray {self.init_s:.1f} s, " if self.started_ray else "")
                + f"workers {self.pool_start_s:.1f} s, evaluators "
                + ", ".join(f"{m} {s:.1f} s" for m, s in self.build_s.items()) + " (summed over workers)")
        lines = [head] + self.tally.table()
        if self.deaths:
            lines.append(f"{len(self.deaths)} worker(s) died ({'; '.join(self.deaths)}); {self.resent} networks "
                         "re-sent to the others")
        return "\n".join(lines)

    def close(self) -> None:
        slots = [s for s in self._slots() if s.alive]
        if self.started_ray:
            if ray.is_initialized():
                ray.shutdown()  # takes every worker with it
        elif slots:  # keep the workers warm for the next backend, without this one's evaluators
            for slot in slots:
                slot.actor.forget.remote(self._keys)
            _KEPT[self._kept_as] = ([s for s in self.pool if s.alive],
                                    {d: ss for d, ss in self.timing.items() if all(s.alive for s in ss)})
        self.pool, self.timing = [], {}

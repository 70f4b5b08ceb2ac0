"""Random-mutation Pareto search (after BlockProfile's rm_search): accuracy up, cost (latency or FLOPs) down.

The initial population is ``random_init_set_size`` distinct random networks. Every iteration takes parents from
the first ``num_pareto_runs`` non-dominated fronts of everything evaluated so far, mutates them until
``eval_budget`` new networks are found, and evaluates those. Evaluations live in the shared results store, so a
network is never evaluated twice and a re-run with the same seed replays an interrupted search up to where it
stopped, then goes on.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from evaluation.evaluators import Evaluator, evaluate_missing
from evaluation.results_store import ResultsStore
from iterators.errors import UserError
from iterators.search_space import Arch
from rm_search.pareto import front_2d, hypervolume_2d
from rm_search.space import SearchSpace

DIRECTIONS = (1, -1)  # maximise accuracy, minimise cost
MAX_MUTATION_TRIES = 200  # per wanted network, before a saturated space ends the iteration


@dataclass
class SearchConfig:
    random_init_set_size: int = 50
    num_iterations: int = 4
    eval_budget: int = 50
    stage_mutate_prob: float = 0.5
    mutation_depth: int = 1
    num_pareto_runs: int = 1
    seed: int = 0
    hv_reference: tuple[float, float] | None = None  # (accuracy, cost); default: worst of the initial population


@dataclass
class SearchState:
    archs: list[Arch] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)  # (accuracy, cost)
    iteration: list[int] = field(default_factory=list)                # 0 = initial population
    hypervolumes: list[float] = field(default_factory=list)
    reference: tuple[float, float] | None = None

    def front(self, runs: int = 1) -> list[int]:
        """Indices of the first ``runs`` non-dominated fronts of everything evaluated."""
        chosen, left = [], np.arange(len(self.points))
        for _ in range(runs):
            if not len(left):
                break
            front = left[front_2d(np.asarray(self.points)[left], DIRECTIONS)]
            chosen += front.tolist()
            left = np.setdiff1d(left, front)
        return chosen


class ObjectiveCache:
    """Both objectives of a network, from the store when known, else evaluated (batched) and stored."""

    def __init__(self, store: ResultsStore, accuracy: Evaluator, cost: Evaluator, bar: tqdm):
        self.store, self.evaluators, self.bar = store, (accuracy, cost), bar

    def __call__(self, archs: list[Arch]) -> list[tuple[float, float]]:
        columns = []
        for ev in self.evaluators:
            values = self.store.values(archs, ev.metric, ev.predictor)
            if evaluate_missing(ev, archs, values, self.store):
                raise UserError(f"the {ev.metric} objective is not finite for some networks: a broken checkpoint or "
                                f"measurement; check it with predict.py or eval_topk_ofa.py")
            columns.append(values)
        self.bar.update(len(archs))
        return list(zip(*columns))


class MemoryObjectives:
    """Both objectives from two functions ``archs -> values`` (e.g. predictors), each network computed once and kept
    in memory: for experiments that run many searches against the same oracles."""

    def __init__(self, accuracy: Callable[[list[Arch]], list[float]], cost: Callable[[list[Arch]], list[float]]):
        self.functions, self.known = (accuracy, cost), {}

    def __call__(self, archs: list[Arch]) -> list[tuple[float, float]]:
        missing = list({a.key(): a for a in archs if a.key() not in self.known}.values())
        if missing:
            values = [f(missing) for f in self.functions]
            for arch, point in zip(missing, zip(*values)):
                self.known[arch.key()] = (float(point[0]), float(point[1]))
        return [self.known[a.key()] for a in archs]


def paper_schedule(budget: int, **overrides) -> SearchConfig:
    """The paper's budget split, scaled: a fifth random, then 4 iterations of a fifth (250 = 50 + 4 x 50)."""
    if budget < 5 or budget % 5:
        raise ValueError(f"a budget of {budget} evaluations does not split into 5 equal parts")
    return SearchConfig(random_init_set_size=budget // 5, num_iterations=4, eval_budget=budget // 5, **overrides)


def _new_networks(space: SearchSpace, make, n: int, seen: set[str], rng: random.Random) -> list[Arch]:
    found = []
    for _ in range(n * MAX_MUTATION_TRIES):
        if len(found) == n or len(seen) >= space.reachable:
            break
        arch = make(rng)
        if arch.key() not in seen:
            seen.add(arch.key())
            found.append(arch)
    return found


def run_search(space: SearchSpace, objectives: ObjectiveCache, cfg: SearchConfig, log=print,
               on_iteration=None) -> SearchState:
    rng = random.Random(cfg.seed)
    state, seen = SearchState(), set()

    def add(archs: list[Arch], iteration: int) -> None:
        state.archs += archs
        state.points += objectives(archs)
        state.iteration += [iteration] * len(archs)

    add(_new_networks(space, space.sample, cfg.random_init_set_size, seen, rng), 0)
    pts = np.array(state.points)
    state.reference = cfg.hv_reference or (float(pts[:, 0].min()), float(pts[:, 1].max()))
    log(f"hypervolume reference point (accuracy, cost): {state.reference}")
    for it in range(cfg.num_iterations + 1):
        if it > 0:
            parents = [state.archs[i] for i in state.front(cfg.num_pareto_runs)]
            children = _new_networks(
                space, lambda r: space.mutate(r.choice(parents), r, cfg.stage_mutate_prob, cfg.mutation_depth),
                cfg.eval_budget, seen, rng)
            if len(children) < cfg.eval_budget:
                log(f"iteration {it}: only {len(children)} new networks found: the space is nearly exhausted")
            add(children, it)
        front = state.front()
        hv = hypervolume_2d([state.points[i] for i in front], state.reference, DIRECTIONS)
        state.hypervolumes.append(hv)
        log(f"iteration {it}: {len(state.archs)} evaluated, front of {len(front)}, hypervolume {hv:.6g}")
        if on_iteration:
            on_iteration(it, state)
    return state


def front_records(state: SearchState, metrics: tuple[str, str]) -> list[dict]:
    front = sorted(state.front(), key=lambda i: state.points[i][1])
    return [{metrics[0]: state.points[i][0], metrics[1]: state.points[i][1], "iteration": state.iteration[i],
             **state.archs[i].to_json()} for i in front]


def save_front(path: str, state: SearchState, metrics: tuple[str, str]) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(front_records(state, metrics), f, indent=1)
    os.replace(path + ".tmp", path)

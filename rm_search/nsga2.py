"""NSGA-II over a full OFA space (pymoo): the multi-objective baseline a user would pick instead of AutoBuild.

A network is a vector of integers: per stage its depth index (0 -> 2 blocks, 1 -> 3, 2 -> 4; none for a fixed
one-block stage), then per stage all its block slots (OFA's 4, or 1), each an index into ``CHOICES`` (9 (e, k)
pairs); slots past a stage's depth are ignored. Genomes that decode to a network already evaluated cost nothing, so
the search asks for generations until ``budget`` distinct networks have been evaluated.
"""
from __future__ import annotations

import numpy as np

from iterators.search_space import FAMILIES, Arch, make_arch
from iterators.units import CHOICES
from rm_search.search import SearchState

MAX_IDLE_GENERATIONS = 50  # generations in a row without a new network before the search gives up


def genome_bounds(family: str) -> tuple[np.ndarray, np.ndarray]:
    fam = FAMILIES[family]
    depth_genes = [len(d) - 1 for d in fam.stage_depths if len(d) > 1]
    slot_genes = [len(CHOICES) - 1] * sum(max(d) for d in fam.stage_depths)
    upper = np.array(depth_genes + slot_genes)
    return np.zeros_like(upper), upper


def decode(family: str, genome, resolution: int) -> Arch:
    fam = FAMILIES[family]
    genome = [int(g) for g in genome]
    depth_genes = iter(genome[:sum(len(d) > 1 for d in fam.stage_depths)])
    slots = genome[sum(len(d) > 1 for d in fam.stage_depths):]
    config, start = [], 0
    for depths in fam.stage_depths:
        depth = depths[next(depth_genes)] if len(depths) > 1 else depths[0]
        config.append([fam.block_name(*CHOICES[c]) for c in slots[start:start + depth]])
        start += max(depths)
    return make_arch(config, resolution, family)


def run_nsga2(family: str, resolution: int, objectives, budget: int, pop_size: int, seed: int) -> SearchState:
    """Evaluate ``budget`` distinct networks chosen by NSGA-II; ``objectives(archs)`` -> [(accuracy, cost)]."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.problem import Problem
    from pymoo.core.termination import NoTermination
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.problems.static import StaticProblem

    lower, upper = genome_bounds(family)
    problem = Problem(n_var=len(lower), n_obj=2, xl=lower, xu=upper, vtype=int)
    algorithm = NSGA2(pop_size=pop_size, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                      mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algorithm.setup(problem, termination=NoTermination(), seed=seed, verbose=False)
    state, known = SearchState(), {}
    generation = idle = 0
    while len(state.archs) < budget and idle < MAX_IDLE_GENERATIONS:
        population = algorithm.ask()
        archs = [decode(family, x, resolution) for x in population.get("X")]
        fresh = list({a.key(): a for a in archs if a.key() not in known}.values())
        new = fresh[:budget - len(state.archs)]
        idle = 0 if new else idle + 1
        for arch, point in zip(new, objectives(new)):
            known[arch.key()] = point
            state.archs.append(arch)
            state.points.append(tuple(point))
            state.iteration.append(generation)
        if len(new) < len(fresh):
            break  # the budget ends inside this generation
        values = np.array([known[a.key()] for a in archs], dtype=float)
        Evaluator().eval(StaticProblem(problem, F=values * [-1.0, 1.0]), population)
        algorithm.tell(infills=population)
        generation += 1
    return state

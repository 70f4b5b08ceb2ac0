"""The most accurate network under a hard latency budget: exactly, or by constrained evolution.

Exact (after BINAS). With a bilinear accuracy model (models/baselines.py) and an additive latency table
(models/latency_table.py), both are linear in the block/depth indicators u of iterators/block_indicators.py, so at a
fixed resolution r the problem is the integer program

    max  a_r^T u + const_r     s.t.  A u = b (u encodes a network),  t_r^T u <= budget - base_r,  u in {0, 1}

over the whole space (``u`` as the variables, the layout's structure as A u = b), or over a reduced space with one
binary per listed unit and one "pick one unit per position" row each. HiGHS (highspy) solves it to proven optimality;
the optimality gap it reports is (dual bound - objective) / |objective|. Several resolutions: one program each, the
best answer wins.

Any other accuracy or latency measure (the GNN, a measurement): constrained evolution over the same space. Networks
are ranked by Deb's rules (any feasible network before any infeasible one; feasible ones by accuracy, infeasible ones
by how far they exceed the budget), the best quarter are parents, children come from unit-wise crossover and mutation
(rm_search/space.py), the resolution mutating among the allowed ones.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from evaluation.evaluators import Evaluator, evaluate_missing
from evaluation.results_store import ResultsStore
from iterators.block_indicators import BlockLayout
from iterators.errors import UserError
from iterators.search_space import FAMILIES, Arch
from iterators.units import split_into_units, unit_stages
from models.baselines import BilinearPredictor
from models.latency_table import LatencyTable
from rm_search.space import SearchSpace


@dataclass
class BudgetAnswer:
    budget: float
    arch: Arch | None
    accuracy: float          # the accuracy measure's value of the answer
    latency: float           # the latency measure's value of the answer
    method: str
    evaluations: int = 0     # networks the accuracy and latency measures were queried for
    seconds: float = 0.0
    gap: float | None = None         # exact: relative optimality gap HiGHS proved
    dual_bound: float | None = None  # exact: HiGHS's upper bound on the accuracy
    details: dict = field(default_factory=dict)


def is_reduced(space: SearchSpace | None) -> bool:
    """Whether ``space`` lists its units (a reduced space) rather than allowing every unit of every stage."""
    return space is not None and any(c.configs is not None for c in space.candidates)


def fastest_latency(table: LatencyTable, resolutions: list[int], space: SearchSpace | None = None) -> float:
    """The latency of the fastest network of the space (full, or the reduced ``space``) under ``table``."""
    if not is_reduced(space):
        return min(table.fastest(r) for r in resolutions)
    best = np.inf
    for r in resolutions:
        base, costs = table.costs(r)
        columns = _unit_columns(space, table.layout)
        best = min(best, base + sum(min(costs[cols].sum() for cols in unit) for unit in columns))
    return float(best)


def check_budget(budget: float, fastest: float, metric: str) -> None:
    if budget < fastest:
        raise UserError(f"-budget_ms {budget:g}: no network of this space is that fast under {metric}: the fastest "
                        f"takes {fastest:.4g} ms; give budgets of at least {fastest:.4g} ms")


# --- exact: the integer program -------------------------------------------------------------------------------------

def _unit_columns(space: SearchSpace, lay: BlockLayout) -> list[list[list[int]]]:
    """Per unit position, per listed unit, the indicator columns it sets."""
    fam = FAMILIES[space.family]
    out = []
    for cand in space.candidates:
        if cand.configs is None:
            raise ValueError(f"unit {cand.unit} lists no candidates: a reduced space lists the units of every position")
        stages = list(fam.units[cand.unit - 1])
        rows = []
        for config in cand.configs:
            blocks = [[_block_ek(b) for b in part] for part in unit_stages(space.family, cand.unit, config)]
            rows.append(lay.unit_columns(stages, blocks))
        out.append(rows)
    return out


def _efficient(values: list[float], costs: list[float]) -> list[int]:
    """Indices of the options no other option beats: cheaper or as cheap and at least as good (first of ties)."""
    order = np.lexsort((-np.asarray(values), np.asarray(costs)))  # by cost, then best value first
    kept, best = [], -np.inf
    for i in order:
        if values[i] > best:
            kept.append(int(i))
            best = values[i]
    return kept


def _block_ek(block: str) -> tuple[int, int]:
    _, e, k = block.split("_")
    return int(e[1:]), int(k[1:])


def _solve_binary_program(objective: np.ndarray, eq_rows: np.ndarray, eq_rhs: np.ndarray, cost: np.ndarray,
                          capacity: float, time_limit: float) -> tuple[np.ndarray | None, dict]:
    """max objective^T v s.t. eq_rows v = eq_rhs, cost^T v <= capacity, v binary, with HiGHS, to proven optimality."""
    import highspy  # an optional engine: only the exact budget search needs it

    n = len(objective)
    rows = np.vstack([eq_rows, cost[None, :]])
    matrix = rows.T  # column-wise storage: one column per variable
    nonzero = [np.flatnonzero(col) for col in matrix]
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, rows.shape[0]
    lp.col_cost_ = np.asarray(objective, dtype=np.float64)
    lp.col_lower_, lp.col_upper_ = np.zeros(n), np.ones(n)
    lp.row_lower_ = np.concatenate([eq_rhs, [-highspy.kHighsInf]])
    lp.row_upper_ = np.concatenate([eq_rhs, [capacity]])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum([len(nz) for nz in nonzero])]).astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate(nonzero).astype(np.int32)
    lp.a_matrix_.value_ = np.concatenate([col[nz] for col, nz in zip(matrix, nonzero)])
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    lp.sense_ = highspy.ObjSense.kMaximize
    solver = highspy.Highs()
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("mip_rel_gap", 0.0)
    solver.setOptionValue("mip_abs_gap", 0.0)
    solver.setOptionValue("mip_feasibility_tolerance", 1e-10)
    solver.setOptionValue("time_limit", float(time_limit))
    solver.passModel(lp)
    solver.run()
    status = solver.modelStatusToString(solver.getModelStatus())
    info = solver.getInfo()
    stats = {"status": status, "objective": info.objective_function_value, "dual_bound": info.mip_dual_bound,
             "gap": info.mip_gap, "nodes": int(info.mip_node_count)}
    if info.primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return None, stats
    return np.round(np.asarray(solver.getSolution().col_value)).astype(int), stats


def solve_exact(accuracy: BilinearPredictor, table: LatencyTable, budget: float, resolutions: list[int],
                space: SearchSpace | None = None, time_limit: float = 60.0) -> BudgetAnswer:
    """The network of greatest bilinear accuracy whose table latency is at most ``budget``, over the full space
    (``space`` None or a full SearchSpace) or a reduced one, at the best of ``resolutions``."""
    lay = accuracy.layout
    if table.family != accuracy.family:
        raise UserError(f"the latency table is of {table.family}, the accuracy model of {accuracy.family}")
    reduced = is_reduced(space)
    columns = _unit_columns(space, lay) if reduced else None
    start = time.perf_counter()
    best, per_resolution = None, {}
    weights = accuracy.coef.numpy()[:lay.n_indicators]

    def solve_at(r: int, costs: np.ndarray, capacity: float) -> tuple[Arch | None, dict]:
        if not reduced:
            eq, rhs = lay.structure()
            v, stats = _solve_binary_program(weights, eq, rhs, costs, capacity, time_limit)
            return (None if v is None else lay.decode(v, r)), stats
        # per position, only units no other unit beats in both accuracy and latency can be in an optimum
        kept = [_efficient([weights[cols].sum() for cols in unit], [costs[cols].sum() for cols in unit])
                for unit in columns]
        objective = np.concatenate([[weights[columns[i][j]].sum() for j in keep] for i, keep in enumerate(kept)])
        cost = np.concatenate([[costs[columns[i][j]].sum() for j in keep] for i, keep in enumerate(kept)])
        sizes = [len(keep) for keep in kept]
        eq = np.zeros((len(sizes), sum(sizes)))
        for i, (lo, n) in enumerate(zip(np.cumsum([0] + sizes[:-1]), sizes)):
            eq[i, lo:lo + n] = 1.0
        v, stats = _solve_binary_program(objective, eq, np.ones(len(sizes)), cost, capacity, time_limit)
        if v is None:
            return None, stats
        picks = np.split(v, np.cumsum(sizes)[:-1])
        arch = space.build([cand.configs[keep[int(np.argmax(p))]]
                            for cand, keep, p in zip(space.candidates, kept, picks)])
        return dataclasses.replace(arch, resolution=r), stats

    for r in resolutions:
        base, costs = table.costs(r)
        capacity = budget - base
        for _ in range(3):  # HiGHS's feasibility tolerance may let an answer exceed the budget by a hair: tighten
            arch, stats = solve_at(r, costs, capacity)
            excess = float(table.predict([arch])[0]) - budget if arch is not None else 0.0
            if excess <= 0:
                break
            capacity -= excess + 1e-12 * max(1.0, abs(budget))
        per_resolution[r] = stats
        if arch is None or excess > 0:
            continue
        value = stats["objective"] + accuracy.constant_at(r)
        if best is None or value > best[0]:
            best = (value, arch, stats, accuracy.constant_at(r))
    seconds = time.perf_counter() - start
    if best is None:
        return BudgetAnswer(budget, None, float("nan"), float("nan"), "exact", 0, seconds,
                            details={"per_resolution": per_resolution})
    value, arch, stats, const = best
    gap = (stats["dual_bound"] - stats["objective"]) / max(abs(value), 1e-12)
    return BudgetAnswer(budget, arch, float(accuracy.predict_features(lay.encode([arch]))[0]),
                        float(table.predict([arch])[0]), "exact", 0, seconds, max(gap, 0.0),
                        stats["dual_bound"] + const, {"per_resolution": per_resolution, "status": stats["status"],
                                                      "nodes": stats["nodes"]})


# --- constrained evolution -----------------------------------------------------------------------------------------

@dataclass
class EvolutionConfig:
    population: int = 100
    generations: int = 20
    parent_ratio: float = 0.25
    mutate_prob: float = 0.3      # per unit position
    crossover_ratio: float = 0.5  # share of children made by crossover (then mutated lightly)
    resolution_prob: float = 0.2  # chance a child's resolution changes, when several are allowed
    repair: bool = True           # shrink infeasible networks until they fit (else only Deb's ranking)
    seed: int = 0

    @property
    def n_parents(self) -> int:
        return max(2, int(round(self.population * self.parent_ratio)))


Measure = Callable[[list[Arch]], list[float]]  # networks -> one value each


class CountedMeasure:
    """A measure that remembers its values and counts the distinct networks it was asked about."""

    def __init__(self, measure: Measure):
        self.measure, self.values, self.archs = measure, {}, {}

    def __call__(self, archs: list[Arch]) -> list[float]:
        new = list({a.key(): a for a in archs if a.key() not in self.values}.values())
        if new:
            self.values.update(zip((a.key() for a in new), self.measure(new)))
            self.archs.update((a.key(), a) for a in new)
        return [self.values[a.key()] for a in archs]

    @property
    def count(self) -> int:
        return len(self.values)


def deb_key(accuracy: float, latency: float, budget: float) -> tuple:
    """Sort key of Deb's feasibility rules: feasible networks first, by accuracy; then by the budget's excess."""
    return (0, -accuracy) if latency <= budget else (1, latency - budget)


def mac_proxy(blocks: list[str]) -> int:
    """A block sequence's size: an MBConv's multiply-adds grow as e * (2C + k^2) with C (~64) channels."""
    return sum(e * (128 + k * k) for e, k in map(_block_ek, blocks))


def _unit_blocks(space: SearchSpace, unit: int, config) -> list[str]:
    return [b for part in unit_stages(space.family, unit, config) for b in part]


def shrink_moves(space: SearchSpace, arch: Arch, resolutions: list[int]) -> list[tuple]:
    """Every step that makes ``arch`` smaller, as ("unit", position, new unit config) or ("resolution", r): a block
    with a smaller expansion or kernel or a stage one block shorter (full space), a listed unit of smaller size
    (reduced space), or the next smaller resolution. ``apply_move`` builds the network."""
    fam = FAMILIES[space.family]
    moves = []
    for i, (cand, config) in enumerate(zip(space.candidates, split_into_units(arch))):
        if cand.configs is not None:
            size = mac_proxy(_unit_blocks(space, cand.unit, config))
            moves += [("unit", i, c) for c in cand.configs if mac_proxy(_unit_blocks(space, cand.unit, c)) < size]
            continue
        parts = unit_stages(space.family, cand.unit, config)
        for p, (s, part) in enumerate(zip(fam.units[cand.unit - 1], parts)):
            variants = [part[:-1]] if len(part) - 1 in fam.stage_depths[s] else []
            for b, block in enumerate(part):
                e, k = _block_ek(block)
                if e > 3:
                    variants.append(part[:b] + [fam.block_name(4 if e == 6 else 3, k)] + part[b + 1:])
                if k > 3:
                    variants.append(part[:b] + [fam.block_name(e, k - 2)] + part[b + 1:])
            for v in variants:
                new = parts[:p] + [v] + parts[p + 1:]
                moves.append(("unit", i, new[0] if len(new) == 1 else new))
    lower = [r for r in resolutions if r < arch.resolution]
    if lower:
        moves.append(("resolution", max(lower)))
    return moves


def apply_move(space: SearchSpace, arch: Arch, move: tuple) -> Arch:
    if move[0] == "resolution":
        return dataclasses.replace(arch, resolution=move[1])
    units = split_into_units(arch)
    units[move[1]] = move[2]
    return dataclasses.replace(space.build(units), resolution=arch.resolution)


def constrained_evolution(space: SearchSpace, accuracy: Measure, latency: Measure, budget: float,
                          resolutions: list[int], cfg: EvolutionConfig, log=print) -> BudgetAnswer:
    """The best feasible network evolution finds. With ``cfg.repair``, an infeasible network is shrunk by random
    steps (``shrink_moves``) that lower its latency until it fits, so that nearly every network that costs an
    accuracy evaluation is feasible; ``evaluations`` counts the distinct networks whose accuracy was asked for,
    ``details["latency_evaluations"]`` those whose latency was."""
    rng = random.Random(cfg.seed)
    acc_of, lat_of = CountedMeasure(accuracy), CountedMeasure(latency)
    start = time.perf_counter()

    def with_resolution(arch: Arch, r: int) -> Arch:
        return dataclasses.replace(arch, resolution=r)

    def repaired(arch: Arch) -> Arch:
        """Random shrinking steps, each kept only if the latency drops, until the network fits (or 10 fail)."""
        latency_now, failures = lat_of([arch])[0], 0
        while cfg.repair and latency_now > budget and failures < 10:
            moves = shrink_moves(space, arch, resolutions)
            if not moves:
                break
            candidate = apply_move(space, arch, rng.choice(moves))
            latency_new = lat_of([candidate])[0]
            if latency_new < latency_now:
                arch, latency_now, failures = candidate, latency_new, 0
            else:
                failures += 1
        return arch

    def child(parents: list[Arch]) -> Arch:
        if len(parents) > 1 and rng.random() < cfg.crossover_ratio:
            a, b = rng.sample(parents, 2)
            units = [ua if rng.random() < 0.5 else ub for ua, ub in zip(split_into_units(a), split_into_units(b))]
            arch = with_resolution(space.build(units), rng.choice([a.resolution, b.resolution]))
            arch = with_resolution(space.mutate(arch, rng, cfg.mutate_prob / 2), arch.resolution)
        else:
            parent = rng.choice(parents)
            arch = with_resolution(space.mutate(parent, rng, cfg.mutate_prob), parent.resolution)
        if len(resolutions) > 1 and rng.random() < cfg.resolution_prob:
            arch = with_resolution(arch, rng.choice(resolutions))
        return repaired(arch)

    def ranked(archs: list[Arch]) -> list[tuple[Arch, float, float]]:
        archs = list({a.key(): a for a in archs}.values())
        rows = list(zip(archs, acc_of(archs), lat_of(archs)))
        return sorted(rows, key=lambda v: deb_key(v[1], v[2], budget))

    population = [repaired(with_resolution(space.sample(rng), rng.choice(resolutions)))
                  for _ in range(cfg.population)]
    history = []
    for generation in range(cfg.generations + 1):
        rows = ranked(population)
        history.append(rows[0][1] if rows[0][2] <= budget else float("nan"))
        if generation == cfg.generations:
            break
        parents = [v[0] for v in rows[:cfg.n_parents]]
        children, seen = [], {a.key() for a in parents}
        for _ in range(10 * cfg.population):  # a nearly exhausted space yields fewer children
            if len(children) >= cfg.population - len(parents):
                break
            c = child(parents)
            if c.key() not in seen and c.key() not in acc_of.values:
                seen.add(c.key())
                children.append(c)
        population = parents + children
    seconds = time.perf_counter() - start
    feasible = [(key, acc) for key, acc in acc_of.values.items() if lat_of.values.get(key, np.inf) <= budget]
    details = {"best_per_generation": history, "latency_evaluations": lat_of.count}
    if not feasible:
        log(f"budget {budget:g}: evolution found no network within the budget in {acc_of.count} evaluations")
        return BudgetAnswer(budget, None, float("nan"), float("nan"), "evolution", acc_of.count, seconds,
                            details=details)
    key, acc = max(feasible, key=lambda v: v[1])
    return BudgetAnswer(budget, acc_of.archs[key], acc, lat_of.values[key], "evolution", acc_of.count, seconds,
                        details=details)


def smallest_network(space: SearchSpace, resolution: int) -> Arch:
    """The network of the fewest and smallest blocks (``mac_proxy``) the space holds at ``resolution``: under any
    latency measure that grows with depth, expansion, kernel and resolution, the fastest."""
    units = []
    for cand in space.candidates:
        if cand.configs is not None:
            units.append(min(cand.configs, key=lambda c: mac_proxy(_unit_blocks(space, cand.unit, c))))
        else:
            fam = FAMILIES[space.family]
            parts = [[fam.block_name(3, 3)] * min(fam.stage_depths[s]) for s in fam.units[cand.unit - 1]]
            units.append(parts[0] if len(parts) == 1 else parts)
    return dataclasses.replace(space.build(units), resolution=resolution)


class StoredMeasure:
    """An evaluator (evaluation/evaluators.py) as a Measure, through the shared results store: a network's value is
    read from the store when known, else evaluated (batched) and stored."""

    def __init__(self, store: ResultsStore, evaluator: Evaluator):
        self.store, self.evaluator = store, evaluator

    def __call__(self, archs: list[Arch]) -> list[float]:
        ev = self.evaluator
        values = self.store.values(archs, ev.metric, ev.predictor)
        if evaluate_missing(ev, archs, values, self.store):
            raise UserError(f"{ev.metric} is not finite for some networks: a broken checkpoint or measurement; check "
                            f"it with predict.py or eval_topk_ofa.py")
        return values

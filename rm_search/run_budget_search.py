"""The most accurate network under each latency budget (after BINAS).

    python rm_search/run_budget_search.py -family ofa_mbv3 -acc_predictor saved_models/<acc>_bilinear_predictor.pt \\
        -metric cpu_table -budget_ms 20 30 40

With a bilinear accuracy model (train_predictor.py -model bilinear) and an additive latency table (-metric
<device>_table: l1_models/<family>_<device>_latency_table.json, see make_latency_table.py) the problem is an integer
program, solved exactly with HiGHS; the optimality gap is reported. With any other accuracy predictor (the GNN),
ImageNet accuracy (no -acc_predictor) or any other latency measure (cpu, gpu, <device>_predicted, ...): constrained
evolution. -unit_corpus restricts either to a reduced space (save_topk_ofa.py files); -resolutions lets the search
pick the input size too. -rm_front adds a front of run_unit_pareto_search.py (front_iter<i>.json), re-evaluated under
the same two measures, to the plot and the table. Output: outputs/<model_name>/budget_search.json and .png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from evaluation.evaluators import (L1_DIR, TABLE_SUFFIX, accuracy_evaluator, load_latency_table,  # noqa: E402
                                   make_evaluator)
from evaluation.results_store import ResultsStore  # noqa: E402
from iterators.errors import ArgumentParser, UserError, check_output_dir, reading, run_cli  # noqa: E402
from iterators.runtime import reuse_freed_memory  # noqa: E402
from iterators.search_space import FAMILIES, arch_from_json, describe, resolution_flag  # noqa: E402
from iterators.units import ReducedSpace  # noqa: E402
from models.baselines import BilinearPredictor  # noqa: E402
from models.checkpoints import load_predictor  # noqa: E402
from models.latency_table import LatencyTable, LatencyTableError  # noqa: E402
from rm_search.budget import (EvolutionConfig, StoredMeasure, check_budget, constrained_evolution,  # noqa: E402
                              fastest_latency, smallest_network, solve_exact)
from rm_search.pareto import non_dominated_sort  # noqa: E402
from rm_search.space import SearchSpace  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(__doc__)
    p.add_argument("-family", choices=sorted(FAMILIES), default="ofa_mbv3")
    p.add_argument("-acc_predictor", default=None, help="accuracy predictor checkpoint (else ImageNet evaluation)")
    p.add_argument("-metric", default="cpu_table",
                   help="latency measure: <device>_table (exact with a bilinear predictor), cpu, gpu, "
                        "<device>_predicted")
    p.add_argument("-budget_ms", type=float, nargs="+", required=True, help="one or more latency budgets")
    p.add_argument("-resolutions", type=resolution_flag, nargs="+", default=[224],
                   help="input sizes the search may pick")
    p.add_argument("-unit_corpus", nargs="+", default=None, help="*_search_space.json files: a reduced space")
    p.add_argument("-method", choices=("auto", "exact", "evolution"), default="auto",
                   help="auto: exact when the accuracy model is bilinear and the metric a table, else evolution")
    p.add_argument("-population", type=int, default=100)
    p.add_argument("-generations", type=int, default=20)
    p.add_argument("-mutate_prob", type=float, default=0.3, help="evolution: chance each unit is replaced")
    p.add_argument("-no_repair", action="store_true",
                   help="evolution: rank infeasible networks by Deb's rules only, instead of shrinking them to fit")
    p.add_argument("-seed", type=int, default=0)
    p.add_argument("-time_limit", type=float, default=60.0, help="exact: seconds per integer program")
    p.add_argument("-rm_front", default=None, help="a front_iter<i>.json of run_unit_pareto_search.py to compare")
    p.add_argument("-model_name", default="budget_search", help="names the output folder outputs/<model_name>/")
    p.add_argument("-out_dir", default="outputs")
    p.add_argument("-db", default="evals/results.db", help="SQLite results store shared with the other searches")
    p.add_argument("-l1_dir", default=L1_DIR, help="folder of latency tables and predictors")
    p.add_argument("-supernet_path", default=None, help="OFA supernet weights (ImageNet accuracy)")
    p.add_argument("-imagenet_dir", default=None, help="ImageNet in ImageFolder layout (ImageNet accuracy)")
    p.add_argument("-quiet", action="store_true")
    args = p.parse_args(argv)
    if not 0 <= args.mutate_prob <= 1:
        p.error("-mutate_prob must lie in [0, 1]")
    if args.population < 4 or args.generations < 0:
        p.error("-population must be at least 4 and -generations at least 0")
    args.metric = args.metric.strip().lower()
    if args.metric == "acc":
        p.error("-metric is the latency measure (<device>_table, cpu, gpu, <device>_predicted); accuracy is the other")
    return args


def load_space(args) -> SearchSpace:
    if not args.unit_corpus:
        return SearchSpace.full(args.family, args.resolutions[0])
    space = SearchSpace.reduced(ReducedSpace.merge([ReducedSpace.load(f) for f in args.unit_corpus]),
                                args.resolutions[0])
    if space.family != args.family:
        raise UserError(f"-unit_corpus describes a {space.family} space, not {args.family}")
    return space


def load_table(args) -> LatencyTable | None:
    """The latency table -metric names, or None when the metric is not a table."""
    if not args.metric.endswith(TABLE_SUFFIX):
        return None
    table = load_latency_table(args.metric, args.family, args.l1_dir, "-metric")
    try:
        for r in args.resolutions:
            table.costs(r)
    except LatencyTableError as err:
        raise UserError(f"-resolutions: {err}") from None
    return table


def load_rm_front(path: str, family: str) -> list:
    with reading(path, "front", "give a front_iter<i>.json of run_unit_pareto_search.py"):
        with open(path) as f:
            archs = [arch_from_json(r, family) for r in json.load(f)]
    if not archs:
        raise UserError(f"-rm_front {path}: the front is empty")
    return archs


def main(argv=None) -> list:
    args = parse_args(argv)
    reuse_freed_memory()
    resolutions = sorted(set(args.resolutions))
    out = check_output_dir(os.path.join(args.out_dir, args.model_name), "-out_dir")
    space = load_space(args)
    table = load_table(args)
    accuracy = accuracy_evaluator(args.family, args.acc_predictor, supernet_path=args.supernet_path,
                                  imagenet_dir=args.imagenet_dir)
    acc_model = load_predictor(args.acc_predictor)[0] if args.acc_predictor else None
    cost = make_evaluator(args.metric, args.family, args.supernet_path, args.imagenet_dir, args.l1_dir,
                          flag="-metric")
    exact_possible = isinstance(acc_model, BilinearPredictor) and table is not None
    method = args.method if args.method != "auto" else ("exact" if exact_possible else "evolution")
    if method == "exact" and not exact_possible:
        raise UserError("-method exact needs a bilinear -acc_predictor (train_predictor.py -model bilinear) and a "
                        "latency table -metric (<device>_table); use -method evolution otherwise")

    if table is not None:
        fastest = fastest_latency(table, resolutions, space)
    else:  # the smallest network is the fastest under any latency that grows with size
        smallest = [smallest_network(space, r) for r in resolutions]
        fastest = min(v for _, v, _ in cost(smallest))
    for budget in args.budget_ms:
        check_budget(budget, fastest, args.metric)
    os.makedirs(out, exist_ok=True)

    answers = []
    with ResultsStore(args.db) as store:
        measures = [StoredMeasure(store, ev) for ev in (accuracy, cost)]

        def objectives(archs):
            return list(zip(*(measure(archs) for measure in measures)))

        for budget in tqdm(sorted(args.budget_ms), desc=f"{method} search", unit="budget", disable=args.quiet):
            if method == "exact":
                answer = solve_exact(acc_model, table, budget, resolutions, space, args.time_limit)
                if answer.arch is not None:  # the measures themselves confirm the answer
                    answer.accuracy, answer.latency = objectives([answer.arch])[0]
            else:
                cfg = EvolutionConfig(args.population, args.generations, mutate_prob=args.mutate_prob,
                                      repair=not args.no_repair, seed=args.seed)
                answer = constrained_evolution(space, *measures, budget, resolutions, cfg, log=tqdm.write)
            if answer.arch is not None and answer.latency > budget:
                raise RuntimeError(f"budget {budget}: the answer takes {answer.latency} ms")  # a bug, never input
            answers.append(answer)
        rm_points = None
        if args.rm_front:
            rm_archs = load_rm_front(args.rm_front, args.family)
            rm_points = np.array(objectives(rm_archs))

    rows = []
    header = (f"{'budget ms':>9} {'method':>9} {'accuracy':>9} {'latency':>8} {'gap':>8} {'evals':>6} {'seconds':>7}"
              + ("  rm front best" if rm_points is not None else "") + "  architecture")
    lines = [header]
    for a in answers:
        rm_best = None
        if rm_points is not None:
            ok = rm_points[:, 1] <= a.budget
            rm_best = float(rm_points[ok, 0].max()) if ok.any() else None
        gap = "-" if a.gap is None else f"{a.gap:.1e}"
        rm_text = "" if rm_points is None else f"  {'none' if rm_best is None else f'{rm_best:.5g}':>13}"
        lines.append(f"{a.budget:>9g} {a.method:>9} {a.accuracy:>9.5g} {a.latency:>8.4g} {gap:>8} {a.evaluations:>6}"
                     f" {a.seconds:>7.2f}{rm_text}  "
                     + (f"r{a.arch.resolution} {describe(a.arch)}" if a.arch else "none found"))
        rows.append({"budget_ms": a.budget, "method": a.method, "accuracy": a.accuracy, "latency": a.latency,
                     "gap": a.gap, "dual_bound": a.dual_bound, "evaluations": a.evaluations, "seconds": a.seconds,
                     "rm_front_best": rm_best, "details": a.details, **(a.arch.to_json() if a.arch else {})})
    print(f"{args.family}, {'reduced' if args.unit_corpus else 'full'} space, resolutions {resolutions}; accuracy "
          f"{accuracy.metric}, latency {args.metric} ({cost.unit}); fastest network {fastest:.4g} {cost.unit}")
    print("\n".join(lines))
    with open(os.path.join(out, "budget_search.json.tmp"), "w") as f:
        json.dump({"args": vars(args), "answers": rows}, f, indent=1)
    os.replace(os.path.join(out, "budget_search.json.tmp"), os.path.join(out, "budget_search.json"))
    rm_front = None
    if rm_points is not None:
        rm_front = rm_points[non_dominated_sort(rm_points, (1, -1))[0]]
    from models.baseline_plots import plot_budget_front  # matplotlib only when plotting
    plot = plot_budget_front([(a.budget, a.latency, a.accuracy) for a in answers if a.arch], method,
                             (accuracy.metric, f"{args.metric} ({cost.unit})"),
                             os.path.join(out, "budget_search.png"), rm_points, rm_front)
    print(f"wrote {out}/budget_search.json and {plot}")
    return answers


if __name__ == "__main__":
    run_cli(main)

"""Evolutionary Pareto search over a full or reduced OFA space: accuracy against latency or FLOPs.

    python rm_search/run_unit_pareto_search.py -family ofa_mbv3 -model_name mbv3_topk \\
        -unit_corpus evals/<name>_3_search_space.json -metric cpu_predicted \\
        -acc_predictor saved_models/<acc name>_predictor.pt

Without -unit_corpus every unit of every stage is a candidate ("Stage-Full"). Accuracy comes from -acc_predictor (a
surrogate) or from ImageNet (-supernet_path, -imagenet_dir); the cost from -metric (cpu, gpu, flops, params or
<device>_predicted). Output: outputs/<model_name>/ (search.log, front_iter<i>.json, final_front.txt, pareto.png).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tqdm import tqdm  # noqa: E402

from evaluation.evaluators import L1_DIR, make_evaluator, predictor_evaluator  # noqa: E402
from evaluation.results_store import ResultsStore  # noqa: E402
from iterators.runtime import reuse_freed_memory  # noqa: E402
from iterators.search_space import FAMILIES, validate_resolution  # noqa: E402
from iterators.units import ReducedSpace  # noqa: E402
from rm_search.plots import plot_search  # noqa: E402
from rm_search.search import ObjectiveCache, SearchConfig, front_records, run_search, save_front  # noqa: E402
from rm_search.space import SearchSpace  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-family", choices=sorted(FAMILIES), default="ofa_mbv3")
    p.add_argument("-model_name", required=True, help="names the output folder outputs/<model_name>/")
    p.add_argument("-resolution", type=int, default=224)
    p.add_argument("-metric", default="flops", help="cost objective: cpu, gpu, flops, params, <device>_predicted")
    p.add_argument("-acc_predictor", default=None, help="accuracy surrogate checkpoint (else ImageNet evaluation)")
    p.add_argument("-imagenet_dir", default=None)
    p.add_argument("-supernet_path", default=None)
    p.add_argument("-unit_corpus", nargs="+", default=None,
                   help="reduced spaces (save_topk_ofa.py's *_search_space.json, or the original's .pkl), merged")
    p.add_argument("-widen", type=float, default=0.0,
                   help="seed the search in the reduced space, then let each mutation draw its unit from the whole "
                        "stage with this probability (0: stay in the reduced space)")
    p.add_argument("-random_init_set_size", type=int, default=50)
    p.add_argument("-num_iterations", type=int, default=4)
    p.add_argument("-eval_budget", type=int, default=50)
    p.add_argument("-stage_mutate_prob", type=float, default=0.5)
    p.add_argument("-mutation_depth", type=int, default=1)
    p.add_argument("-num_pareto_runs", type=int, default=1)
    p.add_argument("-seed", type=int, default=0)
    p.add_argument("-batch_size", type=int, default=100, help="ImageNet evaluation batch size")
    p.add_argument("-hv_reference", type=float, nargs=2, default=None, metavar=("ACC", "COST"),
                   help="hypervolume reference point (default: worst accuracy and cost of the initial population)")
    p.add_argument("-db", default="evals/results.db", help="SQLite results store shared with eval_topk_ofa.py")
    p.add_argument("-l1_dir", default=L1_DIR, help="folder of latency predictors for <device>_predicted")
    p.add_argument("-out_dir", default="outputs")
    p.add_argument("-resume", action="store_true", help="continue the run in outputs/<model_name>/")
    p.add_argument("-quiet", action="store_true")
    args = p.parse_args(argv)
    for name in ("stage_mutate_prob", "widen"):
        if not 0 <= getattr(args, name) <= 1:
            p.error(f"-{name} must lie in [0, 1]")
    if args.widen and not args.unit_corpus:
        p.error("-widen widens a reduced space: give -unit_corpus too")
    for name in ("random_init_set_size", "eval_budget", "mutation_depth", "num_pareto_runs"):
        if getattr(args, name) < 1:
            p.error(f"-{name} must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    reuse_freed_memory()
    resolution = validate_resolution(args.resolution)
    out = os.path.join(args.out_dir, args.model_name)
    log_path = os.path.join(out, "search.log")
    if os.path.exists(log_path) and not args.resume:
        raise SystemExit(f"{out} holds an earlier search: pass -resume to continue it, or choose another -model_name")
    os.makedirs(out, exist_ok=True)
    space = (SearchSpace.reduced(ReducedSpace.merge([ReducedSpace.load(f) for f in args.unit_corpus]), resolution,
                                 args.widen) if args.unit_corpus else SearchSpace.full(args.family, resolution))
    if space.family != args.family:
        raise SystemExit(f"-unit_corpus describes a {space.family} space, not {args.family}")
    if args.acc_predictor:
        accuracy = predictor_evaluator(f"acc_pred:{os.path.basename(args.acc_predictor)}", args.acc_predictor, "",
                                       True)
    else:
        accuracy = make_evaluator("acc", args.family, args.supernet_path, args.imagenet_dir,
                                  batch_size=args.batch_size)
    cost = make_evaluator(args.metric, args.family, args.supernet_path, args.imagenet_dir, args.l1_dir)
    metrics = ("accuracy", f"{args.metric} ({cost.unit})")
    cfg = SearchConfig(args.random_init_set_size, args.num_iterations, args.eval_budget, args.stage_mutate_prob,
                       args.mutation_depth, args.num_pareto_runs, args.seed,
                       tuple(args.hv_reference) if args.hv_reference else None)

    with open(log_path, "a") as log_file, ResultsStore(args.db) as store:
        def log(msg: str) -> None:
            tqdm.write(msg)
            log_file.write(msg + "\n")
            log_file.flush()

        log(f"{'resumed' if args.resume else 'new'} search {args.model_name}: {args.family}, "
            f"{'reduced' if args.unit_corpus else 'full'} space of {space.size:.4g} networks at r{resolution}"
            f"{f', widened with probability {args.widen}' if args.widen else ''}; "
            f"objectives {accuracy.metric} (max), {cost.metric} (min); {vars(cfg)}")
        total = cfg.random_init_set_size + cfg.num_iterations * cfg.eval_budget
        with tqdm(total=total, unit="net", desc="search", disable=args.quiet) as bar:
            state = run_search(space, ObjectiveCache(store, accuracy, cost, bar), cfg, log,
                               on_iteration=lambda it, s: save_front(os.path.join(out, f"front_iter{it}.json"), s,
                                                                    metrics))
        rows = front_records(state, metrics)
        table = [f"{'accuracy':>10} {metrics[1]:>18}  iteration  resolution  architecture"]
        table += [f"{r['accuracy']:>10.4f} {r[metrics[1]]:>18.4f}  {r['iteration']:>9}  {r['resolution']:>10}  "
                  + " | ".join(" ".join(b.split("_", 1)[1] for b in stage) for stage in r["config"])
                  for r in rows]
        with open(os.path.join(out, "final_front.txt"), "w") as f:
            f.write("\n".join(table) + "\n")
        log("final Pareto front:\n" + "\n".join(table))
        plot = plot_search(state.points, state.iteration, state.front(), metrics, os.path.join(out, "pareto.png"))
        log(f"hypervolume per iteration: {[round(h, 6) for h in state.hypervolumes]}; wrote {out}/ ({plot})")
    return state


if __name__ == "__main__":
    main()

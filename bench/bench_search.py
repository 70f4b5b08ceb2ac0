"""Random sampling vs full-space search vs reduced-space search, at equal evaluation budget, by final hypervolume.

    python bench/bench_search.py -family ofa_mbv3 -acc_predictor saved_models/<acc>_predictor.pt \\
        -metric cpu_predicted -k 3 -seeds 0 1 2 3 4

Objectives are surrogates (accuracy predictor, latency predictor from l1_models/), so the comparison is cheap. The
reduced space is the top-k units per stage scored by label_units' logic with -unit_predictor (default: the accuracy
predictor; a predictor of a combined target such as accuracy per latency builds a space aimed at the trade-off). All runs
share one hypervolume reference point: the worst accuracy and cost of a 2,000-network random sample.
"""
from __future__ import annotations

import os
import random
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tqdm import tqdm  # noqa: E402

from evaluation.evaluators import L1_DIR, accuracy_evaluator, make_evaluator  # noqa: E402
from evaluation.results_store import ResultsStore  # noqa: E402
from iterators.errors import ArgumentParser, run_cli  # noqa: E402
from iterators.runtime import add_threads_flag, configure  # noqa: E402
from iterators.units import top_k_units  # noqa: E402
from models.checkpoints import load_predictor  # noqa: E402
from models.unit_scores import score_units  # noqa: E402
from rm_search.search import ObjectiveCache, SearchConfig, run_search  # noqa: E402
from rm_search.space import SearchSpace, UnitCandidates  # noqa: E402


def main() -> None:
    p = ArgumentParser(__doc__)
    p.add_argument("-family", default="ofa_mbv3")
    p.add_argument("-acc_predictor", required=True)
    p.add_argument("-unit_predictor", default=None,
                   help="predictor whose unit scores build the reduced space (default: the accuracy predictor)")
    p.add_argument("-metric", default="cpu_predicted")
    p.add_argument("-l1_dir", default=L1_DIR)
    p.add_argument("-k", type=int, default=3)
    p.add_argument("-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("-resolution", type=int, default=224)
    add_threads_flag(p)
    args = p.parse_args()
    configure(args.threads)

    model, config = load_predictor(args.unit_predictor or args.acc_predictor)
    units = score_units(model, args.family, args.resolution, config.get("norm", 1), progress=False)
    top = top_k_units(units, [args.k])
    reduced = SearchSpace(args.family, [UnitCandidates(args.family, u, [x["config"] for x in c])
                                        for u, c in enumerate(top, start=1)], args.resolution)
    full = SearchSpace.full(args.family, args.resolution)
    accuracy = accuracy_evaluator(args.family, args.acc_predictor)
    cost = make_evaluator(args.metric, args.family, l1_dir=args.l1_dir)
    budget = SearchConfig()
    n_evals = budget.random_init_set_size + budget.num_iterations * budget.eval_budget

    with tempfile.TemporaryDirectory() as tmp, ResultsStore(os.path.join(tmp, "r.db")) as store, \
            tqdm(disable=True) as silent:
        objectives = ObjectiveCache(store, accuracy, cost, silent)
        rng = random.Random(12345)
        sample = np.array(objectives([full.sample(rng) for _ in range(2000)]))
        reference = (float(sample[:, 0].min()), float(sample[:, 1].max()))
        methods = {
            "random sampling (full space)": (full, SearchConfig(random_init_set_size=n_evals, num_iterations=0)),
            "search, full space": (full, budget),
            f"search, reduced space (top-{args.k})": (reduced, budget),
        }
        results = {name: [] for name in methods}
        for name, (space, cfg) in methods.items():
            for seed in args.seeds:
                run_cfg = SearchConfig(**{**vars(cfg), "seed": seed, "hv_reference": reference})
                state = run_search(space, objectives, run_cfg, log=lambda msg: None)
                results[name].append(state.hypervolumes[-1])

    print(f"\n{args.family}: accuracy = {os.path.basename(args.acc_predictor)}, cost = {args.metric}, units scored "
          f"by {os.path.basename(args.unit_predictor or args.acc_predictor)} ({config['target']}); "
          f"{n_evals} evaluations per run, seeds {args.seeds}; reference point {reference}")
    print(f"reduced space: {reduced.size:,} networks; full space: {full.size:.3g}\n")
    print(f"| {'method':<32} | {'hypervolume mean':>16} | {'std':>9} | {'min':>9} | {'max':>9} |")
    print(f"|{'-' * 34}|{'-' * 18}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for name, hvs in results.items():
        h = np.array(hvs)
        print(f"| {name:<32} | {h.mean():>16.5g} | {h.std():>9.3g} | {h.min():>9.5g} | {h.max():>9.5g} |")


if __name__ == "__main__":
    run_cli(main)

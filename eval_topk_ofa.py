"""Evaluate the networks of a reduced search space: the top-k units of every stage, recombined.

    python eval_topk_ofa.py -unit_corpus units/<name>_labeled_sgs.json -k 3 -m cpu -n 20
    python eval_topk_ofa.py -unit_corpus ... -k 3 -m acc -supernet_path ofa_mbv3_d234_e346_k357_w1.2 \\
                            -imagenet_dir /data/imagenet -start_idx 100 -n 100

Networks are ordered by summed unit score (or shuffled with -seed) and the slice [start_idx, start_idx + n) is
evaluated. Results go to a SQLite database (-db): several processes may share it, a re-run skips what is done, and
an interruption loses nothing already measured. Metrics: see iterators/evaluators.py.
"""
from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from evaluation.evaluators import L1_DIR, make_evaluator
from evaluation.results_store import ResultsStore
from iterators.runtime import reuse_freed_memory
from iterators.search_space import validate_resolution
from iterators.units import ReducedSpace, load_unit_corpus, rank_networks


def describe(arch) -> str:
    return " | ".join(" ".join(f"e{e}k{k}" for e, k in stage) for stage in arch.stages)


def summarize(values: np.ndarray, metric: str, unit: str) -> str:
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return (f"{metric} ({unit}) over {len(values)} networks: min {q[0]:.4g}, p25 {q[1]:.4g}, median {q[2]:.4g}, "
            f"p75 {q[3]:.4g}, max {q[4]:.4g}, mean {values.mean():.4g}")


def main(argv=None) -> list[tuple]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-unit_corpus", required=True, help="a *_labeled_sgs.json written by label_units.py")
    p.add_argument("-k", type=int, nargs="+", required=True, help="one k for all units, or one per unit")
    p.add_argument("-m", "-metric", dest="metric", required=True,
                   help="acc, cpu, gpu, flops, params or <device>_predicted")
    p.add_argument("-n", type=int, default=None, help="networks to evaluate (default: all from start_idx)")
    p.add_argument("-start_idx", type=int, default=0)
    p.add_argument("-seed", type=int, default=None, help="shuffle the networks instead of ordering by score")
    p.add_argument("-res", type=int, default=224, help="input resolution of the evaluated networks")
    p.add_argument("-no_eval", action="store_true", help="only list the networks of the slice")
    p.add_argument("-db", default="evals/results.db", help="SQLite results database")
    p.add_argument("-export", default=None, help="also write this metric's results to a .csv or .json file")
    p.add_argument("-supernet_path", default=None, help="OFA supernet weights (for -m acc)")
    p.add_argument("-imagenet_dir", default=None, help="ImageNet in ImageFolder layout (for -m acc)")
    p.add_argument("-threads", type=int, default=1, help="torch threads for CPU latency")
    p.add_argument("-l1_dir", default=L1_DIR, help="folder of latency predictors for <device>_predicted")
    p.add_argument("-quiet", action="store_true")
    args = p.parse_args(argv)
    reuse_freed_memory()
    resolution = validate_resolution(args.res)
    corpus = load_unit_corpus(args.unit_corpus)
    family = corpus.family
    space = ReducedSpace.top_k(corpus, args.k)  # the space save_topk_ofa.py keeps from this corpus
    scores = space.scores()
    best_first = -1 if space.sources[0]["keep"] == "lowest" else 1
    order = rank_networks([[best_first * s for s in position] for position in scores], args.seed)
    stop = len(order) if args.n is None else min(len(order), args.start_idx + args.n)
    picked = order[args.start_idx:stop]
    archs = [space.network(row, resolution) for row in picked]
    summed = [sum(scores[u][i] for u, i in enumerate(row)) for row in picked]
    print(f"{family} reduced space: {' x '.join(map(str, space.sizes))} = {space.size:,} "
          f"networks at resolution {resolution}; slice [{args.start_idx}, {stop}) "
          f"{'shuffled with seed ' + str(args.seed) if args.seed is not None else 'by summed unit score'}")
    if args.no_eval:
        for i, (arch, s) in enumerate(zip(archs, summed), start=args.start_idx):
            print(f"{i:>6}  score {s:10.4g}  {describe(arch)}")
        return [(a, s, None) for a, s in zip(archs, summed)]

    evaluator = make_evaluator(args.metric, family, args.supernet_path, args.imagenet_dir, args.l1_dir,
                               threads=args.threads)
    with ResultsStore(args.db) as store:
        todo = [i for i in range(len(archs)) if i not in store.done(archs, args.metric)]
        print(f"{len(archs) - len(todo)} already in {args.db}, {len(todo)} to evaluate ({args.metric})")
        try:
            for i, value, details in tqdm(evaluator([archs[i] for i in todo]), total=len(todo), unit="net",
                                          desc=f"eval {args.metric}", disable=args.quiet):
                store.put(archs[todo[i]], args.metric, value, details)
        except KeyboardInterrupt:
            print("\ninterrupted: every result measured so far is stored; run the same command again to continue")
        results = [(a, s, store.get(a, args.metric)) for a, s in zip(archs, summed)]
        if args.export:
            print(f"exported {store.export(args.export, args.metric)} rows to {args.export}")
    measured = [r for r in results if r[2] is not None]
    if measured:
        print(summarize(np.array([r[2] for r in measured]), args.metric, evaluator.unit))
        best = sorted(measured, key=lambda r: r[2], reverse=evaluator.higher_is_better)[:10]
        print(f"10 best by {args.metric} ({'higher' if evaluator.higher_is_better else 'lower'} is better):")
        for arch, s, value in best:
            print(f"  {value:10.4g} {evaluator.unit:<6} score {s:9.4g}  r{arch.resolution}  {describe(arch)}")
    return results


if __name__ == "__main__":
    main()

"""Evaluate the networks of a reduced search space: the top-k units of every stage, recombined.

    python eval_topk_ofa.py -unit_corpus units/<name>_labeled_sgs.json -k 3 -m cpu -n 20
    python eval_topk_ofa.py -unit_corpus ... -k 3 -m acc flops 2080ti_predicted -supernet_path \\
                            ofa_mbv3_d234_e346_k357_w1.2 -imagenet_dir /data/imagenet -start_idx 100 -n 100

Networks are ordered by summed unit score (or shuffled with -seed >= 0) and the slice [start_idx, start_idx + n) is
evaluated (-n -1, the default, means all): only that slice is enumerated, however large the space. Every metric of
-m (case-insensitive) is stored as its own row in a SQLite database (-db): several processes may share it, a re-run
skips what is done, and an interruption loses nothing already measured. Metrics: see evaluation/evaluators.py.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from evaluation.backends import add_backend_arguments, backend_from_args
from evaluation.evaluators import L1_DIR, evaluate_missing, make_evaluator
from evaluation.results_store import EXPORT_SUFFIXES, ResultsStore
from iterators.errors import ArgumentParser, UserError, check_output_file, run_cli
from iterators.runtime import configure
from iterators.search_space import describe, resolution_flag
from iterators.units import ReducedSpace, load_unit_corpus, rank_networks

MAX_SHUFFLED = 1 << 64  # networks; the seeded permutation covers spaces up to this size


def summarize(values: np.ndarray, metric: str, unit: str) -> str:
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return (f"{metric} ({unit}) over {len(values)} networks: min {q[0]:.4g}, p25 {q[1]:.4g}, median {q[2]:.4g}, "
            f"p75 {q[3]:.4g}, max {q[4]:.4g}, mean {values.mean():.4g}")


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("-unit_corpus", required=True, help="a *_labeled_sgs.json written by label_units.py")
    p.add_argument("-k", type=int, nargs="+", default=[5], help="one k for all units, or one per unit (default 5)")
    p.add_argument("-m", "-metric", dest="metrics", nargs="+", default=["acc"],
                   help="one or more of acc, cpu, gpu, flops, params, <device>_predicted (default acc)")
    p.add_argument("-n", type=int, default=-1, help="networks to evaluate (default -1: all from start_idx)")
    p.add_argument("-start_idx", type=int, default=0)
    p.add_argument("-seed", type=int, default=-1, help="shuffle the networks with this seed instead of ordering "
                   "them by summed unit score (default -1: by score)")
    p.add_argument("-res", type=resolution_flag, default=224, help="input resolution of the evaluated networks")
    p.add_argument("-no_eval", action="store_true", help="only list the networks of the slice")
    p.add_argument("-db", default="evals/results.db", help="SQLite results database")
    p.add_argument("-export", default=None, help="also write the results of these metrics to a .csv or .json file")
    p.add_argument("-supernet_path", default=None, help="OFA supernet weights (for -m acc)")
    p.add_argument("-imagenet_dir", default=None, help="ImageNet in ImageFolder layout (for -m acc)")
    p.add_argument("-device", default=None, help="device of -m acc (and the GPU of -m gpu); default: cuda when "
                   "available, else cpu")
    p.add_argument("-num_workers", type=int, default=None, help="ImageNet data-loader workers for -m acc "
                   "(default: one per core, at most 8)")
    p.add_argument("-threads", type=int, default=1, help="torch threads (CPU latency, predicted metrics)")
    p.add_argument("-l1_dir", default=L1_DIR, help="folder of latency predictors for <device>_predicted")
    p.add_argument("-quiet", action="store_true")
    add_backend_arguments(p)
    args = p.parse_args(argv)
    if args.n == 0 or args.n < -1:
        p.error(f"-n {args.n}: give the number of networks to evaluate (>= 1), or -1 for all")
    if args.start_idx < 0:
        p.error(f"-start_idx {args.start_idx}: the first network is 0")
    if min(args.k) < 1:
        p.error(f"-k {' '.join(map(str, args.k))}: every k must be at least 1")
    if args.threads < 1 or (args.num_workers is not None and args.num_workers < 0):
        p.error("-threads must be at least 1 and -num_workers at least 0")
    args.metrics = list(dict.fromkeys(m.strip().lower() for m in args.metrics))
    return args


def main(argv=None) -> list[tuple]:
    """Returns one (arch, summed unit score, {metric: value or None}) per network of the slice."""
    args = parse_args(argv)
    configure(args.threads)
    resolution = args.res
    if not args.no_eval:  # output paths first: a bad one must not cost an evaluation
        check_output_file(args.db, "-db")
        if args.export:
            check_output_file(args.export, "-export", EXPORT_SUFFIXES)
    corpus = load_unit_corpus(args.unit_corpus)
    family = corpus.family
    space = ReducedSpace.top_k(corpus, args.k)  # the space save_topk_ofa.py keeps from this corpus
    scores = space.scores()
    best_first = -1 if space.sources[0]["keep"] == "lowest" else 1  # a cost corpus: lowest summed score first
    size = space.size
    if args.start_idx >= size:
        raise UserError(f"-start_idx {args.start_idx}: the space has {size:,} networks (0 .. {size - 1})")
    seed = args.seed if args.seed >= 0 else None
    if seed is not None and size > MAX_SHUFFLED:
        raise UserError(f"-seed: {size:,} networks are too many to shuffle; use smaller -k or order by score")
    stop = size if args.n == -1 else min(size, args.start_idx + args.n)
    picked = rank_networks([[best_first * s for s in position] for position in scores], seed, args.start_idx, stop)
    archs = [space.network(row, resolution) for row in picked]
    summed = [sum(scores[u][i] for u, i in enumerate(row)) for row in picked]
    print(f"{family} reduced space: {' x '.join(map(str, space.sizes))} = {size:,} networks at resolution "
          f"{resolution}; slice [{args.start_idx}, {stop}) "
          f"{'shuffled with seed ' + str(seed) if seed is not None else 'by summed unit score'}")
    if args.no_eval:
        for i, (arch, s) in enumerate(zip(archs, summed), start=args.start_idx):
            print(f"{i:>6}  score {s:10.4g}  {describe(arch)}")
        return [(a, s, {}) for a, s in zip(archs, summed)]

    backend = backend_from_args(args)
    evaluators = [backend.evaluator(make_evaluator, m, family, args.supernet_path, args.imagenet_dir, args.l1_dir,
                                    threads=args.threads, device=args.device, workers=args.num_workers)
                  for m in args.metrics]
    values = {}
    with backend, ResultsStore(args.db) as store:
        try:
            for ev in evaluators:
                values[ev.metric] = store.values(archs, ev.metric, ev.predictor)  # one query per metric
                todo = sum(v is None for v in values[ev.metric])
                print(f"{len(archs) - todo} already in {args.db}, {todo} to evaluate ({ev.metric})")
                with tqdm(total=todo, unit="net", desc=f"eval {ev.metric}", disable=args.quiet) as bar:
                    backend.show_rates(bar)
                    not_finite = evaluate_missing(ev, archs, values[ev.metric], store, lambda: bar.update(1))
                if not_finite:
                    print(f"{not_finite} networks gave a non-finite {ev.metric}: skipped, not stored")
        except KeyboardInterrupt:
            print("\ninterrupted: every result measured so far is stored; run the same command again to continue")
        if backend.summary():
            print(backend.summary())
        if args.export:
            print(f"exported {store.export(args.export, args.metrics)} rows to {args.export}")
    for ev in evaluators:
        _report(ev, archs, summed, values.get(ev.metric, [None] * len(archs)))
    return [(a, s, {m: v[i] for m, v in values.items()}) for i, (a, s) in enumerate(zip(archs, summed))]


def _report(ev, archs, summed, values) -> None:
    measured = [(a, s, v) for a, s, v in zip(archs, summed, values) if v is not None]
    if not measured:
        return
    print(summarize(np.array([v for _, _, v in measured]), ev.metric, ev.unit))
    best = sorted(measured, key=lambda r: r[2], reverse=ev.higher_is_better)[:10]
    print(f"10 best by {ev.metric} ({'higher' if ev.higher_is_better else 'lower'} is better):")
    for arch, s, value in best:
        print(f"  {value:10.4g} {ev.unit:<6} score {s:9.4g}  r{arch.resolution}  {describe(arch)}")


if __name__ == "__main__":
    run_cli(main)

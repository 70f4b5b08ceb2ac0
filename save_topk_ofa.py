"""Cut a search space down to the k best-scored units of every stage, from one unit corpus or several merged.

    python save_topk_ofa.py -unit_corpus units/<name>_labeled_sgs.json -k 3            # k for every unit position
    python save_topk_ofa.py -unit_corpus units/<name>_labeled_sgs.json -k 5 3 3 3 2    # one k per position
    python save_topk_ofa.py -unit_corpus units/<a>_labeled_sgs.json units/<b>_labeled_sgs.pkl -k 2

Each corpus contributes its k best units per position: the highest-scored, or the lowest-scored when its target is a
cost such as latency (-keep overrides); several corpora are merged per position, a unit listed twice kept once. Writes
evals/<name>_<k1-k2-...>_search_space.json (-out to choose), the file rm_search/run_unit_pareto_search.py reads.
Corpora written by the original code (*_labeled_sgs.pkl) are read too.
"""
from __future__ import annotations

import os

from iterators.errors import ArgumentParser, check_output_dir, check_output_file, run_cli
from iterators.search_space import describe
from iterators.units import ReducedSpace, load_unit_corpus, rank_networks


def default_out(corpus_paths: list[str], ks: list[int], out_dir: str) -> str:
    names = [os.path.basename(p).removesuffix(".json").removesuffix(".pkl").removesuffix("_labeled_sgs")
             for p in corpus_paths]
    name = names[0] if len(names) == 1 else f"{names[0]}_and_{len(names) - 1}_more"
    return os.path.join(out_dir, f"{name}_{'-'.join(map(str, ks))}_search_space.json")


def main(argv=None) -> str:
    p = ArgumentParser(__doc__)
    p.add_argument("-unit_corpus", nargs="+", required=True,
                   help="one or more *_labeled_sgs.json (label_units.py) or *_labeled_sgs.pkl (the original's)")
    p.add_argument("-k", type=int, nargs="+", required=True, help="one k for all unit positions, or one per position")
    p.add_argument("-keep", choices=["auto", "highest", "lowest"], default="auto",
                   help="which end of each corpus to keep (auto: lowest for a cost target, else highest)")
    p.add_argument("-n", type=int, default=-1,
                   help="also list the first n networks of the space (by summed unit score for a single corpus); "
                        "the original accepts -n and ignores it, so its default -1 lists none")
    p.add_argument("-out_dir", default="evals")
    p.add_argument("-out", default=None, help="output file (default: <out_dir>/<name>_<k>_search_space.json)")
    args = p.parse_args(argv)
    out = args.out or default_out(args.unit_corpus, args.k, args.out_dir)
    if args.out:
        check_output_file(out, "-out", (".json",))
    else:
        check_output_dir(args.out_dir, "-out_dir")
    spaces = []
    for path in args.unit_corpus:
        corpus = load_unit_corpus(path)
        spaces.append(ReducedSpace.top_k(corpus, args.k, args.keep))
        print(f"{path}: {corpus.family}, target {corpus.target or 'unknown'}: keeping the "
              f"{spaces[-1].sources[0]['keep']}-scored {'/'.join(map(str, spaces[-1].sources[0]['k']))} units per "
              "position")
    space = ReducedSpace.merge(spaces)
    for position, n in enumerate(space.sizes, start=1):
        print(f"unit {position}: {n} units")
    print(f"reduced space: {' x '.join(map(str, space.sizes))} = {space.size:,} networks")
    if args.n > 0:
        scores = space.scores() if len(spaces) == 1 else [[0.0] * n for n in space.sizes]
        best_first = -1 if space.sources[0]["keep"] == "lowest" else 1
        for i, row in enumerate(rank_networks([[best_first * s for s in pos] for pos in scores], None, 0, args.n)):
            print(f"{i:>6}  " + " || ".join(describe(space.candidates[pos][j]["config"]) for pos, j in enumerate(row)))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    space.save(out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    run_cli(main)

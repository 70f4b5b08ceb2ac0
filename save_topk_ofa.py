"""Cut a search space down to the k best-scored units of every stage.

    python save_topk_ofa.py -unit_corpus units/<name>_labeled_sgs.json -k 3        # k for every unit
    python save_topk_ofa.py -unit_corpus units/<name>_labeled_sgs.json -k 5 3 3 3 2  # one k per unit

Writes evals/<name>_<k1-k2-...>_search_space.json: a list with, per unit, the kept unit configs in score order.
"""
from __future__ import annotations

import json
import math
import os

from iterators.errors import ArgumentParser, check_output_dir, run_cli
from iterators.units import load_unit_corpus, top_k_units


def main(argv=None) -> str:
    p = ArgumentParser(__doc__)
    p.add_argument("-unit_corpus", required=True, help="a *_labeled_sgs.json written by label_units.py")
    p.add_argument("-k", type=int, nargs="+", required=True, help="one k for all units, or one per unit")
    p.add_argument("-out_dir", default="evals")
    args = p.parse_args(argv)
    check_output_dir(args.out_dir, "-out_dir")
    corpus = load_unit_corpus(args.unit_corpus)
    try:
        space = top_k_units(corpus, args.k)
    except ValueError as err:
        p.error(str(err))
    ks = [len(units) for units in space]
    for unit, units in enumerate(space, start=1):
        print(f"unit {unit}: kept {len(units)} of {sum(u['unit'] == unit for u in corpus)}")
    print(f"reduced space: {' x '.join(map(str, ks))} = {math.prod(ks):,} networks")
    os.makedirs(args.out_dir, exist_ok=True)
    name = os.path.basename(args.unit_corpus).removesuffix(".json").removesuffix("_labeled_sgs")
    out = os.path.join(args.out_dir, f"{name}_{'-'.join(map(str, args.k))}_search_space.json")
    with open(out, "w") as f:  # one unit position per line
        f.write("[\n" + ",\n".join(json.dumps([u["config"] for u in units]) for units in space) + "\n]\n")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    run_cli(main)

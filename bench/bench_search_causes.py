"""Why reduced spaces lost to plain search: the experiments behind each cause, on bench_search.py's oracles and corpora.

    python bench/bench_search.py ...                 # first: builds the caches and unit corpora in -work_dir
    python bench/bench_search_causes.py -work_dir bench_search_work [-families ofa_mbv3] [-cost_oracle ...]

1. Where each single-corpus top-3 space lies: its networks' accuracy and cost against the reference point, and the
   share of the reference box its networks span.
2. Whether label_units' order of the units of a position matches the oracle's order of whole networks containing
   them: every sampled unit is put into the same random networks (contexts), the oracle's mean over them is the
   unit's value; Spearman over all sampled units and within each depth, and how much of each ordering depth alone
   explains.
"""
from __future__ import annotations

import os
import random
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.bench_search import COMBINED, PUBLISHED_L1, REFERENCE_SAMPLE, oracles_for, training_cache, unit_corpus  # noqa
from evaluation.evaluators import PREDICTED_SUFFIX  # noqa: E402
from iterators.errors import ArgumentParser, run_cli  # noqa: E402
from iterators.search_space import FAMILIES, describe, random_arch  # noqa: E402
from iterators.units import (ReducedSpace, UnitCorpus, assemble, rank_networks,  # noqa: E402
                             split_into_units)
from rm_search.search import MemoryObjectives  # noqa: E402
from rm_search.space import SearchSpace  # noqa: E402


def depth_share(values: np.ndarray, depths: np.ndarray) -> float:
    """Fraction of the variance of ``values`` explained by depth alone (between-depth variance / total)."""
    means = {d: values[depths == d].mean() for d in set(depths)}
    fitted = np.array([means[d] for d in depths])
    return float(fitted.var() / values.var()) if values.var() > 0 else float("nan")


def space_extent(space: ReducedSpace, objectives, resolution: int, reference, best) -> str:
    archs = [space.network(row, resolution) for row in rank_networks([[0.0] * n for n in space.sizes])[:2000]]
    pts = np.array(objectives(archs))
    span_acc = (pts[:, 0].max() - pts[:, 0].min()) / (best[0] - reference[0])
    span_cost = (pts[:, 1].max() - pts[:, 1].min()) / (reference[1] - best[1])
    beyond = float(np.mean((pts[:, 1] >= reference[1]) | (pts[:, 0] <= reference[0])))
    return (f"{space.size:>6,} networks; accuracy {pts[:, 0].min():.4f}-{pts[:, 0].max():.4f}, cost "
            f"{pts[:, 1].min():.4g}-{pts[:, 1].max():.4g}; spans {span_acc:.0%} of the box in accuracy, "
            f"{span_cost:.0%} in cost; {beyond:.0%} of its networks beyond the reference point")


def unit_order_check(corpora: dict[str, UnitCorpus], oracle_of: dict, family: str, resolution: int, n_units: int,
                     n_contexts: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    contexts = [split_into_units(random_arch(family, rng, (resolution,))) for _ in range(n_contexts)]
    lines = ["| position | corpus | Spearman, all units | Spearman within one depth | depth explains, scores | "
             "depth explains, oracle |", "|---|---|---:|---|---:|---:|"]
    for position in range(1, len(FAMILIES[family].units) + 1):
        units = next(iter(corpora.values())).at(position)
        picked = rng.sample(range(len(units)), min(n_units, len(units)))
        archs = [assemble(family, ctx[:position - 1] + [units[i]["config"]] + ctx[position:], resolution)
                 for i in picked for ctx in contexts]
        depths = np.array([units[i]["hops"] + 1 for i in picked])
        for name, corpus in corpora.items():
            by_config = {str(u["config"]): u["score"] for u in corpus.at(position)}
            scores = np.array([by_config[str(units[i]["config"])] for i in picked])
            value = np.array(oracle_of[name](archs)).reshape(len(picked), n_contexts).mean(1)
            within = [f"{d} blocks: {stats.spearmanr(scores[depths == d], value[depths == d]).statistic:+.2f}"
                      for d in sorted(set(depths)) if (depths == d).sum() > 5]
            lines.append(f"| {position} | {name} | {stats.spearmanr(scores, value).statistic:+.2f} | "
                         + ", ".join(within)
                         + f" | {depth_share(scores, depths):.0%} | {depth_share(value, depths):.0%} |")
    return lines


def main(argv=None) -> str:
    p = ArgumentParser(__doc__)
    p.add_argument("-families", nargs="+", default=sorted(FAMILIES), choices=sorted(FAMILIES))
    p.add_argument("-acc_oracle", nargs="+", default=None)
    p.add_argument("-cost_oracle", nargs="+", default=[d + PREDICTED_SUFFIX for d in ("2080ti", "2990wx", "kirin9000")])
    p.add_argument("-l1_dir", default=PUBLISHED_L1)
    p.add_argument("-train_cache", nargs="+", default=None)
    p.add_argument("-cache_size", type=int, default=3000)
    p.add_argument("-cache_seed", type=int, default=12345)
    p.add_argument("-epochs", type=int, default=60)
    p.add_argument("-resolution", type=int, default=224)
    p.add_argument("-units", type=int, default=300, help="units sampled per position")
    p.add_argument("-contexts", type=int, default=16, help="random networks each sampled unit is placed into")
    p.add_argument("-work_dir", default="bench_search_work")
    p.add_argument("-out", default="bench_search_out/bench_search_causes.md")
    args = p.parse_args(argv)
    lines = ["# Why reduced spaces lost to plain search", ""]

    def log(msg):
        print(msg, flush=True)
    for family in args.families:
        accuracy, costs = oracles_for(family, args)
        cache = training_cache(family, [accuracy, *costs], args, log)
        acc = unit_corpus(family, "acc", cache, args, log)
        full = SearchSpace.full(family, args.resolution)
        for cost in costs:
            cost_corpus = unit_corpus(family, cost.name, cache, args, log)
            combined = [unit_corpus(family, c.format(cost=cost.name), cache, args, log) for c in COMBINED]
            objectives = MemoryObjectives(accuracy.evaluate, cost.evaluate)
            sample = np.array(objectives([full.sample(random.Random(i)) for i in range(REFERENCE_SAMPLE)]))
            reference = (float(sample[:, 0].min()), float(sample[:, 1].max()))
            best = (float(sample[:, 0].max()), float(sample[:, 1].min()))
            lines += [f"## {family} / {cost.label}", "",
                      f"Reference point {reference[0]:.4f}, {reference[1]:.4g}; best of the random sample "
                      f"{best[0]:.4f}, {best[1]:.4g}.", "", "Where each space lies:", ""]
            spaces = {"top-3 by accuracy": ReducedSpace.top_k(acc, [3]),
                      "top-3 by cost (lowest)": ReducedSpace.top_k(cost_corpus, [3]),
                      "top-3 by the paper's combined target": ReducedSpace.top_k(combined[0], [3]),
                      **{f"top-3 by combined target {i + 1}": ReducedSpace.top_k(c, [3])
                         for i, c in enumerate(combined[1:], start=1)},
                      "top-1 of acc + the paper's combined + cost merged": ReducedSpace.merge(
                          [ReducedSpace.top_k(c, [1]) for c in (acc, combined[0], cost_corpus)]),
                      "top-2 of the 5 trade-offs merged": ReducedSpace.merge(
                          [ReducedSpace.top_k(c, [2]) for c in (acc, *combined, cost_corpus)])}
            for name, space in spaces.items():
                lines.append(f"- {name}: {space_extent(space, objectives, args.resolution, reference, best)}")
            lines += ["", "What top-3 by accuracy keeps, per position:", ""]
            for position, cands in enumerate(spaces["top-3 by accuracy"].candidates, start=1):
                lines.append(f"- unit {position}: " + "; ".join(describe(c["config"]) for c in cands))
            lines += ["", "Does label_units' order match the oracle's order of whole networks containing the unit?",
                      ""]
            lines += unit_order_check({"acc": acc, cost.label: cost_corpus},
                                      {"acc": accuracy.evaluate, cost.label: cost.evaluate}, family,
                                      args.resolution, args.units, args.contexts, args.cache_seed)
            lines.append("")
            print("\n".join(lines[-40:]), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    run_cli(main)

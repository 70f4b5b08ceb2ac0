"""The paper's search experiment, made honest: do spaces built from the best-scored units lead a search to better
accuracy/cost fronts than searching the whole space, at the same number of oracle evaluations?

    python bench/bench_search.py            # both families, 3 published devices, budgets 100/250/1000, 5 seeds
    python bench/bench_search.py -families ofa_mbv3 -cost_oracle 2080ti_predicted -budgets 250 -seeds 0 1

The oracles that play "evaluation" are never the predictors that score units. Accuracy: -acc_oracle (default: the
family's published accuracy predictor); cost: -cost_oracle, checkpoints or metric names (default: the published
2080 Ti, 2990WX and Kirin 9000 latency predictors, the paper's -metric X_predicted). Any predictor checkpoint may be
either oracle.

1. A training cache: -cache_size random networks labelled by the oracles (or -train_cache, a cache with the metric
   acc and one cost column per oracle as the cache header names them).
2. Unit predictors trained by train_predictor.py on it (accuracy, each cost, and per cost the combined target
   np.power(100, acc)/(np.log10(<cost>+1)+1) of the paper and the same with its denominator squared and to the
   fourth power: three trade-offs), and label_units.py's score of every unit with each.
3. Reduced spaces built from those corpora as save_topk_ofa.py builds them, and every method at every budget and
   seed. Hypervolume reference point, one per family and cost, shared by all methods: the worst accuracy and worst
   cost of 2,000 random networks; hypervolumes are fractions of the box from it to their best accuracy and cost.

Everything is kept in -work_dir, so an interrupted run resumes where it stopped; -out_dir gets the tables
(bench_search.md, bench_search.json) and the hypervolume-against-evaluations plot.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_predictor  # noqa: E402
from evaluation.evaluators import PREDICTED_SUFFIX, PUBLISHED_DEVICES, make_evaluator  # noqa: E402
from iterators.caches import load_cache, write_cache  # noqa: E402
from iterators.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from iterators.paths import REPO  # noqa: E402
from iterators.runtime import add_threads_flag, configure  # noqa: E402
from iterators.search_space import FAMILIES, Arch, random_arch  # noqa: E402
from iterators.units import ReducedSpace, UnitCorpus, load_unit_corpus  # noqa: E402
from models.checkpoints import load_predictor, run_name  # noqa: E402
from models.predictor import predict_archs  # noqa: E402
from models.unit_scores import score_units  # noqa: E402
from rm_search.nsga2 import run_nsga2  # noqa: E402
from rm_search.pareto import front_2d, hypervolume_2d  # noqa: E402
from rm_search.plots import plot_hypervolume_curves  # noqa: E402
from rm_search.search import DIRECTIONS, MemoryObjectives, SearchConfig, SearchState, paper_schedule, run_search  # noqa
from rm_search.space import SearchSpace  # noqa: E402

PUBLISHED_L1 = os.path.join(os.path.dirname(REPO), "shared", "upstream_l1", "l1_models")
# combined targets: the paper's, then latency weighted twice and four times as much (exponents of its denominator)
COMBINED = ("np.power(100, acc)/(np.log10({cost}+1)+1)", "np.power(100, acc)/np.power(np.log10({cost}+1)+1, 2)",
            "np.power(100, acc)/np.power(np.log10({cost}+1)+1, 4)")
REFERENCE_SAMPLE = 2000
WIDEN = 0.1  # seeded + widened: probability that a mutation draws from the whole stage


@dataclass
class Oracle:
    name: str                                    # column of the training cache, e.g. acc, latency_2080ti
    label: str                                   # for tables, e.g. 2080ti
    family: str | None                           # None: a metric that serves every family
    evaluate: Callable[[list[Arch]], list[float]] | None = None
    source: str = ""


def checkpoint_oracle(path: str, accuracy: bool) -> Oracle:
    model, config = load_predictor(path)
    target = str(config["target"])
    stem = os.path.basename(path)[:-len("_predictor.pt")]
    published = stem.startswith("minMAE_") and target in PUBLISHED_DEVICES
    label = "acc" if accuracy else (PUBLISHED_DEVICES[target] if published else stem)
    return Oracle("acc" if accuracy else f"latency_{label}", label, config["family"],
                  lambda archs: predict_archs(model, archs), path)


def metric_oracle(metric: str, family: str, l1_dir: str) -> Oracle:
    evaluator = make_evaluator(metric, family, l1_dir=l1_dir)
    label = metric[:-len(PREDICTED_SUFFIX)].lower() if metric.endswith(PREDICTED_SUFFIX) else metric

    def evaluate(archs):
        values = [0.0] * len(archs)
        for i, value, _ in evaluator(archs):
            values[i] = value
        return values
    name = f"latency_{label}" if metric.endswith(PREDICTED_SUFFIX) or metric in ("cpu", "gpu") else metric
    return Oracle(name, label, family, evaluate, metric)


def published_acc(family: str) -> str:
    return os.path.join(PUBLISHED_L1, f"minMAE_{family}_custom_acc_GraphConv_sum_directed_srcc1_predictor.pt")


def oracles_for(family: str, args) -> tuple[Oracle, list[Oracle]]:
    acc_paths = [p for p in args.acc_oracle if load_predictor(p)[1]["family"] == family] if args.acc_oracle \
        else [published_acc(family)]
    if len(acc_paths) != 1:
        raise UserError(f"-acc_oracle: give exactly one checkpoint of {family}, found {len(acc_paths)}")
    accuracy = checkpoint_oracle(acc_paths[0], accuracy=True)
    costs = []
    for spec in args.cost_oracle:
        if spec.endswith(".pt"):
            oracle = checkpoint_oracle(spec, accuracy=False)
            if oracle.family == family:
                costs.append(oracle)
        else:
            costs.append(metric_oracle(spec, family, args.l1_dir))
    if not costs:
        raise UserError(f"-cost_oracle: none of {args.cost_oracle} serves {family}")
    return accuracy, costs


# --- 1. the training cache and 2. the unit corpora -----------------------------------------------------------------

def training_cache(family: str, oracles: list[Oracle], args, log) -> str:
    if args.train_cache:
        return next((p for p in args.train_cache if load_cache(p).family == family), None) or \
            _raise(f"-train_cache: no cache of {family} among {args.train_cache}")
    path = os.path.join(args.work_dir, f"{family}_oracle_cache.jsonl.gz")
    if os.path.exists(path):
        return path
    rng, seen, archs = random.Random(args.cache_seed), set(), []
    while len(archs) < args.cache_size:
        arch = random_arch(family, rng, (args.resolution,))
        if arch.key() not in seen:
            seen.add(arch.key())
            archs.append(arch)
    columns = {o.name: o.evaluate(archs) for o in oracles}
    write_cache(path, family, archs, [{name: float(v[i]) for name, v in columns.items()} for i in range(len(archs))],
                {o.name: {"unit": "oracle", "source": o.source} for o in oracles},
                notes=f"{len(archs)} random {family} networks labelled by the bench_search oracles")
    log(f"{family}: wrote {path} ({len(archs)} networks labelled by {', '.join(columns)})")
    return path


def _raise(message: str):
    raise UserError(message)


def unit_corpus(family: str, target: str, cache: str, args, log) -> UnitCorpus:
    """Train a unit predictor on ``target`` with train_predictor.py and score every unit with it (cached)."""
    tag = f"bench{args.epochs}"
    argv = ["-cache", cache, "-families", family, "-target", target, "-epochs_predictor", str(args.epochs), "-out_dir", args.work_dir,
            "-tag", tag, "-quiet", "-seed", str(args.cache_seed)]
    name = run_name({**vars(train_predictor.parse_args(argv)), "family": family})
    corpus_path = os.path.join(args.work_dir, "units", f"{name}_labeled_sgs.json")
    if os.path.exists(corpus_path):
        return load_unit_corpus(corpus_path)
    chkpt = os.path.join(args.work_dir, "saved_models", f"{name}_predictor.pt")
    if not os.path.exists(chkpt):
        start = time.perf_counter()
        with open(os.path.join(args.work_dir, "train.log"), "a") as out, contextlib.redirect_stdout(out):
            result = train_predictor.main(argv)
        log(f"{family}: trained the {target!r} unit predictor in {time.perf_counter() - start:.0f}s "
            f"(test Spearman {result['results']['test']['Spearman']:.3f})")
    model, config = load_predictor(chkpt)
    units = score_units(model, family, args.resolution, config.get("norm", 1), progress=False)
    os.makedirs(os.path.dirname(corpus_path), exist_ok=True)
    return load_unit_corpus(UnitCorpus(family, units, target, os.path.basename(chkpt)).save(corpus_path))


# --- 3. methods ----------------------------------------------------------------------------------------------------

def reduced_spaces(acc: UnitCorpus, cost: UnitCorpus, combined: list[UnitCorpus]
                   ) -> dict[str, tuple[ReducedSpace, float]]:
    """Method name -> (reduced space, widening) for one family and cost, built as save_topk_ofa.py builds them.

    ``combined``: corpora of the combined target with latency weighted ever more (the paper's own target first).
    """
    def merged(corpora, ks):
        return ReducedSpace.merge([ReducedSpace.top_k(c, ks) for c in corpora])
    trade_offs = [acc, *combined, cost]
    return {
        "top-3 accuracy (paper)": (ReducedSpace.top_k(acc, [3]), 0.0),
        "top-3 cost": (ReducedSpace.top_k(cost, [3]), 0.0),
        "top-3 combined (paper)": (ReducedSpace.top_k(combined[0], [3]), 0.0),
        "acc + combined + cost, top-1 each": (merged([acc, combined[0], cost], [1]), 0.0),
        "5 trade-offs merged, top-1 each": (merged(trade_offs, [1]), 0.0),
        "5 trade-offs merged, top-2 each": (merged(trade_offs, [2]), 0.0),
        "5 trade-offs merged, k per stage": (merged(trade_offs, stage_ks(cost)), 0.0),
        "5 trade-offs top-2, seeded + widened": (merged(trade_offs, [2]), WIDEN),
    }


def stage_ks(cost: UnitCorpus, mean_k: int = 2) -> list[int]:
    """More units where a position's choice moves the cost most: k proportional to the spread of its cost scores."""
    spans = np.array([np.ptp([u["score"] for u in cost.at(p)]) for p in range(1, len(FAMILIES[cost.family].units) + 1)])
    return [max(1, int(round(mean_k * s / spans.mean()))) for s in spans]


def run_method(method: str, space: SearchSpace | None, objectives, family: str, budget: int, seed: int,
               resolution: int) -> SearchState:
    if method == "random sampling":
        return run_search(space, objectives, SearchConfig(random_init_set_size=budget, num_iterations=0, seed=seed),
                          log=lambda m: None)
    if method == "NSGA-II (pymoo)":
        return run_nsga2(family, resolution, objectives, budget, pop_size=budget // 5, seed=seed)
    return run_search(space, objectives, paper_schedule(budget, seed=seed), log=lambda m: None)


def hypervolume_curve(points: list, reference, box: float, step: int, budget: int) -> list[float]:
    return [hypervolume_2d(points[:n], reference, DIRECTIONS) / box for n in range(step, budget + 1, step)]


# --- reporting -----------------------------------------------------------------------------------------------------

def summarize(records: list[dict], methods: list[str], budgets: list[int]) -> dict:
    """Per (family, cost): per method and budget, mean/std hypervolume and share of the union front."""
    out = {}
    for key in sorted({(r["family"], r["cost"]) for r in records}):
        rows = [r for r in records if (r["family"], r["cost"]) == key]
        table = {}
        for budget in budgets:
            runs = [r for r in rows if r["budget"] == budget]
            pool = {k: p for r in runs for k, p in r["front"].items()}
            keys = list(pool)
            union = {keys[i] for i in front_2d([pool[k] for k in keys], DIRECTIONS)} if keys else set()
            for method in methods:
                mine = [r for r in runs if r["method"] == method]
                if not mine:
                    continue
                hv = np.array([r["hv"] for r in mine])
                found = set().union(*(r["front"] for r in mine)) & union
                table.setdefault(method, {})[budget] = {
                    "mean": float(hv.mean()), "std": float(hv.std()), "seeds": len(mine),
                    "share": len(found) / max(len(union), 1),
                    "evaluations": float(np.mean([r["evaluations"] for r in mine]))}
        out[f"{key[0]} / {key[1]}"] = table
    return out


def markdown(summary: dict, budgets: list[int], references: dict) -> str:
    lines = []
    for key, table in summary.items():
        ref = references[key]
        lines += [f"\n### {key}", "",
                  f"Reference point (accuracy, cost) = ({ref['reference'][0]:.4f}, {ref['reference'][1]:.4g}); "
                  f"box to ({ref['best'][0]:.4f}, {ref['best'][1]:.4g}). Hypervolume mean +- std over seeds "
                  "(fraction of the box); share = fraction of the union front of all methods found by the method.",
                  "",
                  "| method | " + " | ".join(f"HV @ {b}" for b in budgets) + " | "
                  + " | ".join(f"share @ {b}" for b in budgets) + " |",
                  "|---|" + "---:|" * (2 * len(budgets))]
        for method, cells in table.items():
            hv = [f"{cells[b]['mean']:.3f} +- {cells[b]['std']:.3f}" if b in cells else "" for b in budgets]
            hv = [h + ("*" if b in cells and cells[b]["evaluations"] < b else "") for h, b in zip(hv, budgets)]
            share = [f"{cells[b]['share']:.0%}" if b in cells else "" for b in budgets]
            lines.append(f"| {method} | " + " | ".join(hv) + " | " + " | ".join(share) + " |")
    lines.append("\n\\* the space holds fewer networks than the budget: the search evaluated all it could reach.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = ArgumentParser(__doc__)
    p.add_argument("-families", nargs="+", default=sorted(FAMILIES), choices=sorted(FAMILIES))
    p.add_argument("-acc_oracle", nargs="+", default=None,
                   help="accuracy oracle checkpoint(s), one per family (default: the published acc predictors)")
    p.add_argument("-cost_oracle", nargs="+",
                   default=[d + PREDICTED_SUFFIX for d in ("2080ti", "2990wx", "kirin9000")],
                   help="cost oracles: checkpoints or metric names (flops, params, <device>_predicted)")
    p.add_argument("-l1_dir", default=PUBLISHED_L1, help="where <device>_predicted finds its predictors")
    p.add_argument("-train_cache", nargs="+", default=None, help="oracle-labelled caches (default: built here)")
    p.add_argument("-cache_size", type=int, default=3000)
    p.add_argument("-cache_seed", type=int, default=12345)
    p.add_argument("-epochs", type=int, default=60, help="training epochs of every unit predictor")
    p.add_argument("-budgets", type=int, nargs="+", default=[100, 250, 1000])
    p.add_argument("-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("-methods", nargs="+", default=None, help="run only these methods (names as in the table)")
    p.add_argument("-resolution", type=int, default=224)
    p.add_argument("-work_dir", default="bench_search_work")
    p.add_argument("-out_dir", default="bench_search_out")
    add_threads_flag(p)
    args = p.parse_args(argv)
    for b in args.budgets:
        if b < 5 or b % 5:
            raise UserError(f"-budgets: {b} does not split into the paper's 5 equal parts")
    configure(args.threads)
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(args.out_dir, exist_ok=True)
    runs_path = os.path.join(args.work_dir, "runs.jsonl")
    done = {}
    if os.path.exists(runs_path):
        with open(runs_path) as f:
            for line in f:
                r = json.loads(line)
                done[(r["family"], r["cost"], r["method"], r["budget"], r["seed"])] = r
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f}s] {msg}", flush=True)

    references, methods = {}, None
    for family in args.families:
        accuracy, costs = oracles_for(family, args)
        cache = training_cache(family, [accuracy, *costs], args, log)
        acc_corpus = unit_corpus(family, "acc", cache, args, log)
        full = SearchSpace.full(family, args.resolution)
        for cost in costs:
            cost_corpus = unit_corpus(family, cost.name, cache, args, log)
            combined = [unit_corpus(family, c.format(cost=cost.name), cache, args, log) for c in COMBINED]
            spaces = reduced_spaces(acc_corpus, cost_corpus, combined)
            all_methods = ["random sampling", "Stage-Full (paper)", "NSGA-II (pymoo)", *spaces]
            methods = [m for m in all_methods if args.methods is None or m in args.methods]
            objectives = MemoryObjectives(accuracy.evaluate, cost.evaluate)
            sample = np.array(objectives([full.sample(random.Random(i)) for i in range(REFERENCE_SAMPLE)]))
            reference = (float(sample[:, 0].min()), float(sample[:, 1].max()))
            best = (float(sample[:, 0].max()), float(sample[:, 1].min()))
            box = (best[0] - reference[0]) * (reference[1] - best[1])
            key = f"{family} / {cost.label}"
            references[key] = {"reference": reference, "best": best,
                               "spaces": {m: s.sizes for m, (s, _) in spaces.items()}}
            log(f"{key}: reference point {reference}; reduced spaces "
                + ", ".join(f"{m}: {s.size:,}" for m, (s, _) in spaces.items()))
            for method in methods:
                space = full if method not in spaces else SearchSpace.reduced(spaces[method][0], args.resolution,
                                                                               widen=spaces[method][1])
                for budget in args.budgets:
                    for seed in args.seeds:
                        run_key = (family, cost.label, method, budget, seed)
                        if run_key in done:
                            continue
                        t0 = time.perf_counter()
                        state = run_method(method, space, objectives, family, budget, seed, args.resolution)
                        front = {state.archs[i].key(): list(state.points[i])
                                 for i in front_2d(state.points, DIRECTIONS)}
                        record = {"family": family, "cost": cost.label, "method": method, "budget": budget,
                                  "seed": seed, "evaluations": len(state.archs),
                                  "hv": hypervolume_2d(state.points, reference, DIRECTIONS) / box,
                                  "curve": hypervolume_curve(state.points, reference, box, max(budget // 50, 1),
                                                             budget),
                                  "front": front, "seconds": time.perf_counter() - t0}
                        done[run_key] = record
                        with open(runs_path, "a") as f:
                            f.write(json.dumps(record) + "\n")
                log(f"{key}: {method}: " + ", ".join(
                    f"{b}: {np.mean([done[(family, cost.label, method, b, s)]['hv'] for s in args.seeds]):.3f}"
                    for b in args.budgets))

    records = [r for r in done.values() if r["family"] in args.families and r["budget"] in args.budgets
               and r["seed"] in args.seeds and r["method"] in methods]
    summary = summarize(records, methods, sorted(args.budgets))
    table = markdown(summary, sorted(args.budgets), references)
    seconds = time.perf_counter() - started
    header = (f"# bench_search: {', '.join(args.families)}; budgets {args.budgets}; seeds {args.seeds}; "
              f"{args.cache_size} training networks, {args.epochs} epochs per unit predictor; {seconds:.0f}s\n")
    with open(os.path.join(args.out_dir, "bench_search.md"), "w") as f:
        f.write(header + table)
    with open(os.path.join(args.out_dir, "bench_search.json"), "w") as f:
        json.dump({"summary": summary, "references": references, "seconds": seconds, "args": vars(args)}, f, indent=1)
    plot = plot_hypervolume_curves(records, max(args.budgets), os.path.join(args.out_dir, "hypervolume.png"))
    print(header + table)
    print(f"wrote {args.out_dir}/bench_search.md, bench_search.json and {plot}")
    return summary


if __name__ == "__main__":
    run_cli(main)

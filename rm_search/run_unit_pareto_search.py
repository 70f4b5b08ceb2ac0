"""Evolutionary Pareto search over a full or reduced OFA space: accuracy against latency or FLOPs.

    python rm_search/run_unit_pareto_search.py -family ofa_mbv3 -model_name mbv3_topk \\
        -unit_corpus evals/<name>_3_search_space.json -metric cpu_predicted \\
        -acc_predictor saved_models/<acc name>_predictor.pt

Without -unit_corpus every unit of every stage is a candidate ("Stage-Full"). Accuracy comes from -acc_predictor (a
surrogate: an accuracy predictor of the same family) or from ImageNet (-supernet_path, -imagenet_dir); the cost from
-metric (cpu, gpu, flops, params or <device>_predicted, case-insensitive). -unit_corpus takes one or more reduced
spaces (merged per stage); -widen W starts the search in them and lets each mutation draw from the whole stage with
probability W, so the search can still leave them. Output: outputs/<model_name>/
(settings.json, search.log, front_iter<i>.json, final_front.txt, pareto.png). -resume continues a run with the
settings stored in its settings.json (-num_iterations may grow); other settings are refused, naming the flags.

Flags of the original AutoBuild/BlockProfile search scripts are accepted where they mean the same
(-imagenet_data_dir, -supernet_checkpoint_dir with -supernet_name, -device_str, -num_workers, -completed_iter 0,
-mutate_prob_type uniform) and otherwise refused with a line saying what to use instead.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tqdm import tqdm  # noqa: E402

from evaluation.backends import add_backend_arguments, backend_from_args  # noqa: E402
from evaluation.evaluators import L1_DIR, accuracy_evaluator, make_evaluator  # noqa: E402
from evaluation.ofa_manager import checkpoint_name  # noqa: E402
from evaluation.results_store import ResultsStore  # noqa: E402
from iterators.errors import ArgumentParser, UserError, check_output_dir, run_cli  # noqa: E402
from iterators.runtime import add_threads_flag, configure  # noqa: E402
from iterators.search_space import FAMILIES, describe, resolution_flag  # noqa: E402
from iterators.units import ReducedSpace  # noqa: E402
from rm_search.search import ObjectiveCache, SearchConfig, front_records, run_search, save_front  # noqa: E402
from rm_search.space import SearchSpace  # noqa: E402

SETTINGS = "settings.json"
# flags that may differ when a run is resumed: they change where things go or how fast, not what is found
RESUMABLE = {"model_name", "out_dir", "db", "resume", "quiet", "l1_dir", "imagenet_dir", "supernet_path", "device",
             "num_workers", "batch_size", "completed_iter", "mutate_prob_type", "supernet_checkpoint_dir",
             "supernet_name", "threads", "workers", "ray_address", "gpus_per_worker"}
# flags of the original search scripts with no counterpart here: what to use instead
ORIGINAL_FLAGS = {
    "-pareto_init_checkpoint": "a run continues from its results store: pass -resume with the same -model_name",
    "-lat_predictor_checkpoint": "put the latency predictor in -l1_dir and pass -metric <device>_predicted",
    "-lat_predictor_type": "put the latency predictor in -l1_dir and pass -metric <device>_predicted",
    "-evaluator_runs_dir": "everything a run writes goes to -out_dir/<model_name>/",
    "-logs_dir": "the log goes to -out_dir/<model_name>/search.log",
    "-saved_models_dir": "a search saves no model; its outputs go to -out_dir/<model_name>/",
    "-saved_model_file": "a search saves no model; its outputs go to -out_dir/<model_name>/",
    "-space_id": "give the reduced space as -unit_corpus <*_search_space.json> (save_topk_ofa.py)",
    "-stage_block_count_type": "give the reduced space as -unit_corpus <*_search_space.json> (save_topk_ofa.py)",
    "-fast": "ImageNet images are always read through the data loader; drop -fast",
    "-allow_parallel": "several processes may share one -db; drop -allow_parallel",
    "-max_gradient_norm": "a search trains nothing; drop it",
    "-word_delim": "drop it",
    "-run_test_only": "drop it",
    "-disable_checkpoint": "results are always stored in -db; drop it",
}


class _Refused(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} (a flag of the original search scripts) is not supported: "
                     f"{ORIGINAL_FLAGS[option_string]}")


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(__doc__)
    p.add_argument("-family", choices=sorted(FAMILIES), default="ofa_mbv3")
    p.add_argument("-model_name", required=True, help="names the output folder outputs/<model_name>/")
    p.add_argument("-resolution", type=resolution_flag, default=224)
    p.add_argument("-metric", default="flops", help="cost objective: cpu, gpu, flops, params, <device>_predicted")
    p.add_argument("-acc_predictor", default=None, help="accuracy surrogate checkpoint (else ImageNet evaluation)")
    p.add_argument("-imagenet_dir", "-imagenet_data_dir", dest="imagenet_dir", default=None,
                   help="ImageNet in ImageFolder layout (train/, val/)")
    p.add_argument("-supernet_path", default=None, help="OFA supernet weights, e.g. .../ofa_mbv3_d234_e346_k357_w1.2")
    p.add_argument("-supernet_checkpoint_dir", default=None, help="the original's way: the folder of the supernet "
                   "weights, with -supernet_name (default: the family's OFA name)")
    p.add_argument("-supernet_name", default=None, help="the original's way: file name of the supernet weights")
    p.add_argument("-device", "-device_str", dest="device", default=None,
                   help="device of ImageNet evaluation (default: cuda when available)")
    p.add_argument("-num_workers", type=int, default=None, help="ImageNet data-loader workers (default: one per "
                   "core, at most 8)")
    p.add_argument("-unit_corpus", nargs="+", default=None,
                   help="reduced spaces (save_topk_ofa.py's *_search_space.json, or the original's .pkl), merged")
    p.add_argument("-widen", type=float, default=0.0,
                   help="seed the search in the reduced space, then let each mutation draw its unit from the whole "
                        "stage with this probability (default 0: stay in the reduced space)")
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
    p.add_argument("-completed_iter", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("-mutate_prob_type", default="uniform", help=argparse.SUPPRESS)
    for flag in ORIGINAL_FLAGS:
        p.add_argument(flag, nargs="?", action=_Refused, help=argparse.SUPPRESS)
    p.add_argument("-quiet", action="store_true")
    add_backend_arguments(p)
    add_threads_flag(p)
    args = p.parse_args(argv)
    if args.completed_iter:
        p.error(f"-completed_iter {args.completed_iter}: a run continues from its results store: pass -resume with "
                f"the same -model_name (the completed iterations are replayed from the store, not re-evaluated)")
    if args.mutate_prob_type != "uniform":
        p.error(f"-mutate_prob_type {args.mutate_prob_type}: only uniform mutation is built in, with probability "
                f"-stage_mutate_prob; restrict the space with -unit_corpus instead")
    for name in ("stage_mutate_prob", "widen"):
        if not 0 <= getattr(args, name) <= 1:
            p.error(f"-{name} {getattr(args, name)} must lie in [0, 1]")
    if args.widen and not args.unit_corpus:
        p.error("-widen widens a reduced space: give it as -unit_corpus")
    for name in ("random_init_set_size", "eval_budget", "mutation_depth", "num_pareto_runs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"-{name} must be at least 1")
    if args.num_iterations < 0 or (args.num_workers is not None and args.num_workers < 0):
        p.error("-num_iterations and -num_workers must be at least 0")
    args.metric = args.metric.strip().lower()
    if args.metric == "acc":
        p.error("-metric is the cost objective (cpu, gpu, flops, params, <device>_predicted); accuracy is the other")
    args.supernet_path = _supernet_path(args, p)
    if args.imagenet_dir:
        args.imagenet_dir = os.path.expanduser(args.imagenet_dir)
    return args


def _supernet_path(args, p) -> str | None:
    """-supernet_path, or the original's -supernet_checkpoint_dir + -supernet_name."""
    if args.supernet_checkpoint_dir is None and args.supernet_name is None:
        return args.supernet_path
    if args.supernet_path:
        p.error("give either -supernet_path or -supernet_checkpoint_dir with -supernet_name, not both")
    expected = checkpoint_name(args.family)
    if args.supernet_name not in (None, expected):
        p.error(f"-supernet_name {args.supernet_name}: the {args.family} supernet is {expected}")
    if args.supernet_checkpoint_dir is None:
        p.error("-supernet_name needs -supernet_checkpoint_dir (the folder holding it), or give -supernet_path")
    return os.path.join(os.path.expanduser(args.supernet_checkpoint_dir), expected)


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def run_settings(args, accuracy, cost) -> dict:
    """What decides the outcome of a run: every flag except RESUMABLE, with files replaced by their content."""
    settings = {k: v for k, v in vars(args).items() if k not in RESUMABLE}
    settings["acc_predictor"] = accuracy.predictor or None  # the predictor's content, wherever the file lies
    settings["metric"] = f"{cost.metric}@{cost.predictor}" if cost.predictor else cost.metric
    if args.unit_corpus:
        settings["unit_corpus"] = [_file_digest(p) for p in args.unit_corpus]
    return settings


def check_resume(stored: dict, current: dict) -> None:
    differing = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k)
                       and not (k == "num_iterations" and current.get(k, 0) >= stored.get(k, 0)))
    if differing:
        flags = ", ".join(f"-{k} (was {stored.get(k)!r}, now {current.get(k)!r})" for k in differing)
        raise UserError(f"-resume: this run was started with other settings: {flags}; resume with the same "
                        f"settings, or start a new -model_name")


def main(argv=None):
    args = parse_args(argv)
    configure(args.threads)
    resolution = args.resolution
    out = os.path.join(args.out_dir, args.model_name)
    settings_path, log_path = os.path.join(out, SETTINGS), os.path.join(out, "search.log")
    started = os.path.exists(settings_path) or os.path.exists(log_path)
    if started and not args.resume:
        raise UserError(f"{out} holds an earlier search: pass -resume to continue it, or choose another -model_name")
    if args.resume and os.path.exists(log_path) and not os.path.exists(settings_path):
        raise UserError(f"-resume: {out} has no {SETTINGS} (an older run), so its settings cannot be checked; start "
                        f"a new -model_name")
    check_output_dir(out, "-out_dir")
    space = (SearchSpace.reduced(ReducedSpace.merge([ReducedSpace.load(f) for f in args.unit_corpus]), resolution,
                                 args.widen) if args.unit_corpus else SearchSpace.full(args.family, resolution))
    if space.family != args.family:
        raise UserError(f"-unit_corpus holds units of {space.family}, not {args.family}: pass -family "
                        f"{space.family}")
    backend = backend_from_args(args)
    accuracy = backend.evaluator(accuracy_evaluator, args.family, args.acc_predictor, supernet_path=args.supernet_path,
                                 imagenet_dir=args.imagenet_dir, batch_size=args.batch_size, device=args.device,
                                 workers=args.num_workers)
    cost = backend.evaluator(make_evaluator, args.metric, args.family, args.supernet_path, args.imagenet_dir,
                             args.l1_dir, flag="-metric")
    settings = run_settings(args, accuracy, cost)
    if args.resume and os.path.exists(settings_path):
        with open(settings_path) as f:
            check_resume(json.load(f), settings)
    metrics = ("accuracy", f"{args.metric} ({cost.unit})")
    cfg = SearchConfig(args.random_init_set_size, args.num_iterations, args.eval_budget, args.stage_mutate_prob,
                       args.mutation_depth, args.num_pareto_runs, args.seed,
                       tuple(args.hv_reference) if args.hv_reference else None)

    with backend, ResultsStore(args.db) as store:  # an unusable -db fails here, before anything is written
        os.makedirs(out, exist_ok=True)
        with open(settings_path + ".tmp", "w") as f:
            json.dump(settings, f, indent=1)
        os.replace(settings_path + ".tmp", settings_path)
        with open(log_path, "a") as log_file:
            def log(msg: str) -> None:
                tqdm.write(msg)
                log_file.write(msg + "\n")
                log_file.flush()

            log(f"{'resumed' if started else 'new'} search {args.model_name}: {args.family}, "
                f"{'reduced' if args.unit_corpus else 'full'} space of {space.size:.4g} networks at r{resolution}"
                f"{f', widened with probability {args.widen}' if args.widen else ''}; "
                f"objectives {accuracy.metric} (max), {cost.metric} (min); {vars(cfg)}")
            total = cfg.random_init_set_size + cfg.num_iterations * cfg.eval_budget
            with tqdm(total=total, unit="net", desc="search", disable=args.quiet) as bar:
                backend.show_rates(bar)
                state = run_search(space, ObjectiveCache(store, accuracy, cost, bar), cfg, log,
                                   on_iteration=lambda it, s: save_front(os.path.join(out, f"front_iter{it}.json"), s,
                                                                        metrics))
            rows = front_records(state, metrics)
            table = [f"{'accuracy':>10} {metrics[1]:>18}  iteration  resolution  architecture"]
            table += [f"{r['accuracy']:>10.4f} {r[metrics[1]]:>18.4f}  {r['iteration']:>9}  {r['resolution']:>10}  "
                      f"{describe(r['config'])}" for r in rows]
            with open(os.path.join(out, "final_front.txt"), "w") as f:
                f.write("\n".join(table) + "\n")
            log("final Pareto front:\n" + "\n".join(table))
            from rm_search.plots import plot_search  # matplotlib only once there is something to draw
            plot = plot_search(state.points, state.iteration, state.front(), metrics, os.path.join(out, "pareto.png"))
            log(f"hypervolume per iteration: {[round(h, 6) for h in state.hypervolumes]}; wrote {out}/ ({plot})")
            if backend.summary():
                log(backend.summary())
    return state


if __name__ == "__main__":
    run_cli(main)

"""A latency predictor for your device in one command: sample, measure, train, install.

    python profile_device.py -family ofa_mbv3 -backend torch-cpu -n 1000 -name my_laptop
    python profile_device.py -family ofa_mbv3 -backend onnxruntime -n 300 -name my_laptop_ort -budget_s 1800
    python profile_device.py -family ofa_mbv3 -n 500 -name my_phone -export_only phone_nets/   # then, measured there:
    python profile_device.py -family ofa_mbv3 -name my_phone -import phone_nets/latencies.csv

Samples -n architectures spread over the whole latency range (iterators/sampling.py), measures each on -backend
(evaluation/latency.py: warm-up, fixed threads, every timed run paired with a run of a fixed reference subnet against
drift, median and spread kept), appends each to cache/<family>_<name>_latency.jsonl.gz as soon as it is measured (run
the same command again after an interruption: nothing is measured twice), trains the graph predictor on it with
train_predictor.py, reports its held-out Spearman and MAPE with a plot of predicted against measured latency, and
installs it in l1_models/ as <name>_predicted for eval_topk_ofa.py (-m), rm_search (-metric) and predict.py.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time

import numpy as np

import train_predictor
from evaluation.evaluators import PREDICTED_SUFFIX, TABLE_SUFFIX, latency_predictors
from evaluation.latency import BACKENDS, ORT_OPT_LEVELS, make_backend, reference_arch
from evaluation.profiling import (TARGET, DeviceCache, export_subnets, import_latencies, measure_archs,
                                  measured_metrics, read_latency_file, recheck)
from iterators.caches import load_cache
from iterators.errors import ArgumentParser, UserError, check_output_dir, run_cli
from iterators.paths import CACHE_DIR, L1_DIR
from iterators.runtime import configure
from iterators.sampling import spread_archs
from iterators.search_space import FAMILIES, RESOLUTIONS, ArchError, validate_resolution
from models.checkpoints import find_config, load_config, load_predictor
from models.latency_table import LatencyTable
from models.plots import ensure_dir, plot_predicted_vs_measured
from models.predictor import predict_archs
from models.training import regression_metrics, split_indices

INSTALLED_BY = "profile_device.py"
MIN_NETWORKS = 20  # fewer cannot be split into a training and a test set worth reporting


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(__doc__)
    p.add_argument("-family", default="ofa_mbv3", help=f"search space: {', '.join(FAMILIES)}")
    p.add_argument("-name", required=True, help="the device's name: the predictor becomes <name>_predicted")
    p.add_argument("-backend", default="torch-cpu", help=f"where to measure: {', '.join(BACKENDS)}")
    p.add_argument("-n", type=int, default=1000, help="architectures to sample (and measure)")
    p.add_argument("-resolution", type=int, nargs="+", default=list(RESOLUTIONS),
                   help="input resolutions to sample from (default: OFA's elastic 128-224 in steps of 4)")
    p.add_argument("-batch_size", type=int, default=1, help="images per timed inference")
    p.add_argument("-threads", type=int, default=1, help="threads of the CPU backends (intra-op) and of training")
    p.add_argument("-warmup", type=int, default=2, help="untimed runs per network")
    p.add_argument("-repeats", type=int, default=9, help="timed runs per network (each paired with the reference)")
    p.add_argument("-no_reference", action="store_true",
                   help="do not pair the timed runs with the reference subnet (faster, drifts with the load)")
    p.add_argument("-ort_opt", default="all", help=f"ONNX Runtime graph optimisation: {', '.join(ORT_OPT_LEVELS)}")
    p.add_argument("-cuda_device", default="cuda", help="torch-cuda: cuda or cuda:<index>")
    p.add_argument("-budget_s", type=float, default=None, help="stop measuring after this many seconds and train")
    p.add_argument("-recheck", type=int, default=0,
                   help="measure this many cached networks again and report how well the two measurements agree")
    p.add_argument("-seed", type=int, default=0, help="sampling and training seed")
    p.add_argument("-export_only", default=None, metavar="DIR",
                   help="write the sampled subnets as ONNX files plus a manifest into DIR, measure nothing")
    p.add_argument("-import", dest="import_file", default=None, metavar="FILE",
                   help="train on latencies measured elsewhere: a CSV or JSON with latency_ms per network")
    p.add_argument("-manifest", default=None, help="-import: the -export_only manifest (default: beside FILE)")
    p.add_argument("-epochs_predictor", type=int, default=200)
    p.add_argument("-cache_dir", default=CACHE_DIR)
    p.add_argument("-l1_dir", default=L1_DIR, help="where the predictor is installed")
    p.add_argument("-out_dir", default=".", help="where training writes saved_models/, configs/ and plots/")
    p.add_argument("-quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.family not in FAMILIES:
        raise UserError(f"-family {args.family}: unknown; choose one of {', '.join(FAMILIES)}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", args.name):
        raise UserError(f"-name {args.name!r}: use lowercase letters, digits, '_' and '-' (it names files and the "
                        f"metric <name>{PREDICTED_SUFFIX}, whose names are case-insensitive)")
    for flag in ("n", "epochs_predictor"):
        if getattr(args, flag) < 1:
            raise UserError(f"-{flag} {getattr(args, flag)}: must be at least 1")
    if args.recheck < 0 or (args.budget_s is not None and args.budget_s <= 0):
        raise UserError("-recheck must be >= 0 and -budget_s > 0")
    if args.export_only and args.import_file:
        raise UserError("-export_only and -import are two halves of one job: run them one after the other")
    try:
        args.resolution = sorted({validate_resolution(r) for r in args.resolution})
    except ArchError as err:
        raise UserError(f"-resolution: {err}") from None
    outputs = [("-export_only", args.export_only)] if args.export_only else [
        ("-cache_dir", args.cache_dir), ("-l1_dir", args.l1_dir), ("-out_dir", args.out_dir)]
    for flag, folder in outputs:  # before any measuring: a misspelt or read-only folder fails at once
        check_output_dir(folder, flag)
    return args


def is_ours(chkpt: str) -> bool:
    return load_config(find_config(chkpt)).get("installed_by") == INSTALLED_BY


def table_path(l1_dir: str, family: str, name: str) -> str:
    """Where the lookup table behind <name>_table goes (evaluation/evaluators.py's latency_tables finds it)."""
    return os.path.join(l1_dir, f"{family}_{name}_latency_table.json")


def check_name_free(l1_dir: str, family: str, name: str) -> None:
    """Fail before any measuring when another predictor or table in ``l1_dir`` already answers to <name>_predicted
    or <name>_table."""
    taken = latency_predictors(family, l1_dir).get(name) if os.path.isdir(l1_dir) else None
    if taken and not is_ours(taken):
        raise UserError(f"-name {name}: {taken} already provides {name}{PREDICTED_SUFFIX} for {family}; "
                        "choose another name")
    table = table_path(l1_dir, family, name)
    if os.path.exists(table) and not LatencyTable.load(table).source.startswith(INSTALLED_BY):
        raise UserError(f"-name {name}: {table} already provides {name}{TABLE_SUFFIX} for {family}; "
                        "choose another name")


def sample(args) -> list:
    try:
        return spread_archs(args.family, args.n, args.seed, args.resolution)
    except ValueError as err:
        raise UserError(f"-n {args.n}: {err}") from None


def measure_device(args) -> tuple[str, dict]:
    """Measure the sampled networks not yet in the device's cache; returns the cache path and what was done."""
    backend = make_backend(args.backend, args.threads, args.batch_size, args.cuda_device, args.ort_opt)
    paired = not args.no_reference
    settings = {**backend.settings(), "paired": paired,
                **({"reference": reference_arch(args.family).key()} if paired else {})}
    cache = DeviceCache(args.cache_dir, args.family, args.name, settings)
    archs = sample(args)
    todo = sum(a not in cache for a in archs)
    print(f"{backend.describe()}\n{args.n} sampled {args.family} networks at resolution(s) "
          f"{args.resolution[0]}-{args.resolution[-1]}: {args.n - todo} already in {cache.path}, {todo} to measure "
          f"({args.warmup} warm-up + {args.repeats} timed runs each"
          f"{', paired with the reference ' + reference_arch(args.family).key() if paired else ''})")
    load = os.getloadavg()[0]
    if args.backend != "torch-cuda" and load > (os.cpu_count() or 1) * 0.5:
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores: timings will be noisy"
              + ("; the paired reference corrects drift, not jitter" if paired else ""))
    done = measure_archs(backend, archs, cache, paired, args.warmup, args.repeats, args.budget_s, not args.quiet)
    how = (f"{backend.describe()}, no_grad, {args.warmup} warm-up + {args.repeats} timed runs"
           + (f", each paired with a run of the reference subnet {settings['reference']}" if paired else ""))
    path = cache.fold(measured_metrics(paired, how), {"device": args.name, "backend": backend.describe()},
                      notes=f"Device profile {args.name!r}: subnets sampled over the whole latency range by "
                            "iterators/sampling.py; random weights (latency does not depend on them).")
    per_net = done["seconds"] / done["measured"] if done["measured"] else None
    print(f"measured {done['measured']} networks in {done['seconds']:.0f}s"
          + (f" ({per_net:.2f} s per network)" if per_net else "") + f"; {cache.path} holds {len(cache)}")
    if done["stopped"] == "budget":
        print(f"-budget_s {args.budget_s:g} spent: training on the {len(cache)} networks measured")
    if done["stopped"] == "interrupted":  # after the fold: the exit code still says the run did not finish
        print("interrupted: every network measured so far is in the cache; run the same command again to continue")
        raise KeyboardInterrupt
    report = {**done, "seconds_per_network": per_net, "backend": backend.describe(), "settings": settings}
    if args.recheck:
        report["recheck"] = recheck(backend, cache, args.recheck, args.warmup, args.repeats, not args.quiet)
        print("recheck of " + format_recheck(report["recheck"]))
    return path, report


def format_recheck(rc: dict) -> str:
    parts = [f"{kind} medians Spearman {rc[kind]['spearman']:.4f}, median |change| "
             f"{100 * rc[kind]['median_abs_rel_diff']:.1f}%" for kind in ("paired", "raw") if kind in rc]
    return f"{rc['n']} networks against their first measurement: " + "; ".join(parts)


def import_device(args) -> tuple[str, dict]:
    measured = read_latency_file(args.import_file, args.family, args.manifest)
    cache = DeviceCache(args.cache_dir, args.family, args.name, {"backend": "imported", "paired": False})
    import_latencies(cache, measured)
    source = os.path.basename(args.import_file)
    metrics = {TARGET: {"unit": "ms", "source": f"measured on the device {args.name!r} by its own tool, imported "
                                                f"from {source}"}}
    path = cache.fold(metrics, {"device": args.name, "imported_from": source})
    print(f"imported {len(measured)} networks from {args.import_file}; {path} holds {len(cache)}")
    return path, {"imported": len(measured), "source": source}


def evaluate_held_out(cache_path: str, chkpt: str, seed: int, name: str) -> dict:
    """The trained GNN and a per-block lookup table (models/latency_table.py, the additive model of BINAS and aw_nas,
    fitted on the same training networks) on the networks train_predictor.py held out (same seed, same split)."""
    cache = load_cache(cache_path)
    y = np.array([e[TARGET] for e in cache.entries])
    train_idx, test_idx = split_indices(len(y), seed)
    model, _ = load_predictor(chkpt)
    test_archs = [cache.archs[i] for i in test_idx]
    table = LatencyTable.fit([cache.archs[i] for i in train_idx], y[train_idx], name,
                             source=f"{INSTALLED_BY}: fitted on {len(train_idx)} networks of "
                                    f"{os.path.basename(cache_path)}")
    preds = {"GNN": np.array(predict_archs(model, test_archs)), "lookup table": table.predict(test_archs)}
    return {"y": y[test_idx], "preds": preds, "table": table,
            "metrics": {k: regression_metrics(y[test_idx], p) for k, p in preds.items()}}


def install(chkpt: str, config: dict, l1_dir: str, name: str) -> str:
    """Copy the predictor into ``l1_dir`` with a config that names the device; earlier installs of the same device
    and family by this script are replaced."""
    os.makedirs(l1_dir, exist_ok=True)
    config = {**config, "device": name, "installed_by": INSTALLED_BY}
    target = os.path.join(l1_dir, os.path.basename(chkpt))
    for device, path in latency_predictors(config["family"], l1_dir).items():
        if device == name and os.path.abspath(path) != os.path.abspath(target) and is_ours(path):
            os.remove(find_config(path))
            os.remove(path)
    shutil.copyfile(chkpt, target + ".tmp")
    os.replace(target + ".tmp", target)
    with open(os.path.join(l1_dir, config["chkpt"] + "_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    found = latency_predictors(config["family"], l1_dir).get(name)
    if found is None or os.path.abspath(found) != os.path.abspath(target):
        raise RuntimeError(f"installed {target}, but {name}{PREDICTED_SUFFIX} resolves to {found}")
    return target


def main(argv=None) -> dict:
    args = parse_args(argv)
    configure(args.threads)
    if args.export_only:
        archs = sample(args)
        manifest = export_subnets(archs, args.export_only, args.batch_size, not args.quiet)
        print(f"wrote {len(archs)} ONNX subnets and {manifest}: measure each on the device (batch {args.batch_size}"
              f"), fill in {os.path.join(args.export_only, 'latencies.csv')}, then run\n  python profile_device.py "
              f"-family {args.family} -name {args.name} -import {os.path.join(args.export_only, 'latencies.csv')}")
        return {"manifest": manifest}
    check_name_free(args.l1_dir, args.family, args.name)
    cache_path, report = import_device(args) if args.import_file else measure_device(args)
    n_networks = len(load_cache(cache_path))
    if n_networks < MIN_NETWORKS:
        raise UserError(f"{cache_path} holds {n_networks} networks, too few to train and test on (at least "
                        f"{MIN_NETWORKS}): raise -n or -budget_s and run again")

    start = time.perf_counter()
    config = train_predictor.main(["-cache", cache_path, "-families", args.family, "-target", TARGET, "-tag",
                                   args.name, "-seed", str(args.seed), "-epochs_predictor", str(args.epochs_predictor),
                                   "-threads", str(args.threads), "-out_dir", args.out_dir]
                                  + (["-quiet"] if args.quiet else []))
    chkpt = os.path.join(args.out_dir, "saved_models", config["chkpt"] + "_predictor.pt")
    held_out = evaluate_held_out(cache_path, chkpt, args.seed, args.name)
    plot = plot_predicted_vs_measured(
        held_out["y"], held_out["preds"], held_out["metrics"], "ms",
        os.path.join(ensure_dir(os.path.join(args.out_dir, "plots")), config["chkpt"] + "_measured_vs_predicted.png"),
        f"{args.name}: {len(held_out['y'])} held-out {args.family} networks")
    report.update(held_out=held_out["metrics"], n_test=len(held_out["y"]), n_networks=n_networks,
                  train_seconds=time.perf_counter() - start, plot=plot)
    report["table"] = held_out["table"].save(table_path(args.l1_dir, args.family, args.name))
    installed = install(chkpt, {**config, "profile": report}, args.l1_dir, args.name)
    print(format_report(args, report, installed))
    return {**report, "installed": installed}


def format_report(args, report: dict, installed: str) -> str:
    lines = [f"\n== {args.name}{PREDICTED_SUFFIX} ({args.family}): {report['n_networks']} networks, "
             f"{report['n_test']} held out"]
    lines.append(f"  {'predictor':<14}{'Spearman':>10}{'MAPE':>9}{'MAE (ms)':>10}")
    for name, m in report["held_out"].items():
        lines.append(f"  {name:<14}{m['Spearman']:>10.4f}{m['MAPE']:>8.2f}%{m['MAE']:>10.3f}")
    if "recheck" in report:
        lines.append("  repeat measurement of " + format_recheck(report["recheck"]))
    lines.append(f"  plot: {report['plot']}")
    lines.append(f"  lookup table: {report['table']} (as -m/-metric {args.name}{TABLE_SUFFIX}, e.g. for "
                 "rm_search/run_budget_search.py's exact search)")
    l1 = "" if os.path.abspath(args.l1_dir) == os.path.abspath(L1_DIR) else f" -l1_dir {args.l1_dir}"
    lines.append(f"  installed {installed}; use it as -m/-metric {args.name}{PREDICTED_SUFFIX}, e.g.\n"
                 f"    python eval_topk_ofa.py -unit_corpus <units> -k 3 -m {args.name}{PREDICTED_SUFFIX}{l1}\n"
                 f"    python rm_search/run_unit_pareto_search.py -family {args.family} -model_name <run> "
                 f"-metric {args.name}{PREDICTED_SUFFIX}{l1} -acc_predictor <acc predictor>\n"
                 f"    python predict.py -chkpt {installed} -archs archs.json")
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)

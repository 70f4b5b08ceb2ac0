"""Build the demo caches shipped in cache/: random OFA architectures with measured FLOPs, parameters and CPU latency.

    python make_demo_caches.py -families ofa_mbv3 ofa_pn -n 2000

Each architecture's subnet is built from OFA's elastic supernet with random weights (no download); FLOPs and
parameters are exact (thop), latency is measured on this CPU (batch 1, no_grad, warm-up, median of repeated runs,
interquartile range kept). On a shared machine the raw time drifts with the neighbours' load, so every timed run is
paired with a run of a fixed reference subnet: ``latency_cpu`` is the median ratio to the reference times the
reference's median latency over the whole cache, and the raw median is kept as ``latency_cpu_raw``. ``acc`` is a
pseudo-label: the prediction of the published AutoBuild accuracy predictor of the family
(../shared/upstream_l1/l1_models). Measurements are appended to a partial file as they are made, so an interrupted
run resumes where it stopped.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from tqdm import tqdm

from evaluation.latency import reference_arch
from evaluation.ofa_manager import build_subnet, count_flops_params, cpu_name, measure_latency
from iterators.caches import check_not_smaller, write_cache
from iterators.encoding import encode_archs
from iterators.errors import ArgumentParser, check_output_dir, run_cli
from iterators.measurement_log import MeasurementLog
from iterators.paths import CACHE_DIR, REPO
from iterators.search_space import FAMILIES, PAPER_RESOLUTIONS, arch_from_json, random_arch
from models.checkpoints import check_predictor, load_predictor

UPSTREAM = os.path.join(os.path.dirname(REPO), "shared", "upstream_l1", "l1_models")


def acc_checkpoint(family: str, folder: str) -> str:
    return os.path.join(folder, f"minMAE_{family}_custom_acc_GraphConv_sum_directed_srcc1_predictor.pt")


def sample_archs(family: str, n: int, seed: int) -> list:
    rng, seen, archs = random.Random(f"{seed}-{family}"), set(), []  # str seeds are stable across runs
    while len(archs) < n:
        arch = random_arch(family, rng, PAPER_RESOLUTIONS)
        if arch.key() not in seen:
            seen.add(arch.key())
            archs.append(arch)
    return archs


def partial_path(out_dir: str, family: str) -> str:
    return os.path.join(out_dir, f".{family}_measurements.partial.jsonl")


def measure(family: str, n: int, seed: int, warmup: int, repeats: int, threads: int, log: MeasurementLog
            ) -> list[dict]:
    """Measure every sampled architecture, resuming from ``log``, the rows of an earlier run.

    Rows of an earlier run without a reference ratio keep their exact FLOPs and parameters; only latency is redone.
    """
    archs = sample_archs(family, n, seed)
    ref = reference_arch(family)
    reference = (build_subnet(ref), ref.resolution)
    with log:
        for arch in tqdm(archs, desc=f"measure {family}", unit="arch"):
            old = log.get(arch) or {}
            if "latency_ratio" in old:
                continue
            subnet = build_subnet(arch)
            flops, params = (old["flops"], old["n_params"]) if old else count_flops_params(subnet, arch.resolution)
            lat = measure_latency(subnet, arch.resolution, warmup=warmup, repeats=repeats, threads=threads,
                                  reference=reference)
            log.append(arch, {"flops": flops, "n_params": params, "latency_cpu_raw": lat["median_ms"],
                              "latency_cpu_iqr": lat["iqr_ms"], "latency_ratio": lat["ratio"],
                              "ref_median_ms": lat["ref_median_ms"]})
    return [log.get(a) for a in archs]


def main(argv=None) -> None:
    p = ArgumentParser(__doc__)
    p.add_argument("-families", nargs="+", default=["ofa_mbv3", "ofa_pn"])
    p.add_argument("-n", type=int, default=2000, help="architectures per family")
    p.add_argument("-seed", type=int, default=0)
    p.add_argument("-warmup", type=int, default=2)
    p.add_argument("-repeats", type=int, default=9)
    p.add_argument("-threads", type=int, default=1, help="torch threads during latency measurement")
    p.add_argument("-upstream_dir", default=UPSTREAM, help="folder of the published AutoBuild l1_models")
    p.add_argument("-out_dir", default=CACHE_DIR)
    p.add_argument("-force", action="store_true", help="replace an existing cache with more architectures than -n")
    args = p.parse_args(argv)
    if args.n < 1 or args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("-n, -threads and -repeats must be at least 1, -warmup at least 0")
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        p.error(f"-families {' '.join(unknown)}: unknown; choose from {', '.join(FAMILIES)}")
    check_output_dir(args.out_dir, "-out_dir")
    for family in args.families:
        check_not_smaller(os.path.join(args.out_dir, f"{family}_custom_cache.jsonl.gz"), args.n, args.force)
    labellers, earlier = {}, {}
    for family in args.families:  # whatever can fail, before hours of measuring
        chkpt = acc_checkpoint(family, args.upstream_dir)
        labeller, config = load_predictor(chkpt)
        check_predictor(config, chkpt, "-upstream_dir", family, "accuracy")
        labellers[family] = chkpt, labeller
        earlier[family] = MeasurementLog(partial_path(args.out_dir, family), family)
    os.makedirs(args.out_dir, exist_ok=True)
    torch.set_num_threads(args.threads)  # also for building and profiling: parallel runs must not oversubscribe
    cpu = cpu_name()
    for family in args.families:
        chkpt, labeller = labellers[family]
        rows = measure(family, args.n, args.seed, args.warmup, args.repeats, args.threads, earlier[family])
        archs = [arch_from_json(r, family) for r in rows]
        with torch.no_grad():
            acc = labeller.predict(encode_archs(archs).batch()).tolist()
        ref_ms = float(np.median([r["ref_median_ms"] for r in rows]))
        entries = [{"acc": a, "flops": r["flops"], "n_params": r["n_params"],
                    "latency_cpu": r["latency_ratio"] * ref_ms, "latency_cpu_raw": r["latency_cpu_raw"],
                    "latency_cpu_iqr": r["latency_cpu_iqr"] * ref_ms / r["ref_median_ms"]}
                   for a, r in zip(acc, rows)]
        lat_how = (f"measured on {cpu}, torch {torch.__version__}, {args.threads} thread(s), batch 1, no_grad, "
                   f"{args.warmup} warm-up + {args.repeats} timed runs (more for rows kept from an earlier run), "
                   f"each paired with a run of the reference subnet {reference_arch(family).key()} "
                   f"(median {ref_ms:.2f} ms over this cache)")
        metrics = {
            "acc": {"unit": "0-1", "source": f"pseudo-label: prediction of the published AutoBuild accuracy "
                                             f"predictor {os.path.basename(chkpt)} (MIT licence)"},
            "flops": {"unit": "M MACs", "source": "thop on the OFA subnet (conv + linear, batch norm not counted)"},
            "n_params": {"unit": "M", "source": "parameter count of the OFA subnet"},
            "latency_cpu": {"unit": "ms",
                            "source": "median ratio to the reference x the reference's median, " + lat_how},
            "latency_cpu_raw": {"unit": "ms", "source": "raw median of the same runs (drifts with machine load)"},
            "latency_cpu_iqr": {"unit": "ms",
                                "source": "interquartile range of the same runs, on the latency_cpu scale"},
        }
        path = os.path.join(args.out_dir, f"{family}_custom_cache.jsonl.gz")
        write_cache(path, family, archs, entries, metrics, extra_header={"cpu": cpu, "seed": args.seed},
                    notes="Demo cache of the AutoBuild toolkit: random architectures at resolutions 192/208/224; "
                          "subnets built with random weights (latency and FLOPs do not depend on weights).")
        earlier[family].remove()
        print(f"wrote {path}: {len(archs)} architectures")


if __name__ == "__main__":
    run_cli(main)

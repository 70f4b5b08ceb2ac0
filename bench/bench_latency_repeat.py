"""How repeatable are latency measurements on this machine, with and without the paired reference?

    python bench/bench_latency_repeat.py [-backend torch-cpu] [-n 50] [-passes 2] [-sample spread uniform]

Measures the same -n networks in -passes passes, one after the other. In every pass each network is measured twice,
in alternating order: paired (every timed run followed by a run of the reference subnet) and unpaired (the network
alone). Prints, per sample of networks, how well pass 1 agrees with each later pass: Spearman and median |relative
change| of the paired latency (ratio to the reference), of the raw median of those same paired runs, and of the
unpaired median; and the seconds per network of each way. Samples: ``spread`` = profile_device.py's sampling over the
whole latency range (resolutions 128-224); ``uniform`` = uniform random networks at 192/208/224 (the demo caches'
narrow range, where ranking is hardest).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
from scipy import stats
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evaluation.latency import BACKENDS, make_backend, measure, reference_arch  # noqa: E402
from iterators.sampling import spread_archs  # noqa: E402
from iterators.search_space import PAPER_RESOLUTIONS, random_arch  # noqa: E402

WAYS = ("paired", "raw of paired", "unpaired")


def sample(kind: str, family: str, n: int, seed: int) -> list:
    if kind == "spread":
        return spread_archs(family, n, seed)
    rng = random.Random(f"{seed}-uniform")
    return [random_arch(family, rng, PAPER_RESOLUTIONS) for _ in range(n)]


def one_pass(backend, archs, reference, warmup: int, repeats: int, flip: bool) -> tuple[dict, dict]:
    """{way: [value per network]} and {way: seconds} of one pass over ``archs``."""
    values = {w: [] for w in WAYS}
    seconds = {"paired": 0.0, "unpaired": 0.0}
    for i, arch in enumerate(tqdm(archs, desc="pass", unit="net", leave=False)):
        run = backend.prepare(arch)
        for paired in ((True, False) if (i % 2 == 0) != flip else (False, True)):
            start = time.perf_counter()
            lat = measure(backend, run, reference if paired else None, warmup, repeats)
            seconds["paired" if paired else "unpaired"] += time.perf_counter() - start
            if paired:
                values["paired"].append(lat["ratio"])
                values["raw of paired"].append(lat["median_ms"])
            else:
                values["unpaired"].append(lat["median_ms"])
    return values, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-backend", default="torch-cpu", choices=BACKENDS)
    p.add_argument("-family", default="ofa_mbv3")
    p.add_argument("-n", type=int, default=50)
    p.add_argument("-passes", type=int, default=2)
    p.add_argument("-sample", nargs="+", default=["spread", "uniform"], choices=["spread", "uniform"])
    p.add_argument("-warmup", type=int, default=2)
    p.add_argument("-repeats", type=int, default=9)
    p.add_argument("-threads", type=int, default=1)
    p.add_argument("-seed", type=int, default=7)
    args = p.parse_args()
    backend = make_backend(args.backend, args.threads)
    print(f"{backend.describe()}; {args.warmup} warm-up + {args.repeats} timed runs per measurement; "
          f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    with backend.session():
        reference = backend.prepare(reference_arch(args.family))
        for kind in args.sample:
            archs = sample(kind, args.family, args.n, args.seed)
            passes = [one_pass(backend, archs, reference, args.warmup, args.repeats, flip=bool(k % 2))
                      for k in range(args.passes)]
            first = passes[0][0]
            for k, (values, seconds) in enumerate(passes[1:], start=2):
                for way in WAYS:
                    a, b = np.array(first[way]), np.array(values[way])
                    cost = seconds["unpaired" if way == "unpaired" else "paired"] / len(archs)
                    rows.append((kind, f"1 vs {k}", way, stats.spearmanr(a, b).statistic,
                                 100 * np.median(np.abs(b / a - 1)), cost))
    print(f"\n| {'networks':<8} | {'passes':<6} | {'measurement':<14} | {'Spearman':>8} | {'median |change|':>15} | "
          f"{'s per network':>13} |\n|{'-' * 10}|{'-' * 8}|{'-' * 16}|{'-' * 10}|{'-' * 17}|{'-' * 15}|")
    for kind, passes, way, rho, change, cost in rows:
        print(f"| {kind:<8} | {passes:<6} | {way:<14} | {rho:>8.4f} | {change:>14.1f}% | {cost:>13.2f} |")


if __name__ == "__main__":
    main()

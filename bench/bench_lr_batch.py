"""Learning rate and batch size: which pair trains the default predictor fastest at the quality of the paper's default.

    python bench/bench_lr_batch.py [-pairs 128:1e-4 256:2e-4 512:4e-4] [-seeds 0 1 2] [-epochs 200]

Every pair trains ``train_predictor.py`` (default predictor, 200 epochs) on every dataset with every seed: the
shipped demo caches (MBv3 and PN; targets ``acc``, a pseudo-label, and ``latency_cpu``) and the measured GPU latency
of ../shared/HELP. The table gives the mean and spread of the test Spearman over the seeds and the median seconds
per epoch; runs alternate between the pairs, so a pair's timings are not all from one quiet or busy minute.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train_predictor  # noqa: E402

HELP = os.path.join(os.path.dirname(REPO), "shared", "HELP", "ofa_mbv3_gpu_latency.json")
DATASETS = {  # name -> (cache file, target)
    "mbv3 acc": (os.path.join(REPO, "cache", "ofa_mbv3_custom_cache.jsonl.gz"), "acc"),
    "mbv3 latency_cpu": (os.path.join(REPO, "cache", "ofa_mbv3_custom_cache.jsonl.gz"), "latency_cpu"),
    "pn acc": (os.path.join(REPO, "cache", "ofa_pn_custom_cache.jsonl.gz"), "acc"),
    "pn latency_cpu": (os.path.join(REPO, "cache", "ofa_pn_custom_cache.jsonl.gz"), "latency_cpu"),
    "HELP 2080ti_64": (HELP, "latency_2080ti_64"),
}


def pair(text: str) -> tuple[int, float]:
    batch, lr = text.split(":")
    return int(batch), float(lr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-pairs", type=pair, nargs="+", default=[pair(t) for t in ("128:1e-4", "256:2e-4", "512:4e-4")],
                   help="batch_size:lr")
    p.add_argument("-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("-epochs", type=int, default=200)
    p.add_argument("-datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("-threads", type=int, default=1)
    args = p.parse_args()
    results: dict[tuple, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            cache, target = DATASETS[dataset]
            for seed in args.seeds:
                for batch, lr in args.pairs:
                    with contextlib.redirect_stdout(io.StringIO()):
                        config = train_predictor.main(
                            ["-cache", cache, "-target", target, "-epochs_predictor", str(args.epochs),
                             "-batch_size", str(batch), "-lr", str(lr), "-seed", str(seed), "-threads",
                             str(args.threads), "-out_dir", tmp, "-quiet"])
                    res = config["results"]
                    results.setdefault((dataset, batch, lr), []).append((res["test"]["Spearman"],
                                                                        res["seconds_per_epoch"]))
                    print(f"{dataset:<17} seed {seed} batch {batch:>4} lr {lr:g}: Spearman "
                          f"{res['test']['Spearman']:.4f}, {res['seconds_per_epoch']:.3f} s/epoch", flush=True)
    print(f"\n{args.epochs} epochs, seeds {args.seeds}, {args.threads} thread(s)\n")
    print(f"| {'dataset':<17} | {'batch':>5} | {'lr':>7} | {'test Spearman (mean +- sd)':>26} | {'s/epoch':>7} |")
    print(f"|{'-' * 19}|{'-' * 7}|{'-' * 9}|{'-' * 28}|{'-' * 9}|")
    for (dataset, batch, lr), runs in results.items():
        rho = [r for r, _ in runs]
        sd = statistics.stdev(rho) if len(rho) > 1 else 0.0
        print(f"| {dataset:<17} | {batch:>5} | {lr:>7g} | {statistics.mean(rho):>17.4f} +- {sd:.4f} | "
              f"{statistics.median(s for _, s in runs):>7.3f} |")


if __name__ == "__main__":
    main()

"""Learning rate and batch size: which setting trains the default predictor fastest at the paper's default quality.

    python bench/bench_lr_batch.py [-settings 128:1e-4:200 512:1e-3:200 512:1e-3:100] [-seeds 0 1 2]

Every setting (batch size, learning rate, epochs) trains ``train_predictor.py`` (default predictor) on every dataset
with every seed: the
shipped demo caches (MBv3 and PN; targets ``acc``, a pseudo-label, and ``latency_cpu``) and the measured GPU latency
of ../shared/HELP. The table gives the mean and spread of the test Spearman over the seeds and the median seconds
of training; runs alternate between the settings, so a setting's timings are not all from one quiet or busy minute.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train_predictor  # noqa: E402
from iterators.errors import ArgumentParser, run_cli  # noqa: E402

HELP = os.path.join(os.path.dirname(REPO), "shared", "HELP", "ofa_mbv3_gpu_latency.json")
DATASETS = {  # name -> (cache file, target)
    "mbv3 acc": (os.path.join(REPO, "cache", "ofa_mbv3_custom_cache.jsonl.gz"), "acc"),
    "mbv3 latency_cpu": (os.path.join(REPO, "cache", "ofa_mbv3_custom_cache.jsonl.gz"), "latency_cpu"),
    "pn acc": (os.path.join(REPO, "cache", "ofa_pn_custom_cache.jsonl.gz"), "acc"),
    "pn latency_cpu": (os.path.join(REPO, "cache", "ofa_pn_custom_cache.jsonl.gz"), "latency_cpu"),
    "HELP 2080ti_64": (HELP, "latency_2080ti_64"),
}


def setting(text: str) -> tuple[int, float, int]:
    batch, lr, epochs = text.split(":")
    return int(batch), float(lr), int(epochs)


def main() -> None:
    p = ArgumentParser(__doc__)
    p.add_argument("-settings", type=setting, nargs="+",
                   default=[setting(t) for t in ("128:1e-4:200", "512:1e-3:200", "512:1e-3:100")],
                   help="batch_size:lr:epochs")
    p.add_argument("-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("-datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("-threads", type=int, default=1)
    p.add_argument("-log", default="bench_lr_batch.jsonl", help="one line per finished run; a rerun skips those")
    args = p.parse_args()
    done = {}
    if os.path.exists(args.log):
        with open(args.log) as f:
            for line in f:
                run = json.loads(line)
                done[run["dataset"], run["seed"], run["batch"], run["lr"], run["epochs"]] = run
    results: dict[tuple, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, open(args.log, "a") as log:
        for dataset in args.datasets:
            cache, target = DATASETS[dataset]
            for seed in args.seeds:
                for batch, lr, epochs in args.settings:
                    if (dataset, seed, batch, lr, epochs) in done:
                        run = done[dataset, seed, batch, lr, epochs]
                        results.setdefault((dataset, batch, lr, epochs), []).append((run["spearman"], run["seconds"]))
                        continue
                    with contextlib.redirect_stdout(io.StringIO()):
                        config = train_predictor.main(
                            ["-cache", cache, "-target", target, "-epochs_predictor", str(epochs),
                             "-batch_size", str(batch), "-lr", str(lr), "-seed", str(seed), "-threads",
                             str(args.threads), "-out_dir", tmp, "-quiet"])
                    res = config["results"]
                    seconds = res["seconds_per_epoch"] * res["epochs_done"]
                    results.setdefault((dataset, batch, lr, epochs), []).append((res["test"]["Spearman"], seconds))
                    log.write(json.dumps({"dataset": dataset, "seed": seed, "batch": batch, "lr": lr, "epochs": epochs,
                                          "spearman": res["test"]["Spearman"], "seconds": seconds}) + "\n")
                    log.flush()
                    print(f"{dataset:<17} seed {seed} batch {batch:>4} lr {lr:g} epochs {epochs}: Spearman "
                          f"{res['test']['Spearman']:.4f}, {seconds:.1f} s", flush=True)
    print(f"\nseeds {args.seeds}, {args.threads} thread(s)\n")
    print(f"| {'dataset':<17} | {'batch':>5} | {'lr':>7} | {'epochs':>6} | {'test Spearman (mean +- sd)':>26} | "
          f"{'training, s':>11} |")
    print(f"|{'-' * 19}|{'-' * 7}|{'-' * 9}|{'-' * 8}|{'-' * 28}|{'-' * 13}|")
    for (dataset, batch, lr, epochs), runs in results.items():
        rho = [r for r, _ in runs]
        sd = statistics.stdev(rho) if len(rho) > 1 else 0.0
        print(f"| {dataset:<17} | {batch:>5} | {lr:>7g} | {epochs:>6} | {statistics.mean(rho):>17.4f} +- {sd:.4f} | "
              f"{statistics.median(s for _, s in runs):>11.1f} |")


if __name__ == "__main__":
    run_cli(main)

"""Training speed and quality: this toolkit against the original AutoBuild computation, on one machine, interleaved.

    python bench/bench_train.py [-epochs 200] [-seeds 0 1 2] [-threads 1] [-reference_threads 1]

Both sides train the paper's default predictor (GATv2Conv, dim 32, 4 layers, mean pooling, batch 128, lr 1e-4) on
the first 3,000 OFA-MBv3 architectures of ../shared/HELP (target: measured RTX 2080 Ti latency at batch 64) with the
same split, the same initial weights and the same ranking loss:

- toolkit: ``train_predictor.py`` as a user runs it (the scatter-free chain path, the folded FE-MLP, one pooling and
  one soft-rank call for all hops, the flat AdamW);
- reference: the original's computation, rebuilt here from torch_geometric so that anyone can rerun it without the
  original code: one ``Data`` per architecture batched by torch_geometric's DataLoader, its GATv2Conv layers,
  per-category embeddings followed by linear maps, one pooling and one soft-rank call per hop, torch.optim.AdamW
  with clip_grad_norm_; at -reference_threads torch threads (default 1, as the toolkit; the original ran with
  torch's default, one per core).

Every run is a fresh process (its start-up and peak memory are its own); runs alternate reference, toolkit, ... and
the table gives medians and their ratio. A second table times a few epochs of the toolkit at 1 and 2 threads with
and without a busy neighbour process pinned to one core.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from iterators.errors import ArgumentParser, run_cli  # noqa: E402

HELP = os.path.join(os.path.dirname(REPO), "shared", "HELP", "ofa_mbv3_gpu_latency.json")
TARGET = "latency_2080ti_64"


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(__doc__)
    p.add_argument("-epochs", type=int, default=200)
    p.add_argument("-n", type=int, default=3000, help="architectures taken from the HELP file")
    p.add_argument("-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("-threads", type=int, default=1, help="torch threads of the toolkit's runs")
    p.add_argument("-reference_threads", type=int, default=1, help="torch threads of the reference runs (the "
                   "original ran with torch's default: one per core)")
    p.add_argument("-batch_size", type=int, default=128)
    p.add_argument("-lr", type=float, default=1e-4)
    p.add_argument("-neighbour_epochs", type=int, default=20, help="epochs per run of the busy-neighbour table "
                   "(0: skip it)")
    p.add_argument("-run", choices=["toolkit", "reference"], default=None, help=argparse.SUPPRESS)
    p.add_argument("-seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("-spawned", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("-cache", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- one run, in a child process -------------------------------------------------------------------------------

def run_toolkit(args, marks: dict) -> dict:
    import train_predictor

    real_fit = train_predictor.fit

    def timed_fit(*a, **k):
        marks["first_epoch"] = time.time()
        return real_fit(*a, **k)

    train_predictor.fit = timed_fit
    with tempfile.TemporaryDirectory() as tmp:
        config = train_predictor.main(
            ["-cache", args.cache, "-target", TARGET, "-epochs_predictor", str(args.epochs), "-batch_size",
             str(args.batch_size), "-lr", str(args.lr), "-seed", str(args.seed), "-threads", str(args.threads),
             "-out_dir", tmp, "-quiet"])
    res = config["results"]
    return {"s_per_epoch": res["seconds_per_epoch"], "spearman": res["test"]["Spearman"]}


def run_reference(args, marks: dict) -> dict:
    import numpy as np
    import torch
    import torch_geometric.nn as pyg
    from scipy import stats
    from torch_geometric.data import Batch, Data
    from torch_geometric.loader import DataLoader

    from iterators.caches import load_cache
    from iterators.encoding import encode_archs
    from iterators.runtime import configure
    from iterators.targets import Target
    from models.loss import soft_spearman
    from models.predictor import build_predictor
    from models.training import GRAD_CLIP_NORM, split_indices

    configure(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    cache = load_cache(args.cache)
    y, keep = Target(TARGET).evaluate(cache.entries, cache.metrics)
    archs = [a for a, k in zip(cache.archs, keep) if k]
    graphs = encode_archs(archs)
    data = []
    for g in range(len(archs)):
        start, stop = int(graphs.node_ptr[g]), int(graphs.node_ptr[g + 1])
        src = torch.arange(stop - start - 1)
        data.append(Data(x=graphs.x[start:stop], edge_index=torch.stack([src, src + 1])))
    train_idx, test_idx = split_indices(len(y), args.seed)
    model = build_predictor({"family": "ofa_mbv3", "gnn_type": "GATv2Conv", "gnn_dim": 32, "num_layers": 4,
                             "aggr_method": "mean"})  # the toolkit's modules: the same initial weights
    convs = torch.nn.ModuleList()
    for conv in model.encoder.convs:
        convs.append(pyg.GATv2Conv(conv.in_dim, conv.out_dim))
        convs[-1].load_state_dict(conv.state_dict())
    parts = torch.nn.ModuleList([model.fe_mlp, convs, model.encoder.norms, model.head, model.regressor])
    act = model.encoder.activation
    mean, std = float(y[train_idx].mean()), float(y[train_idx].std())
    y_std = torch.tensor((y - mean) / std, dtype=torch.float32)

    def forward(batch):
        x = batch.x
        columns = [cat.lin(cat.embed(x[:, i].long())) for i, cat in enumerate(model.fe_mlp.categories.values())]
        hops = [torch.cat(columns + [model.fe_mlp.resolution(x[:, 5:6])], dim=1).abs()]
        for i, (conv, norm) in enumerate(zip(convs, model.encoder.norms)):
            h = act(norm(conv(hops[-1], batch.edge_index)))
            hops.append(h + hops[-1] if i > 0 else h)
        pooled = [pyg.global_mean_pool(h, batch.batch, batch.num_graphs) for h in hops]
        return model.regressor(model.head_activation(model.head(pooled[-1]))).squeeze(1), pooled

    optim = torch.optim.AdamW(parts.parameters(), lr=args.lr, weight_decay=1e-5, fused=True)
    for i in train_idx:
        data[i].y = y_std[i:i + 1]
    loader = DataLoader([data[i] for i in train_idx], batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    marks["first_epoch"] = time.time()
    start = time.perf_counter()
    parts.train()
    for _ in range(args.epochs):
        for batch in loader:
            if batch.num_graphs < 2:
                continue
            pred, pooled = forward(batch)
            target = batch.y
            loss = torch.nn.functional.mse_loss(pred, target) + sum(
                1 - soft_spearman(target, torch.linalg.vector_norm(g, ord=1, dim=-1)) for g in pooled) / len(pooled)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parts.parameters(), GRAD_CLIP_NORM)
            optim.step()
            loss.item()
    seconds = time.perf_counter() - start
    parts.eval()
    with torch.no_grad():
        pred = forward(Batch.from_data_list([data[i] for i in test_idx]))[0].numpy() * std + mean
    return {"s_per_epoch": seconds / args.epochs, "spearman": float(stats.spearmanr(y[test_idx], pred).statistic)}


def child(args) -> None:
    marks: dict = {}
    result = (run_toolkit if args.run == "toolkit" else run_reference)(args, marks)
    result["startup_s"] = marks["first_epoch"] - args.spawned
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


# ---- the driver ------------------------------------------------------------------------------------------------

def spawn(args, run: str, seed: int, threads: int, epochs: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "-run", run, "-seed", str(seed), "-threads", str(threads),
           "-epochs", str(epochs), "-cache", args.cache, "-batch_size", str(args.batch_size), "-lr", str(args.lr),
           "-spawned", repr(time.time())]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{run} run failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


class BusyNeighbour:
    """A process spinning on core 0 for the duration of a ``with`` block."""

    def __enter__(self):
        spin = "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass"
        self.proc = subprocess.Popen([sys.executable, "-c", spin])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def spread(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.run:
        return child(args)
    from iterators.caches import load_cache, write_cache

    with tempfile.TemporaryDirectory() as tmp:  # the first n HELP architectures, read by every run
        cache = load_cache(HELP)
        args.cache = os.path.join(tmp, "help.jsonl.gz")
        write_cache(args.cache, cache.family, cache.archs[:args.n], cache.entries[:args.n], cache.header["metrics"])
        compare(args)


def compare(args) -> None:
    print(f"{args.n} HELP architectures, target {TARGET}, {args.epochs} epochs, batch {args.batch_size}, "
          f"lr {args.lr}, seeds {args.seeds}, threads {args.reference_threads} (reference) and {args.threads} "
          f"(toolkit); runs interleaved")
    runs: dict[str, list[dict]] = {"reference": [], "toolkit": []}
    for seed in args.seeds:
        for run in ("reference", "toolkit"):
            threads = args.reference_threads if run == "reference" else args.threads
            runs[run].append(spawn(args, run, seed, threads, args.epochs))
            print(f"  seed {seed} {run:<9}: {json.dumps(runs[run][-1])}", flush=True)
    ref, new = runs["reference"], runs["toolkit"]
    rows = [("training, s/epoch (median)", f"{med(ref, 's_per_epoch'):.3f}", f"{med(new, 's_per_epoch'):.3f}",
             f"{med(ref, 's_per_epoch') / med(new, 's_per_epoch'):.2f}x faster"),
            (f"test Spearman ({len(args.seeds)} seeds, mean +- sd)", spread(ref, "spearman"), spread(new, "spearman"),
             f"{statistics.mean(r['spearman'] for r in new) - statistics.mean(r['spearman'] for r in ref):+.4f}"),
            ("start-up to first epoch, s (median)", f"{med(ref, 'startup_s'):.2f}", f"{med(new, 'startup_s'):.2f}",
             f"{med(ref, 'startup_s') / med(new, 'startup_s'):.2f}x faster"),
            ("peak memory (RSS), MB (median)", f"{med(ref, 'peak_rss_mb'):.0f}", f"{med(new, 'peak_rss_mb'):.0f}",
             f"{med(new, 'peak_rss_mb') / med(ref, 'peak_rss_mb'):.2f}x")]
    print(f"\n| {'':<40} | {'reference (torch_geometric)':>27} | {'this toolkit':>17} | {'ratio':>13} |")
    print(f"|{'-' * 42}|{'-' * 29}|{'-' * 19}|{'-' * 15}|")
    for name, a, b, r in rows:
        print(f"| {name:<40} | {a:>27} | {b:>17} | {r:>13} |")
    if args.neighbour_epochs:
        neighbour_table(args)


def neighbour_table(args) -> None:
    """Toolkit s/epoch at 1 and 2 threads, alone and beside a process spinning on one core (interleaved)."""
    times: dict[tuple[int, bool], list[float]] = {}
    for _ in range(2):
        for threads in (1, 2):
            for busy in (False, True):
                with BusyNeighbour() if busy else contextlib.nullcontext():
                    r = spawn(args, "toolkit", 0, threads, args.neighbour_epochs)
                times.setdefault((threads, busy), []).append(r["s_per_epoch"])
    print(f"\ntoolkit, {args.neighbour_epochs} epochs per run, medians of 2 interleaved runs\n")
    print(f"| {'torch threads':<13} | {'alone, s/epoch':>14} | {'busy neighbour, s/epoch':>23} | {'slowdown':>8} |")
    print(f"|{'-' * 15}|{'-' * 16}|{'-' * 25}|{'-' * 10}|")
    for threads in (1, 2):
        alone, busy = statistics.median(times[threads, False]), statistics.median(times[threads, True])
        print(f"| {threads:<13} | {alone:>14.3f} | {busy:>23.3f} | {busy / alone:>7.1f}x |")


if __name__ == "__main__":
    run_cli(main)

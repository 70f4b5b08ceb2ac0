"""Train an interpretable AutoBuild predictor on an architecture cache and report what it learned.

    python train_predictor.py -families ofa_mbv3 -target acc -epochs_predictor 200
    python train_predictor.py -families ofa_mbv3 -target acc -model bilinear     (or quadratic, mlp: baselines)

Writes saved_models/<name>_predictor.pt (state dict) and configs/<name>_config.json (arguments and results).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

from iterators.block_indicators import layout
from iterators.caches import CACHE_DIR, cache_path, load_cache
from iterators.encoding import encode_archs
from iterators.errors import ArgumentParser, UserError, check_output_dir, run_cli
from iterators.graphs import GraphSet
from iterators.runtime import add_threads_flag, configure
from iterators.targets import Target
from iterators.units import unit_target_moments
from models.baselines import BASELINES, baseline_run_name, fit_baseline, format_readout, readout
from models.checkpoints import run_name, save_predictor
from models.encoder import ACTIVATIONS, GNN_TYPES
from models.loss import RankingLoss
from models.predictor import POOLS, TEST_METRICS, build_predictor
from models.training import fit, hop_norm_moments, predict_with_embeddings, regression_metrics, split_indices

DEFAULT_FAMILY = "ofa_mbv3"


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(__doc__)
    p.add_argument("-families", default=None, help="cache family (default ofa_mbv3, or the family of -cache): reads "
                   "cache/<families>_<format>_cache.*; onnx_ir takes several joined by '+', e.g. ofa_mbv3+ofa_pn")
    p.add_argument("-target", default="acc", help="expression over the cache's metrics, e.g. '(acc*100)/latency_gpu'")
    p.add_argument("-format", default="custom", choices=["custom", "onnx_ir"])
    p.add_argument("-model", default="gnn", choices=("gnn",) + BASELINES,
                   help="gnn (AutoBuild's predictor) or an interpretable baseline on one-hot block/depth features: "
                   "bilinear, quadratic (both ridge in closed form), mlp")
    p.add_argument("-ridge", type=float, default=None,
                   help="bilinear/quadratic: ridge penalty (default: chosen by leave-one-out error)")
    p.add_argument("-hidden", type=int, default=128, help="mlp: width of its two hidden layers")
    p.add_argument("-cache", default=None, help="read this cache file instead (.jsonl.gz, .pkl or OFA-notation .json)")
    p.add_argument("-cache_dir", default=CACHE_DIR, help="where <family>_<format>_cache.* files are looked up")
    p.add_argument("-epochs_predictor", type=int, default=200)
    p.add_argument("-batch_size", type=int, default=128)
    p.add_argument("-lr", type=float, default=1e-4, help="AdamW learning rate")
    p.add_argument("-gnn_type", default="GATv2Conv", choices=GNN_TYPES)
    p.add_argument("-gnn_dim", type=int, default=32)
    p.add_argument("-num_layers", type=int, default=4)
    p.add_argument("-aggr_method", default="mean", choices=sorted(POOLS))
    p.add_argument("-gnn_activ", default="ReLU", choices=sorted(ACTIVATIONS))
    p.add_argument("-reg_activ", default="ReLU", choices=sorted(ACTIVATIONS))
    p.add_argument("-corr_lambda", type=float, default=1.0, help="weight of the hop-embedding ranking loss")
    p.add_argument("-norm", type=int, default=1, help="p of the Lp norm of embeddings")
    p.add_argument("-seed", type=int, default=12345)
    p.add_argument("-tag", default=None, help="prefix of the checkpoint name")
    p.add_argument("-plots", action="store_true", help="save training/test plots and the best network per hop")
    p.add_argument("-out_dir", default=".", help="where saved_models/, configs/ and plots/ are written")
    p.add_argument("-quiet", action="store_true", help="no progress bar")
    add_threads_flag(p)
    args = p.parse_args(argv)
    if not args.lr > 0:
        p.error("-lr must be positive")
    for name in ("epochs_predictor", "batch_size", "gnn_dim", "num_layers", "norm"):
        if getattr(args, name) < 1:
            p.error(f"-{name} must be at least 1")
    if args.batch_size < 2:
        p.error("-batch_size must be at least 2 (batch norm)")
    if args.format == "custom" and "+" in (args.families or ""):
        p.error("the custom format is family-specific: train on several families with -format onnx_ir")
    if args.model != "gnn" and args.format != "custom":
        p.error(f"-model {args.model} reads the custom format (one-hot block choices); drop -format {args.format}")
    return args


class Dataset(NamedTuple):
    """The entries of the cache(s) that have the target."""
    graphs: GraphSet
    y: np.ndarray
    families: list[str]  # family of every entry
    items: list          # Archs (custom) or OnnxGraphs (onnx_ir)
    keep: np.ndarray     # mask over all entries read: which had the target
    source: str
    family: str


def load_dataset(args, target: Target) -> Dataset:
    if args.format == "custom":
        path = args.cache or cache_path(args.families or DEFAULT_FAMILY, "custom", args.cache_dir)
        cache = load_cache(path, args.families or (None if args.cache else DEFAULT_FAMILY))  # a header must agree
        args.families = cache.family
        y, keep = target.evaluate(cache.entries, cache.metrics)
        archs = [a for a, k in zip(cache.archs, keep) if k]
        return Dataset(encode_archs(archs), y, [cache.family] * len(archs), archs, keep, path, cache.family)
    args.families = args.families or DEFAULT_FAMILY
    if args.cache and "+" in args.families:
        raise UserError("-cache names one file: use -cache_dir to train on several families")
    from iterators.onnx_ir import graphs_to_graphset, load_graph_cache
    graphs, entries, families = [], [], []
    for family in args.families.split("+"):
        path = args.cache or cache_path(family, "onnx_ir", args.cache_dir)
        g, e = load_graph_cache(path, family)
        graphs += g
        entries += e
        families += [family] * len(g)
    y, keep = target.evaluate(entries, set().union(*entries))
    kept = [g for g, k in zip(graphs, keep) if k]
    families = [f for f, k in zip(families, keep) if k]
    return Dataset(graphs_to_graphset(kept), y, families, kept, keep, args.families, args.families)


def format_metrics(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" + ("%" if k == "MAPE" else "") for k, v in metrics.items())


def format_report(metrics: dict, hop_srcc: list[float], readout: dict, hop_moments: torch.Tensor,
                  target: str, unseen: dict | None = None) -> str:
    lines = [f"Test set ({target}): " + format_metrics(metrics)]
    lines.append("Spearman of the hop-level graph-embedding norm with the target: " +
                 ", ".join(f"hop {h}: {v:+.4f}" for h, v in enumerate(hop_srcc)))
    lines.append("FE-MLP read-out (score of each feature value, larger = more influential):")
    for category, scores in readout.items():
        lines.append(f"  {category:<11}" + "  ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    if unseen:
        lines.append("  never seen in training (scores untrained, not listed): " +
                     ", ".join(f"{category} {' '.join(values)}" for category, values in unseen.items()))
    lines.append("Hop moments of node-embedding norms (training set): " +
                 ", ".join(f"hop {h}: N({m:.3f}, {s:.3f})" for h, (m, s) in enumerate(hop_moments.t().tolist())))
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    check_output_dir(args.out_dir, "-out_dir")  # before the training, not after it
    configure(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    target = Target(args.target)
    graphs, y, families, items, keep, source, family = load_dataset(args, target)
    print(f"{source}: {len(keep)} networks of {family}; target {args.target!r} on {len(y)}"
          + (f", {int((~keep).sum())} skipped for a missing or non-finite metric" if (~keep).any() else ""))
    if len(y) < 20:
        raise UserError(f"-target {args.target!r}: only {len(y)} networks of {source} have it: too few to train and "
                        f"test on")

    train_idx, test_idx = split_indices(len(y), args.seed)
    config = {**vars(args), "family": family, "cache": os.path.basename(source)}
    if args.format == "onnx_ir":  # the form of the graphs trained on (iterators/onnx_ir/features.py, VOCAB_HISTORY)
        config["vocab_version"] = min(g.vocab_version for g in items)
    if args.model != "gnn":
        return train_baseline(args, config, graphs, y, train_idx, test_idx)
    config["chkpt"] = run_name(config)

    model = build_predictor(config)
    if args.format == "custom":
        model.unit_moments.copy_(unit_target_moments([items[i] for i in train_idx], y[train_idx], family))
    mean, std = float(y[train_idx].mean()), float(y[train_idx].std())
    model.target_moments.copy_(torch.tensor([mean, std if std > 0 else 1.0]))
    y_std = torch.tensor((y - mean) / float(model.target_moments[1]), dtype=torch.float32)

    start = time.perf_counter()
    history = fit(model, graphs, y_std, train_idx, args.epochs_predictor, args.batch_size,
                  RankingLoss(args.corr_lambda, args.norm), args.seed, lr=args.lr, progress=not args.quiet)
    train_seconds = time.perf_counter() - start

    preds, norms = predict_with_embeddings(model, graphs, test_idx, args.norm)
    metrics = regression_metrics(y[test_idx], preds)
    hop_srcc = [float(stats.spearmanr(y[test_idx], n).statistic) for n in norms]
    per_family, family_sizes = {}, {}
    if len(set(families)) > 1:
        test_families = np.array([families[i] for i in test_idx])
        family_sizes = {f: int((test_families == f).sum()) for f in sorted(set(families))}
        per_family = {f: regression_metrics(y[test_idx][test_families == f], preds[test_families == f])
                      for f in family_sizes}
    model.test_metrics.copy_(torch.tensor([metrics[k] for k in TEST_METRICS]))
    model.hop_moments.copy_(hop_norm_moments(model, graphs, train_idx, args.norm))
    readout, unseen = model.fe_readout(), model.fe_mlp.unseen()

    print(f"trained {len(history)} epochs in {train_seconds:.1f}s ({train_seconds / max(len(history), 1):.3f} s/epoch)"
          f" on {len(train_idx)} architectures, tested on {len(test_idx)}")
    print(format_report(metrics, hop_srcc, readout, model.hop_moments, args.target, unseen))
    for f, m in per_family.items():
        print(f"  {f} ({family_sizes[f]} test networks): {format_metrics(m)}")

    config["results"] = {"test": metrics, "test_per_family": per_family, "hop_spearman": hop_srcc,
                         "fe_readout": readout, "fe_unseen": unseen, "hop_moments": model.hop_moments.tolist(),
                         "epochs_done": len(history),
                         "seconds_per_epoch": train_seconds / max(len(history), 1), "n_train": len(train_idx),
                         "n_test": len(test_idx), "n_skipped": int((~keep).sum()), "loss_history": history}
    model_path, config_path = save_predictor(model, config, os.path.join(args.out_dir, "saved_models"),
                                             os.path.join(args.out_dir, "configs"))
    print(f"saved {model_path} and {config_path}")

    if args.plots:
        from models.plots import draw_hop_graphs, ensure_dir, plot_training
        plot_dir = ensure_dir(os.path.join(args.out_dir, "plots"))
        prefix = os.path.join(plot_dir, config["chkpt"])
        print("plots:", plot_training(history, y[test_idx], preds, args.target, prefix + "_training.png"))
        best = int(np.argmax(y))
        if args.format == "custom":
            labels = [f"S{s + 1}.{b + 1}\ne{e} k{k}" for s, stage in enumerate(items[best].stages)
                      for b, (e, k) in enumerate(stage)]
        else:
            labels = items[best].op_types
        for p in draw_hop_graphs(model, graphs.batch([best]), labels, args.norm, prefix + "_best"):
            print("plots:", p)
    return config


def train_baseline(args, config: dict, graphs: GraphSet, y: np.ndarray, train_idx: np.ndarray,
                   test_idx: np.ndarray) -> dict:
    """-model bilinear/quadratic/mlp: the GNN's data, split and test metrics; the read-out is the coefficients."""
    family = config["family"]
    if family not in ("ofa_mbv3", "ofa_pn"):
        raise UserError(f"-model {args.model}: the baselines are defined on ofa_mbv3 and ofa_pn, not {family}")
    config["chkpt"] = baseline_run_name(config)
    u = layout(family).features(graphs.batch()).numpy()
    model, info = fit_baseline(args.model, family, u[train_idx], y[train_idx], args.ridge, args.hidden,
                               args.epochs_predictor, args.batch_size, args.seed, progress=not args.quiet)
    preds = model.predict_features(u[test_idx])
    metrics = regression_metrics(y[test_idx], preds)
    model.test_metrics.copy_(torch.tensor([metrics[k] for k in TEST_METRICS]))
    ro = readout(model, u[train_idx], args.seed)
    chosen = ", ".join(f"{k} {v:.4g}" for k, v in info.items() if k in ("ridge_lambda", "interaction_weight",
                                                                          "loo_rmse", "epochs_done"))
    print(f"fitted {args.model} in {info['seconds']:.2f}s on {len(train_idx)} architectures ({chosen}), "
          f"tested on {len(test_idx)}")
    print(f"Test set ({args.target}): " + format_metrics(metrics))
    print(format_readout(ro))
    config["results"] = {"test": metrics, "readout": ro, "fe_readout": ro["marginal"], "n_train": len(train_idx),
                         "n_test": len(test_idx), "train_seconds": info.pop("seconds"), **info}
    model_path, config_path = save_predictor(model, config, os.path.join(args.out_dir, "saved_models"),
                                             os.path.join(args.out_dir, "configs"))
    print(f"saved {model_path} and {config_path}")
    if args.plots:
        from models.baseline_plots import plot_baseline_readout
        from models.plots import ensure_dir, plot_training
        prefix = os.path.join(ensure_dir(os.path.join(args.out_dir, "plots")), config["chkpt"])
        print("plots:", plot_baseline_readout(ro, y[test_idx], preds, args.target, config["chkpt"],
                                              prefix + "_readout.png"))
        if info.get("loss_history"):
            print("plots:", plot_training(info["loss_history"], y[test_idx], preds, args.target,
                                          prefix + "_training.png"))
    return config


if __name__ == "__main__":
    run_cli(main)

"""The torchvision classification zoo through the ONNX-IR converter: does every model convert, how big is its op
graph, how many of its operators the OFA-trained predictors know, and what they predict.

    python bench/bench_onnx_zoo.py [-models resnet18 mobilenet_v3_small ...] [-out zoo.json]

Every model of ``torchvision.models.list_models(module=torchvision.models)`` (or -models) is built with random
weights, exported to an ONNX file at 1x3x224x224 (TorchScript exporter, opset 17, eval mode: the file a user would
give predict.py) and converted, one model at a time, each in its own process so that the big ones give their memory
back. Models that torch itself cannot export are listed as skipped. Per model: operators (dummy nodes left out) and
edges of the op graph, the share of operators of a type the OFA graphs never hold before the canonical form (the raw
export against raw exports of OFA subnets) and after it (against the op types the shipped predictors saw in
training: the canonical OFA graphs),
conversion time (the file to its encoded graph, export not included) and the shipped predictors' predictions.
Run it under `nice`: the big models take minutes and gigabytes to export.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

INPUT_SIZE = (1, 3, 224, 224)
OFA_SAMPLE = (  # OFA subnets whose blocks hold every operator the OFA spaces use (SE, h-swish, ReLU, ReLU6)
    (["mbconv3_e4_k5"] * 2, 5, 128), (["mbconv2_e4_k5"] * 2, 6, 128))


def raw_ofa_op_types() -> set[str]:
    """The op types of OFA subnets exported and constant-folded, without the canonical form."""
    from evaluation.ofa_manager import build_subnet
    from iterators.onnx_ir.canonical import fold_constants
    from iterators.onnx_ir.parsing import op_graph_from_torch
    from iterators.search_space import make_arch
    found = set()
    for stage, n_stages, resolution in OFA_SAMPLE:
        stages = [stage] * (n_stages - 1) + [stage[:1]] if n_stages == 6 else [stage] * n_stages
        graph = op_graph_from_torch(build_subnet(make_arch(stages, resolution)), (1, 3, resolution, resolution))
        fold_constants(graph)
        found |= {n.op_type for n in graph.nodes}
    return found


def measure(name: str, raw_ofa: set[str]) -> dict:
    """Export ``name``, convert it and predict it; runs in a child process."""
    import torch
    import torchvision
    from iterators.onnx_ir import graphs_to_graphset, n_operators, unknown_ops
    from iterators.onnx_ir.canonical import fold_constants
    from iterators.onnx_ir.features import encode
    from iterators.onnx_ir.parsing import graph_from_onnx, op_graph_from_onnx
    from iterators.paths import L1_DIR
    from models.checkpoints import load_predictor
    from models.predictor import predict_graphs
    torch.set_num_threads(1)
    row = {"model": name}
    net = torchvision.models.get_model(name, weights=None).eval()
    row["params_M"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(net, (torch.zeros(*INPUT_SIZE),), path, dynamo=False, opset_version=17)
        except Exception as err:  # torch cannot export it: listed, not converted
            return {**row, "skipped": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        row["export_s"] = round(time.perf_counter() - start, 1)
        del net
        start = time.perf_counter()
        graph = graph_from_onnx(path)
        row["convert_s"] = round(time.perf_counter() - start, 2)
        raw = op_graph_from_onnx(path)
        fold_constants(raw)
        before = encode(raw, warn=False)
    unknown = Counter()
    for target in ("acc", "latency_cpu"):
        model, _ = load_predictor(os.path.join(L1_DIR, f"ofa_mbv3+ofa_pn_onnx_ir_{target}_GATv2Conv_mean_directed_"
                                                       f"srcc1_predictor.pt"))
        row[target] = predict_graphs(model, graphs_to_graphset([graph]))[0]
        unknown |= model.fe_mlp.unseen_ops(graph.op_types)
    row.update(nodes=n_operators(graph), edges=int(graph.edges.shape[1]), nodes_before=n_operators(before),
               unknown_before=_share(unknown_ops(before.op_types, raw_ofa), before),
               unknown_after=_share(unknown, graph), unknown_ops_after=dict(unknown.most_common()))
    return row


def _share(unknown, graph) -> float:
    return round(sum(unknown.values()) / max(len(graph.op_types) - 2, 1), 4)


def _format(rows: list[dict]) -> str:
    columns = ["model", "params (M)", "nodes", "edges", "unknown before", "unknown after", "convert (s)", "acc",
               "latency_cpu (ms)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['model']} | {r.get('params_M', '')} | {r.get('skipped') or r['error']} ||||||")
            continue
        lines.append(f"| {r['model']} | {r['params_M']} | {r['nodes']} | {r['edges']} | "
                     f"{100 * r['unknown_before']:.1f}% | {100 * r['unknown_after']:.1f}% | {r['convert_s']} | "
                     f"{r['acc']:.3f} | {r['latency_cpu']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-models", nargs="+", default=None, help="default: every classification model of torchvision")
    p.add_argument("-out", default=None, help="write the rows as JSON here")
    p.add_argument("-one", nargs=2, default=None, help=argparse.SUPPRESS)  # child: model, raw OFA ops as JSON
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], set(json.loads(args.one[1])))))
        return []
    import torchvision
    names = args.models or torchvision.models.list_models(module=torchvision.models)
    raw_ofa = json.dumps(sorted(raw_ofa_op_types()))
    print(f"op types of raw OFA exports: {raw_ofa}", file=sys.stderr)
    rows = []
    for i, name in enumerate(names, 1):
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "-one", name, raw_ofa], capture_output=True,
                               text=True)
        lines = child.stdout.strip().splitlines()
        try:
            row = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            row = {"model": name, "error": (child.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        rows.append(row)
        print(f"[{i}/{len(names)}] {json.dumps(row)}", file=sys.stderr, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
    print(_format(rows))
    done = [r for r in rows if "nodes" in r]
    print(f"\n{len(done)} of {len(rows)} converted; skipped (torch cannot export): "
          f"{', '.join(r['model'] for r in rows if 'skipped' in r) or 'none'}; failed: "
          f"{', '.join(r['model'] for r in rows if 'error' in r) or 'none'}")
    return rows


if __name__ == "__main__":
    main()

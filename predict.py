"""Predict a target for architectures with any predictor checkpoint of the toolkit or a published one.

    python predict.py -chkpt saved_models/X_predictor.pt -archs archs.json [-out predictions.json]
    python predict.py -onnx model.onnx other.onnx models/ -input_size 1 3 224 224 [-chkpt Y_predictor.pt] [-out t.csv]

archs.json is a JSON list of {"resolution": 224, "config": [[block strings of stage 1], ...]}. Predictions are in
the target's own units, one per architecture, in order; printed as JSON when -out is absent. An onnx_ir predictor
takes OFA architectures of any family it was trained on (each is exported to ONNX once and kept in -graph_cache).

-onnx takes ONNX files and folders (every *.onnx in them), converts each to its op graph in canonical form, and
prints a table: the prediction of every predictor and the share of operators of a type the predictors never saw in
training. Without -chkpt it uses the onnx_ir predictors shipped in l1_models/ (ImageNet accuracy pseudo-label and
CPU latency, trained on OFA subnets). -input_size fixes the (first) model input's shape. -out writes the table as
JSON or CSV, by extension.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import sys
import time
from collections import Counter

from iterators.errors import ArgumentParser, UserError, check_output_file, reading, run_cli
from iterators.paths import L1_DIR
from iterators.runtime import add_threads_flag, configure
from iterators.search_space import ArchError, arch_from_json

SHIPPED_ONNX_PREDICTORS = ("acc", "latency_cpu")  # l1_models/ofa_mbv3+ofa_pn_onnx_ir_<target>_..._predictor.pt


def main(argv=None) -> list:
    p = ArgumentParser(__doc__)
    p.add_argument("-chkpt", default=None, help="<name>_predictor.pt; its config is found by the paper's naming. "
                   "Needed with -archs; with -onnx the shipped onnx_ir predictors are the default")
    p.add_argument("-archs", default=None, help="JSON list of {resolution, config}")
    p.add_argument("-onnx", nargs="+", default=None, help="ONNX model files and folders of them (onnx_ir predictors)")
    p.add_argument("-input_size", type=int, nargs="+", default=None, help="e.g. 1 3 224 224, with -onnx")
    p.add_argument("-graph_cache", default=".ofa_graph_cache",
                   help="onnx_ir predictors with -archs: where converted OFA subnets are kept")
    p.add_argument("-out", default=None, help="write the predictions here instead of stdout (-onnx: .json or .csv)")
    add_threads_flag(p)
    args = p.parse_args(argv)
    if (args.archs is None) == (args.onnx is None):
        p.error("give either -archs or -onnx")
    if args.archs and args.chkpt is None:
        p.error("-archs needs -chkpt")
    if args.out:
        check_output_file(args.out, "-out", (".json", ".csv") if args.onnx else ())
    configure(args.threads)
    if args.onnx:
        return predict_onnx(args)
    # imported once the flags are known, so that --help and flag errors answer at once
    from models.checkpoints import load_predictor
    from models.predictor import predict_archs, predict_graphs
    model, config = load_predictor(args.chkpt)
    archs = read_archs(args.archs, config)
    if config.get("format") != "onnx_ir":
        return _emit(predict_archs(model, archs), args.out, config)
    from tqdm import tqdm

    from evaluation.ofa_graphs import graph_from_arch
    from iterators.onnx_ir import graphs_to_graphset
    _note_vocabulary(args.chkpt, config)
    graphs = [graph_from_arch(a, args.graph_cache)
              for a in tqdm(archs, desc="OFA subnets -> ONNX-IR", unit="arch", disable=len(archs) < 10)]
    return _emit(predict_graphs(model, graphs_to_graphset(graphs)), args.out, config)


def read_archs(path: str, config: dict) -> list:
    """The architectures of an archs.json, each checked against the families the predictor knows."""
    onnx_ir = config.get("format") == "onnx_ir"
    families = config["family"].split("+")
    fix = 'expected a JSON list of {"resolution": 224, "config": [[block strings of stage 1], ...]}'
    with reading(path, "architecture list", fix):
        with open(path) as f:
            entries = json.load(f)
        if not isinstance(entries, list) or not entries:
            raise UserError(f"{path}: {fix}")
        archs = []
        for i, entry in enumerate(entries):
            try:  # an onnx_ir predictor may know several families: each architecture's blocks name its own
                arch = arch_from_json(entry, None if onnx_ir else config["family"])
            except ArchError as err:
                raise UserError(f"{path}: architecture {i}: {err}") from None
            if arch.family not in families:
                raise UserError(f"{path}: architecture {i} is of {arch.family}; this predictor knows "
                                f"{', '.join(families)}")
            archs.append(arch)
    return archs


def _note_vocabulary(chkpt: str, config: dict) -> None:
    from iterators.onnx_ir import VOCAB_HISTORY, VOCAB_VERSION
    version = config.get("vocab_version", 1)
    if version < VOCAB_VERSION:
        print(f"note: {os.path.basename(chkpt)} was trained on graphs of op vocabulary version {version} "
              f"({VOCAB_HISTORY[version][1]}); graphs are now converted to version {VOCAB_VERSION} "
              f"({VOCAB_HISTORY[VOCAB_VERSION][1]}), so spellings it learned may read as unknown operators: "
              f"retrain it on caches rebuilt with make_onnx_ir_caches.py", file=sys.stderr)


def onnx_files(paths: list[str]) -> list[str]:
    """-onnx arguments -> model files: a file as given, a folder as every *.onnx in it (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*.onnx")))
            if not found:
                raise UserError(f"-onnx {path}: the folder holds no .onnx file")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UserError(f"-onnx {path}: no such file or folder")
    return list(dict.fromkeys(files))


def _onnx_predictors(chkpt: str | None) -> list[tuple[str, object, dict]]:
    """(path, model, config) of -chkpt, or of the shipped onnx_ir predictors."""
    from models.checkpoints import load_predictor
    if chkpt is None:
        paths = [p for target in SHIPPED_ONNX_PREDICTORS
                 for p in sorted(glob.glob(os.path.join(L1_DIR, f"*_onnx_ir_{target}_*_predictor.pt")))[:1]]
        if len(paths) != len(SHIPPED_ONNX_PREDICTORS):
            raise UserError("-onnx without -chkpt uses the onnx_ir predictors shipped in l1_models/, and they are "
                            "missing: give -chkpt, or restore l1_models/ from the repository")
    else:
        paths = [chkpt]
    predictors = []
    for path in paths:
        model, config = load_predictor(path)
        if config.get("format") != "onnx_ir":
            raise UserError(f"-chkpt {path}: -onnx needs an onnx_ir predictor; this one reads the "
                            f"{config.get('format')} format")
        _note_vocabulary(path, config)
        predictors.append((path, model, config))
    return predictors


def predict_onnx(args) -> list[dict]:
    """Convert every -onnx model, predict it with every predictor, print the table, write -out."""
    from tqdm import tqdm

    from iterators.onnx_ir import OnnxGraphError, graphs_to_graphset, n_operators
    from iterators.onnx_ir.parsing import graph_from_onnx
    from models.predictor import predict_graphs
    files = onnx_files(args.onnx)
    predictors = _onnx_predictors(args.chkpt)
    rows, graphs = [], []
    for path in tqdm(files, desc="ONNX -> ONNX-IR", unit="model", disable=len(files) < 3):
        row = {"model": path}
        try:
            start = time.perf_counter()
            graph = graph_from_onnx(path, args.input_size)
            row["seconds"] = round(time.perf_counter() - start, 3)
        except OnnxGraphError as err:
            hint = "" if args.input_size else " (give its input size, e.g. -input_size 1 3 224 224)"
            row["error"] = f"{err}{hint if 'no known shape' in str(err) else ''}"
            if len(files) == 1:
                raise UserError(f"{path}: {row['error']}") from None
            print(f"error: {path}: {row['error']}", file=sys.stderr)
            rows.append(row)
            continue
        unseen = Counter()
        for _, model, _ in predictors:  # an op type unseen by any of them
            unseen |= model.fe_mlp.unseen_ops(graph.op_types)
        row.update(operators=n_operators(graph), unknown_ops=sum(unseen.values()),
                   unknown_share=round(sum(unseen.values()) / max(n_operators(graph), 1), 4),
                   unknown=dict(unseen.most_common()))
        rows.append(row)
        graphs.append((row, graph))
    targets = [config["target"] for _, _, config in predictors]
    if graphs:
        batch = graphs_to_graphset([g for _, g in graphs])
        for target, (_, model, _) in zip(targets, predictors):
            for (row, _), value in zip(graphs, predict_graphs(model, batch)):
                row[target] = value
    print(_table(rows, targets))
    if args.out:
        _write_rows(rows, targets, args.out)
        print(f"wrote {len(rows)} rows to {args.out}", file=sys.stderr)
    failed = [r for r in rows if "error" in r]
    if failed:
        raise UserError(f"{len(failed)} of {len(rows)} models could not be converted (errors above)")
    return rows


def _unknown_text(row: dict) -> str:
    from iterators.onnx_ir import op_counts_text
    if "error" in row:
        return "error: " + row["error"]
    share = f"{row['unknown_ops']}/{row['operators']} ({100 * row['unknown_share']:.1f}%)"
    return share + (": " + op_counts_text(Counter(row["unknown"])) if row["unknown"] else "")


def _table(rows: list[dict], targets: list[str]) -> str:
    header = ["model", *targets, "unknown operators"]
    lines = [[os.path.basename(r["model"]), *(f"{r[t]:.4g}" if t in r else "-" for t in targets), _unknown_text(r)]
             for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(line, widths)), line[-1]])
                     for line in [header, *lines])


def _write_rows(rows: list[dict], targets: list[str], out: str) -> None:
    from iterators.onnx_ir import op_counts_text
    if out.endswith(".json"):
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)
        return
    columns = ["model", *targets, "operators", "unknown_ops", "unknown_share", "unknown", "seconds", "error"]
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "unknown": op_counts_text(Counter(row.get("unknown", {})))})


def _emit(preds: list[float], out: str | None, config: dict) -> list[float]:
    if out:
        with open(out, "w") as f:
            json.dump(preds, f)
        print(f"wrote {len(preds)} predictions of {config['target']} to {out}", file=sys.stderr)
    else:
        json.dump(preds, sys.stdout)
        print()
    return preds


if __name__ == "__main__":
    run_cli(main)

"""Predict a target for architectures with any predictor checkpoint of the toolkit or a published one.

    python predict.py -chkpt saved_models/X_predictor.pt -archs archs.json [-out predictions.json]
    python predict.py -chkpt saved_models/Y_predictor.pt -onnx model.onnx -input_size 1 3 224 224   (onnx_ir)

archs.json is a JSON list of {"resolution": 224, "config": [[block strings of stage 1], ...]}. Predictions are in
the target's own units, one per architecture, in order; printed as JSON when -out is absent. An onnx_ir predictor
takes OFA architectures of any family it was trained on (each is exported to ONNX once and kept in -graph_cache) and
any ONNX model, whose input is fixed to -input_size before shape inference.
"""
from __future__ import annotations

import json
import os
import sys

from iterators.errors import ArgumentParser, UserError, check_output_file, reading, run_cli
from iterators.runtime import add_threads_flag, configure
from iterators.search_space import ArchError, arch_from_json


def main(argv=None) -> list[float]:
    p = ArgumentParser(__doc__)
    p.add_argument("-chkpt", required=True, help="<name>_predictor.pt; its config is found by the paper's naming")
    p.add_argument("-archs", default=None, help="JSON list of {resolution, config}")
    p.add_argument("-onnx", default=None, help="an ONNX model file (onnx_ir predictors)")
    p.add_argument("-input_size", type=int, nargs="+", default=None, help="e.g. 1 3 224 224, with -onnx")
    p.add_argument("-graph_cache", default=".ofa_graph_cache",
                   help="onnx_ir predictors with -archs: where converted OFA subnets are kept")
    p.add_argument("-out", default=None, help="write the predictions here instead of stdout")
    add_threads_flag(p)
    args = p.parse_args(argv)
    if (args.archs is None) == (args.onnx is None):
        p.error("give either -archs or -onnx")
    if args.out:
        check_output_file(args.out, "-out")
    configure(args.threads)
    # imported once the flags are known, so that --help and flag errors answer at once
    from models.checkpoints import load_predictor
    from models.predictor import predict_archs, predict_graphs
    model, config = load_predictor(args.chkpt)
    if args.onnx:
        from iterators.onnx_ir import OnnxGraphError, graphs_to_graphset, op_counts_text
        if config.get("format") != "onnx_ir":
            p.error(f"-onnx needs an onnx_ir predictor; {args.chkpt} reads the {config.get('format')} format")
        if not os.path.isfile(args.onnx):
            p.error(f"-onnx {args.onnx}: no such file")
        try:
            graph = onnx_graph_with_input_size(args.onnx, args.input_size)
        except OnnxGraphError as err:
            hint = "" if args.input_size else " (give its input size, e.g. -input_size 1 3 224 224)"
            p.error(f"{args.onnx}: {err}{hint}")
        unseen = model.fe_mlp.unseen_ops(graph.op_types)
        if unseen:
            print(f"warning: {sum(unseen.values())} of {len(graph.op_types)} operators have a type this predictor "
                  f"never saw in training ({op_counts_text(unseen)}); their embeddings are untrained, so the "
                  f"prediction extrapolates", file=sys.stderr)
        return _emit(predict_graphs(model, graphs_to_graphset([graph])), args.out, config)
    archs = read_archs(args.archs, config)
    if config.get("format") != "onnx_ir":
        return _emit(predict_archs(model, archs), args.out, config)
    from tqdm import tqdm

    from iterators.onnx_ir import graph_from_arch, graphs_to_graphset
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


def onnx_graph_with_input_size(path: str, input_size: list[int] | None):
    import onnx

    from iterators.onnx_ir import OnnxGraphError, graph_from_onnx
    model = onnx.load(path)
    if input_size:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if len(dims) != len(input_size):
            raise OnnxGraphError(f"the model input has {len(dims)} dimensions, -input_size gives {len(input_size)}")
        for dim, size in zip(dims, input_size):
            dim.dim_value = size
    return graph_from_onnx(model)


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

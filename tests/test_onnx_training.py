import gzip
import json
import math
import os
import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import predict
import train_predictor
from iterators.caches import write_cache
from conftest import REPO
from iterators.errors import run_cli
from iterators.onnx_ir import (OP_INDEX, graph_from_record, graph_from_torch, graph_record, graphs_to_graphset,
                             load_graph_cache)
from models.checkpoints import save_predictor
from models.predictor import build_predictor


def _tiny_net(channels: int, kernel: int, depth: int) -> nn.Module:
    layers, c_in = [], 3
    for _ in range(depth):
        layers += [nn.Conv2d(c_in, channels, kernel, padding=kernel // 2), nn.ReLU()]
        c_in = channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def _write_family(tmp_path, family: str, depth: int) -> None:
    graphs, entries = [], []
    for channels in (4, 8, 12, 16, 24):
        for kernel in (1, 3, 5, 7):
            graphs.append(graph_record(graph_from_torch(_tiny_net(channels, kernel, depth), (1, 3, 16, 16))))
            entries.append({"flops": channels * kernel * kernel * depth})
    write_cache(str(tmp_path / f"{family}_onnx_ir_cache.jsonl.gz"), family, [None] * len(graphs), entries,
                {"flops": {"unit": "a.u."}}, graph_format="onnx_ir", graphs=graphs)


def test_onnx_ir_training_across_families(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_family(tmp_path, "netA", 1)
    _write_family(tmp_path, "netB", 2)
    config = train_predictor.main(["-format", "onnx_ir", "-families", "netA+netB", "-cache_dir", str(tmp_path),
                                   "-target", "flops", "-epochs_predictor", "3", "-quiet", "-batch_size", "8"])
    out = capsys.readouterr().out
    sizes = {f: int(re.search(rf"{f} \((\d+) test networks\): MAE", out).group(1)) for f in ("netA", "netB")}
    assert sum(sizes.values()) == config["results"]["n_test"] and "op_type" in out
    assert set(config["results"]["test_per_family"]) == {"netA", "netB"}
    assert set(config["results"]["fe_readout"]["op_type"]) == {"input", "output", "Conv", "Relu", "GlobalAveragePool",
                                                                "Flatten", "Gemm"}
    assert config["chkpt"] == "netA+netB_onnx_ir_flops_GATv2Conv_mean_directed_srcc1"


def test_predict_an_onnx_file_exported_on_the_spot(tmp_path, capsys):
    cfg = {"families": "ofa_mbv3+ofa_pn", "family": "ofa_mbv3+ofa_pn", "format": "onnx_ir", "target": "latency_cpu",
           "gnn_type": "GATv2Conv", "gnn_dim": 16, "num_layers": 2, "aggr_method": "mean", "chkpt": "tiny_onnx"}
    predictor = build_predictor(cfg).eval()
    seen = ("input", "output", "Conv", "Relu", "Add", "Mul", "Gemm", "Flatten")
    for op in seen:  # as if trained on networks with these ops only
        predictor.fe_mlp.op_seen[OP_INDEX[op]] = 1
    model_path, _ = save_predictor(predictor, cfg, str(tmp_path / "saved_models"), str(tmp_path / "configs"))
    net = torchvision.models.mobilenet_v3_small(weights=None).eval()
    onnx_path = str(tmp_path / "mobilenet_v3_small.onnx")
    torch.onnx.export(net, torch.zeros(1, 3, 224, 224), onnx_path, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}})
    with pytest.raises(SystemExit):  # the exported input is dynamic: its size must be given
        run_cli(predict.main, ["-chkpt", model_path, "-onnx", onnx_path])
    assert "has no known shape (give its input size, e.g. -input_size" in capsys.readouterr().err
    preds = predict.main(["-chkpt", model_path, "-onnx", onnx_path, "-input_size", "1", "3", "224", "224"])
    assert len(preds) == 1 and math.isfinite(preds[0])
    # MobileNetV3-Small: HardSwish in the stem, twice in each of 8 bneck blocks, the last conv and the classifier (19);
    # 9 SE blocks with a pool and a HardSigmoid each, plus the final pool
    warning = capsys.readouterr().err
    assert "HardSwish x19, GlobalAveragePool x10, HardSigmoid x9" in warning and "Conv" not in warning


def _first_cached_entry(family: str) -> dict:
    with gzip.open(os.path.join(REPO, "cache", f"{family}_onnx_ir_cache.jsonl.gz"), "rt") as f:
        f.readline()  # header
        return json.loads(f.readline())


def test_predict_ofa_archs_with_an_onnx_ir_predictor(tmp_path, capsys):
    cfg = {"families": "ofa_mbv3+ofa_pn", "family": "ofa_mbv3+ofa_pn", "format": "onnx_ir", "target": "acc",
           "gnn_type": "GATv2Conv", "gnn_dim": 16, "num_layers": 2, "aggr_method": "mean", "chkpt": "tiny_onnx"}
    predictor = build_predictor(cfg).eval()
    model_path, _ = save_predictor(predictor, cfg, str(tmp_path / "saved_models"), str(tmp_path / "configs"))
    rows = [_first_cached_entry("ofa_mbv3"), _first_cached_entry("ofa_pn")]
    archs_path = tmp_path / "archs.json"
    archs_path.write_text(json.dumps([{"resolution": r["resolution"], "config": r["config"]} for r in rows]))
    preds = predict.main(["-chkpt", model_path, "-archs", str(archs_path), "-graph_cache", str(tmp_path / "gc")])
    # converting on the spot gives the graphs the shipped caches hold for the same architectures
    with torch.no_grad():
        expected = predictor.predict(graphs_to_graphset([graph_from_record(r["graph"]) for r in rows]).batch())
    np.testing.assert_allclose(preds, expected.numpy(), rtol=1e-4)
    assert len(list((tmp_path / "gc").glob("*.npz"))) == 2

    cfg.update(family="ofa_mbv3", families="ofa_mbv3", chkpt="mbv3_only")
    model_path, _ = save_predictor(build_predictor(cfg), cfg, str(tmp_path / "saved_models"), str(tmp_path / "configs"))
    with pytest.raises(SystemExit):
        run_cli(predict.main, ["-chkpt", model_path, "-archs", str(archs_path), "-graph_cache", str(tmp_path / "gc")])
    assert "architecture 1 is of ofa_pn; this predictor knows ofa_mbv3" in capsys.readouterr().err


def test_published_onnx_ir_pickle_reads_as_a_graph_cache(tmp_path, monkeypatch):
    graph_mod, node_mod = types.ModuleType("onnx_ir.graph"), types.ModuleType("onnx_ir.node")

    class Graph:
        pass

    class Node:
        pass

    Graph.__module__, Node.__module__ = "onnx_ir.graph", "onnx_ir.node"
    Graph.__qualname__, Node.__qualname__ = "Graph", "Node"
    graph_mod.Graph, node_mod.Node = Graph, Node
    monkeypatch.setitem(sys.modules, "onnx_ir", types.ModuleType("onnx_ir"))
    monkeypatch.setitem(sys.modules, "onnx_ir.graph", graph_mod)
    monkeypatch.setitem(sys.modules, "onnx_ir.node", node_mod)

    def value(name, dims):
        return {"name": name, "type": {"tensorType": {"shape": {"dim": [{"dimValue": str(d)} for d in dims]}}}}

    relu = Node()
    relu.__dict__.update(str_id="0", name="relu", op_type="Relu", inputs=[value("x", [1, 8, 4, 4])],
                         outputs=[value("y", [1, 8, 4, 4])], attribute=[], initializer=[])
    g = Graph()
    g.__dict__.update(onnx_meta_info={}, metadata={}, nodes=[relu], src2dst={}, input_nodes=["0"], output_nodes=["0"])
    path = tmp_path / "legacy_onnx_ir_cache.pkl"
    path.write_bytes(pickle.dumps([{"graph": g, "acc": 0.7, "family": "x"}]))
    monkeypatch.delitem(sys.modules, "onnx_ir")
    monkeypatch.delitem(sys.modules, "onnx_ir.graph")
    monkeypatch.delitem(sys.modules, "onnx_ir.node")
    graphs, entries = load_graph_cache(str(path), "x")
    assert entries == [{"acc": 0.7}] and graphs[0].op_types == ["input", "Relu", "output"]
    np.testing.assert_allclose(graphs[0].x[1, 1:4], [8 / 256, 4 / 128, 4 / 128])

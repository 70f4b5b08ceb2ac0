import csv
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
from conftest import REPO
from iterators.errors import UserError, run_cli
from iterators.onnx_ir import (OP_INDEX, VOCAB_VERSION, graph_from_record, graphs_to_graphset, load_graph_cache,
                               write_graph_cache)
from iterators.onnx_ir.parsing import graph_from_torch
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
            graphs.append(graph_from_torch(_tiny_net(channels, kernel, depth), (1, 3, 16, 16)))
            entries.append({"flops": channels * kernel * kernel * depth})
    write_graph_cache(str(tmp_path / f"{family}_onnx_ir_cache.jsonl.gz"), family, [None] * len(graphs), entries,
                      {"flops": {"unit": "a.u."}}, graphs)


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
    assert config["vocab_version"] == VOCAB_VERSION


def _tiny_predictor(tmp_path, seen: tuple[str, ...], target: str = "latency_cpu", **config) -> str:
    """A saved onnx_ir predictor (untrained) that counts ``seen`` as the op types of its training graphs."""
    cfg = {"families": "ofa_mbv3+ofa_pn", "family": "ofa_mbv3+ofa_pn", "format": "onnx_ir", "target": target,
           "gnn_type": "GATv2Conv", "gnn_dim": 16, "num_layers": 2, "aggr_method": "mean", "chkpt": f"tiny_{target}",
           "vocab_version": VOCAB_VERSION, **config}
    predictor = build_predictor(cfg).eval()
    for op in seen:
        predictor.fe_mlp.op_seen[OP_INDEX[op]] = 1
    return save_predictor(predictor, cfg, str(tmp_path / "saved_models"), str(tmp_path / "configs"))[0]


def _export(net: nn.Module, path, **kwargs) -> str:
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 224, 224), str(path), dynamo=False, **kwargs)
    return str(path)


def test_predict_an_onnx_file_exported_on_the_spot(tmp_path, capsys):
    model_path = _tiny_predictor(tmp_path, ("input", "output", "Conv", "Relu", "Add", "Mul", "Gemm", "Flatten"))
    onnx_path = _export(torchvision.models.mobilenet_v3_small(weights=None), tmp_path / "mobilenet_v3_small.onnx",
                        input_names=["x"], dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}})
    with pytest.raises(UserError, match="has no known shape \\(give its input size, e.g. -input_size"):
        predict.main(["-chkpt", model_path, "-onnx", onnx_path])  # the exported input is dynamic: give its size
    [row] = predict.main(["-chkpt", model_path, "-onnx", onnx_path, "-input_size", "1", "3", "224", "224"])
    assert math.isfinite(row["latency_cpu"])
    # MobileNetV3-Small: HardSwish in the stem, twice in each of 8 bneck blocks, the last conv and the classifier (19);
    # 9 SE blocks with a pool and a HardSigmoid each, plus the final pool; 122 operators in all
    assert row["unknown"] == {"HardSwish": 19, "GlobalAveragePool": 10, "HardSigmoid": 9}
    assert row["operators"] == 122 and row["unknown_share"] == round(38 / 122, 4)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["model", "latency_cpu", "unknown", "operators"]
    assert out[1].startswith("mobilenet_v3_small.onnx") and "38/122 (31.1%): HardSwish x19, GlobalAveragePool x10" \
        in out[1]


def test_predict_several_onnx_files_and_a_folder(tmp_path, capsys):
    chkpt = _tiny_predictor(tmp_path, ("input", "output", "Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"))
    folder = tmp_path / "models"
    folder.mkdir()
    for channels in (4, 8):
        _export(_tiny_net(channels, 3, 1), folder / f"net{channels}.onnx")
    single = _export(_tiny_net(16, 3, 2), tmp_path / "deeper.onnx")
    rows = predict.main(["-chkpt", chkpt, "-onnx", str(folder), single, "-out", str(tmp_path / "table.csv")])
    assert [os.path.basename(r["model"]) for r in rows] == ["net4.onnx", "net8.onnx", "deeper.onnx"]
    assert [r["operators"] for r in rows] == [5, 5, 7] and all(r["unknown_ops"] == 0 for r in rows)
    with open(tmp_path / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert [float(t["latency_cpu"]) for t in table] == pytest.approx([r["latency_cpu"] for r in rows])
    assert table[2]["operators"] == "7" and table[2]["unknown_share"] == "0.0"

    (folder / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="1 of 3 models could not be converted"):
        predict.main(["-chkpt", chkpt, "-onnx", str(folder), "-out", str(tmp_path / "table.json")])
    assert "broken.onnx: not a readable ONNX model" in capsys.readouterr().err
    with open(tmp_path / "table.json") as f:
        rows = json.load(f)
    assert [("error" in r) for r in rows] == [True, False, False] and math.isfinite(rows[1]["latency_cpu"])
    with pytest.raises(UserError, match="-out table.txt: the file name must end in .json or .csv"):
        predict.main(["-chkpt", chkpt, "-onnx", single, "-out", "table.txt"])
    with pytest.raises(UserError, match="holds no .onnx file"):
        predict.main(["-chkpt", chkpt, "-onnx", str(tmp_path / "saved_models")])


def test_an_older_vocabulary_predictor_still_loads_and_says_so(tmp_path, capsys):
    """A checkpoint from before version 2 (no vocab_version in its config) keeps its 69-op embedding."""
    chkpt = _tiny_predictor(tmp_path, ("input", "output", "Conv", "Relu"), vocab_version=1)
    config_path = tmp_path / "configs" / "tiny_latency_cpu_config.json"
    config = json.loads(config_path.read_text())
    del config["vocab_version"]
    config_path.write_text(json.dumps(config))
    assert torch.load(chkpt, weights_only=True)["fe_mlp.op.embed.weight"].shape[0] == 69
    [row] = predict.main(["-chkpt", chkpt, "-onnx", _export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU()),
                                                            tmp_path / "silu.onnx")])
    assert row["unknown"] == {"Swish": 1}  # Swish came with version 2: unknown to a version-1 embedding
    assert "trained on graphs of op vocabulary version 1" in capsys.readouterr().err


def _first_cached_entry(family: str) -> dict:
    with gzip.open(os.path.join(REPO, "cache", f"{family}_onnx_ir_cache.jsonl.gz"), "rt") as f:
        f.readline()  # header
        return json.loads(f.readline())


def test_predict_ofa_archs_with_an_onnx_ir_predictor(tmp_path, capsys):
    cfg = {"families": "ofa_mbv3+ofa_pn", "family": "ofa_mbv3+ofa_pn", "format": "onnx_ir", "target": "acc",
           "gnn_type": "GATv2Conv", "gnn_dim": 16, "num_layers": 2, "aggr_method": "mean", "chkpt": "tiny_onnx",
           "vocab_version": VOCAB_VERSION}
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

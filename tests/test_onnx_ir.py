import os
import pickle
import sys
import time
import types
import warnings

import numpy as np
import onnx
import pytest
import torchvision
from torch import nn
from onnx import TensorProto, helper

from evaluation import ofa_graphs
from evaluation.ofa_graphs import graph_from_arch
from evaluation.ofa_manager import build_subnet
from iterators.onnx_ir import (ATTR_COLUMNS, N_FEATURES, OP_INDEX, OP_VOCAB, SHAPE_COLUMNS, OnnxGraphError,
                               graphs_to_graphset)
from iterators.onnx_ir.legacy import read_legacy_onnx_cache
from iterators.onnx_ir import parsing
from iterators.onnx_ir.parsing import graph_from_onnx, graph_from_torch, op_graph_from_onnx
from iterators.safe_pickle import RefusedPickle
from iterators.search_space import make_arch


def _tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(middle: onnx.NodeProto, value_info=(), extra_opsets=()):
    """x [1,3,8,8] -> Conv(4 out channels, 3x3, pad 1, bias) -> middle (c -> r) -> GlobalAveragePool -> y."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, dtype=np.float32))
    bias = helper.make_tensor("b", TensorProto.FLOAT, [4], np.zeros(4, dtype=np.float32))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             middle,
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    graph = helper.make_graph(nodes, "three_ops", [_tensor("x", [1, 3, 8, 8])], [_tensor("y", [1, 4, 1, 1])],
                              initializer=[weight, bias], value_info=list(value_info))
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in extra_opsets)]
    return helper.make_model(graph, opset_imports=opsets)


RELU = helper.make_node("Relu", ["c"], ["r"], name="relu")
CONV_OUT = [4 / 256, 8 / 128, 8 / 128]


def test_three_operator_model_hand_checked():
    g = graph_from_onnx(_model(RELU))
    assert g.x.shape == (5, N_FEATURES) and g.x.dtype == np.float32
    assert g.op_types == ["input", "Conv", "Relu", "GlobalAveragePool", "output"]
    assert g.edges.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    assert g.x[:, 0].tolist() == [OP_INDEX[op] for op in g.op_types] and g.n_oov == 0
    shapes = g.x[:, SHAPE_COLUMNS].reshape(5, 4, 3)  # node, (input 0, input 1, output 0, output 1), (C, H, W)
    x_in = [3 / 256, 8 / 128, 8 / 128]
    np.testing.assert_allclose(shapes[0], [[0] * 3, [0] * 3, x_in, [0] * 3])                # dummy input
    np.testing.assert_allclose(shapes[1], [x_in, [0] * 3, CONV_OUT, [0] * 3])               # Conv: no weight shapes
    np.testing.assert_allclose(shapes[3], [CONV_OUT, [0] * 3, [4 / 256, 1 / 128, 1 / 128], [0] * 3])
    np.testing.assert_allclose(shapes[4], [[4 / 256, 1 / 128, 1 / 128], [0] * 3, [0] * 3, [0] * 3])  # dummy output
    np.testing.assert_allclose(g.x[1, ATTR_COLUMNS], [1, 1, 1 / 4, 1, 1, 1])  # 3x3, group 1 of 4 outputs, bias
    np.testing.assert_allclose(g.x[3, ATTR_COLUMNS], [8 / 3, 8 / 3, 0, 0, 0, 0])  # global pool over 8x8
    assert not g.x[[0, 2, 4]][:, ATTR_COLUMNS].any()


def test_model_from_a_file_and_graphset(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(RELU), path)
    g = graph_from_onnx(str(path))
    np.testing.assert_array_equal(g.x, graph_from_onnx(_model(RELU)).x)
    gs = graphs_to_graphset([g, g])
    assert len(gs) == 2 and gs.batch().edge_index[:, -1].tolist() == [8, 9]


def test_ops_outside_the_vocabulary_warn_once_and_count():
    assert "Celu" not in OP_VOCAB
    custom = helper.make_node("Frobnicate", ["c"], ["f"], name="frob", domain="my.ops")
    model = _model(custom, value_info=[_tensor("f", [1, 4, 8, 8])], extra_opsets=["my.ops"])
    model.graph.node.insert(2, helper.make_node("Celu", ["f"], ["r"], name="celu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = graph_from_onnx(model)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "my.ops::Frobnicate" in message and "Celu" in message
    assert g.n_oov == 2 and g.x[[2, 3], 0].tolist() == [0, 0]
    assert g.op_types[2:4] == ["my.ops::Frobnicate", "Celu"]


def test_uninferable_shape_names_the_operator():
    """Neither shape inference nor ONNX Runtime knows the operator: one line names it."""
    custom = helper.make_node("Frobnicate", ["c"], ["r"], name="frob", domain="my.ops")
    with pytest.raises(OnnxGraphError, match=r"^operator 'frob' \(my.ops::Frobnicate\): its output shape cannot be "
                                             r"inferred and ONNX Runtime cannot run it \(.*not a registered"):
        graph_from_onnx(_model(custom, extra_opsets=["my.ops"]))


def _int64(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)] if isinstance(values, list) else [], values
                              if isinstance(values, list) else [values])


def test_shapes_computed_at_run_time_are_folded():
    """x.view(x.size(0), -1) as exporters write it without static shapes: Shape -> Gather -> Unsqueeze -> Concat ->
    Reshape. The shape chain is static (the input size is fixed): folded into one constant, [1, -1]."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="view")]
    graph = helper.make_graph(nodes, "view", [_tensor("x", [1, 4, 8, 8])], [_tensor("y", None)],
                              initializer=[_int64("zero", 0), _int64("axis0", [0]), _int64("minus_one", [-1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    raw = op_graph_from_onnx(model)
    assert [n.op_type for n in raw.nodes] == ["Reshape"] and raw.shapes["y"] == (1, 256)
    np.testing.assert_array_equal(raw.constants["target"], [1, -1])
    g = graph_from_onnx(model)
    assert g.op_types == ["input", "Flatten", "output"]
    np.testing.assert_allclose(g.x[-1, SHAPE_COLUMNS][:3], [1, 0, 0])  # [1, 256] -> (256 / 256, 0, 0)


def test_a_shape_only_a_run_can_tell(monkeypatch):
    """NonZero's output size depends on the values: static inference leaves it symbolic, one ONNX Runtime run on a
    random (so nowhere zero) input reads [2, 4] for a 1x4 input."""
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Cast", ["nz"], ["c"], to=1),
             helper.make_node("ReduceSum", ["c"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "nonzero", [_tensor("x", [1, 4])], [_tensor("y", None)])
    runs = []
    real_run = parsing._run
    monkeypatch.setattr(parsing, "_run", lambda *args: runs.append(args[1]) or real_run(*args))
    g = graph_from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert runs == [["nz", "c"]] and g.op_types == ["input", "NonZero", "Cast", "ReduceSum", "output"]
    np.testing.assert_allclose(g.x[1, SHAPE_COLUMNS][6:9], [4 / 256, 0, 0])  # output [2, 4]: batch axis dropped


def _value(name, shape):
    return {"name": name, "type": {"tensorType": {"elemType": 1, "shape": {"dim": [
        {"dimValue": str(d)} for d in shape]}}}}


# The original code's Conv node, in the two layouts its fields are known in: weights among the inputs with
# attributes/initializers as lists of protobuf-JSON dicts, or data inputs only with both as dicts by name.
LEGACY_CONVS = {
    "lists": ([_value("x", [1, 3, 8, 8]), _value("w", [4, 3, 3, 3]), _value("b", [4])],
              [{"name": "kernel_shape", "ints": ["3", "3"], "type": "INTS"}, {"name": "group", "i": "1"}],
              [{"name": "w", "dims": ["4", "3", "3", "3"]}, {"name": "b", "dims": ["4"]}]),
    "dicts": ([_value("x", [1, 3, 8, 8])],
              {"kernel_shape": [3, 3], "group": {"name": "group", "i": "1"}},
              {"conv.weight": {"dims": ["4", "3", "3", "3"]}, "conv.bias": {"dims": ["4"]}}),
}


def _legacy_pickle(monkeypatch, conv_layout: str) -> bytes:
    """The three-operator model as the original code's onnx_ir objects, pickled by classes that then vanish."""
    package, graph_mod, node_mod = (types.ModuleType(n) for n in ("onnx_ir", "onnx_ir.graph", "onnx_ir.node"))
    graph_mod.Graph = type("Graph", (), {"__module__": "onnx_ir.graph"})
    node_mod.Node = type("Node", (), {"__module__": "onnx_ir.node"})
    for module in (package, graph_mod, node_mod):
        monkeypatch.setitem(sys.modules, module.__name__, module)

    def node(str_id, op_type, inputs, outputs, attribute, initializer):
        n = node_mod.Node()
        n.__dict__.update(str_id=str_id, name=op_type.lower(), op_type=op_type, inputs=inputs, outputs=outputs,
                          attribute=attribute, initializer=initializer)
        return n

    inputs, attribute, initializer = LEGACY_CONVS[conv_layout]
    conv = node("n1", "Conv", inputs, [_value("c", [1, 4, 8, 8])], attribute, initializer)
    relu = node("n2", "Relu", [_value("c", [1, 4, 8, 8])], [_value("r", [1, 4, 8, 8])], {}, [])
    gap = node("n3", "GlobalAveragePool", [_value("r", [1, 4, 8, 8])], [_value("y", [1, 4, 1, 1])], [], {})
    graph = graph_mod.Graph()
    graph.__dict__.update(onnx_meta_info={}, metadata={}, nodes=[conv, relu, gap],
                          src2dst={"n1": ["n2"], "n2": ["n3"]}, input_nodes=["n1"], output_nodes=["n3"])
    data = pickle.dumps([{"graph": graph, "acc": 0.75, "flops": 12.5, "family": "ofa_mbv3"}])
    for module in (package, graph_mod, node_mod):
        monkeypatch.delitem(sys.modules, module.__name__)
    return data


@pytest.mark.parametrize("conv_layout", LEGACY_CONVS)
def test_legacy_pickle_loads_without_the_original_code(tmp_path, monkeypatch, conv_layout):
    path = tmp_path / "legacy_onnx_ir_cache.pkl"
    path.write_bytes(_legacy_pickle(monkeypatch, conv_layout))
    assert "onnx_ir.graph" not in sys.modules
    [entry] = read_legacy_onnx_cache(path)
    assert {k: v for k, v in entry.items() if k != "graph"} == {"acc": 0.75, "flops": 12.5, "family": "ofa_mbv3"}
    g, expected = entry["graph"], graph_from_onnx(_model(RELU))
    assert g.op_types == expected.op_types and g.n_oov == 0
    assert g.edges.tolist() == expected.edges.tolist()
    np.testing.assert_allclose(g.x, expected.x)


class _Evil:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def test_legacy_pickle_with_other_classes_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"graph": _Evil(), "acc": 1.0}]))
    with pytest.raises(RefusedPickle, match="system"):
        read_legacy_onnx_cache(path)


def test_ofa_subnet_graph_is_cached_on_disk(tmp_path, monkeypatch):
    arch = make_arch([["mbconv3_e3_k3"] * 2] * 5, 128)
    monkeypatch.setattr(ofa_graphs, "_module_graphs", {})  # a cold start: every module is exported
    start = time.perf_counter()
    g = graph_from_arch(arch, tmp_path)
    first = time.perf_counter() - start
    assert g.op_types.count("Conv") > 20 and g.n_oov == 0
    assert "Constant" not in g.op_types and "Identity" not in g.op_types  # folded into the weights
    assert not {"Clip", "Div", "ReduceMean", "Reshape"} & set(g.op_types)  # canonical: HardSwish, GAP, Flatten
    np.testing.assert_allclose(g.x[0, SHAPE_COLUMNS][6:9], [3 / 256, 1, 1])  # the 128x128 input
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("the second conversion should be served from the disk cache")
    monkeypatch.setattr(ofa_graphs, "build_subnet", no_export)
    start = time.perf_counter()
    cached = graph_from_arch(arch, tmp_path)
    assert time.perf_counter() - start < first / 10
    np.testing.assert_array_equal(cached.x, g.x)
    np.testing.assert_array_equal(cached.edges, g.edges)
    assert cached.op_types == g.op_types and cached.n_oov == g.n_oov


def test_torchvision_mobilenet_v3_small():
    model = torchvision.models.mobilenet_v3_small(weights=None).train()
    g = graph_from_torch(model, (1, 3, 224, 224))
    assert model.training  # mode restored
    assert g.n_oov == 0 and g.op_types.count("Conv") == 52
    src, dst = g.edges
    assert (src < dst).all()  # operators come in topological order
    assert set(dst.tolist()) == set(range(1, len(g.op_types)))  # every operator reads the data flow
    assert g.op_types[-1] == "output"
    np.testing.assert_allclose(g.x[-1, SHAPE_COLUMNS][:3], [1000 / 256, 0, 0])  # logits [1, 1000]


@pytest.mark.parametrize("config", [[["mbconv3_e6_k7", "mbconv3_e3_k3"]] * 5,
                                    [["mbconv2_e4_k5"] * 2] * 5 + [["mbconv2_e6_k3"]]])
def test_ofa_subnet_from_its_modules_is_the_whole_export(config):
    arch = make_arch(config, 160)
    net = build_subnet(arch)
    whole, chained = graph_from_torch(net, (1, 3, 160, 160)), ofa_graphs.subnet_graph(net, 160)
    assert chained.op_types == whole.op_types and chained.n_oov == 0
    np.testing.assert_array_equal(chained.edges, whole.edges)
    np.testing.assert_array_equal(chained.x, whole.x)


def test_attention_exports_without_its_fused_fast_path():
    """Without gradients torch runs multi-head attention as one fused operator that the exporter cannot write."""
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            return self.attention(x, x, x, need_weights=False)[0]
    g = graph_from_torch(Attention().eval(), (1, 5, 16))
    assert g.op_types.count("Softmax") == 1 and g.op_types.count("Gemm") == 2 and g.n_oov == 0

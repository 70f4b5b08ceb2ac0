"""The canonical form: every spelling of one computation converts to the same op graph, and other computations
keep theirs. Spellings are written as torch modules (as exporters see them) or as hand-built ONNX graphs."""
import base64
import io
import math
import struct
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from ofa.utils.pytorch_modules import Hsigmoid, Hswish, MyGlobalAvgPool2d
from torch import nn

from iterators.onnx_ir.canonical import canonicalize
from iterators.onnx_ir.features import encode
from iterators.onnx_ir.legacy import LegacyGraph, LegacyNode, legacy_op_graph
from iterators.onnx_ir.parsing import graph_from_onnx, graph_from_torch, op_graph_from_torch


class Fn(nn.Module):
    """A module whose forward is ``fn`` (a spelling of one computation)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _net(act: nn.Module, pool: nn.Module | None = None, flatten: nn.Module | None = None,
         linear: nn.Module | None = None) -> nn.Module:
    """Conv -> act -> pool -> flatten -> linear, each part replaceable by another spelling of it."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), act, pool or nn.AdaptiveAvgPool2d(1),
                         flatten if flatten is not None else nn.Flatten(), linear or nn.Linear(8, 4))


def _graph(net: nn.Module, opset: int = 17):
    return graph_from_torch(net, (1, 3, 16, 16), opset)


def _assert_same(a, b):
    assert a.op_types == b.op_types
    np.testing.assert_array_equal(a.edges, b.edges)
    np.testing.assert_allclose(a.x, b.x, atol=1e-6)


CHAIN = ["input", "Conv", "{}", "GlobalAveragePool", "Flatten", "Gemm", "output"]

H_SWISH = {
    "OFA Hswish (Add, Clip, Mul, Div)": Hswish(),
    "x * (relu6(x + 3) / 6)": Fn(lambda x: x * (F.relu6(x + 3.0) / 6.0)),
    "x * relu6(x + 3) * (1/6)": Fn(lambda x: x * F.relu6(x + 3.0) * (1 / 6)),
    "x * hardsigmoid(x)": Fn(lambda x: x * F.hardsigmoid(x)),
    "x * clamp(x + 3, 0, 6) / 6": Fn(lambda x: x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0),
}


@pytest.mark.parametrize("spelling", H_SWISH)
def test_every_h_swish_spelling_is_one_hard_swish(spelling):
    reference = _graph(_net(nn.Hardswish()))
    assert reference.op_types == [op.format("HardSwish") for op in CHAIN]
    _assert_same(_graph(_net(H_SWISH[spelling])), reference)


def test_h_swish_before_opset_14_is_hard_sigmoid_times_x():
    raw = op_graph_from_torch(_net(nn.Hardswish()), (1, 3, 16, 16), opset=13)
    assert [n.op_type for n in raw.nodes if n.op_type in ("HardSigmoid", "Mul", "HardSwish")] == ["HardSigmoid", "Mul"]
    _assert_same(encode(canonicalize(raw)), _graph(_net(nn.Hardswish())))


@pytest.mark.parametrize("spelling", ["OFA Hsigmoid", "relu6(x + 3) / 6", "relu6(x + 3) * (1/6)"])
def test_every_h_sigmoid_spelling_is_one_hard_sigmoid(spelling):
    act = {"OFA Hsigmoid": Hsigmoid(), "relu6(x + 3) / 6": Fn(lambda x: F.relu6(x + 3.0) / 6.0),
           "relu6(x + 3) * (1/6)": Fn(lambda x: F.relu6(x + 3.0) * (1 / 6))}[spelling]
    reference = _graph(_net(nn.Hardsigmoid()))
    assert reference.op_types == [op.format("HardSigmoid") for op in CHAIN]
    _assert_same(_graph(_net(act)), reference)


def test_a_gate_on_another_tensor_stays_a_mul():
    """Squeeze-and-excitation multiplies x by the h-sigmoid of something else: that is not an h-swish."""
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return x * F.relu6(self.conv(x) + 3.0) / 6.0  # x * relu6(y + 3) / 6 with y = conv(x)
    g = _graph(_net(Gate()))
    assert g.op_types == ["input", "Conv", "Conv", "Add", "Clip", "Mul", "Div", "GlobalAveragePool", "Flatten",
                          "Gemm", "output"]
    se = _graph(_net(Fn(lambda x: x * F.hardsigmoid(x.mean((2, 3), keepdim=True)))))
    assert se.op_types == ["input", "Conv", "GlobalAveragePool", "HardSigmoid", "Mul", "GlobalAveragePool",
                           "Flatten", "Gemm", "output"]


def test_relu6_of_x_plus_3_read_elsewhere_or_other_bounds_is_left_alone():
    shifted = _graph(_net(Fn(lambda x: (x + 3.0) + F.relu6(x + 3.0) / 6.0)))  # x + 3 has a second reader
    assert "HardSigmoid" not in shifted.op_types and shifted.op_types.count("Add") == 2
    clipped = _graph(_net(Fn(lambda x: torch.clamp(x + 3.0, 0.0, 5.0) / 6.0)))
    assert "HardSigmoid" not in clipped.op_types and "Clip" in clipped.op_types


def test_swish_and_gelu_spellings():
    swish = _graph(_net(nn.SiLU()))
    assert swish.op_types == [op.format("Swish") for op in CHAIN]
    _assert_same(_graph(_net(Fn(lambda x: x * torch.sigmoid(x)))), swish)
    gelu = _graph(_net(nn.GELU()))  # opset 17: Div, Erf, Add, Mul, Mul
    assert gelu.op_types == [op.format("Gelu") for op in CHAIN]
    _assert_same(_graph(_net(nn.GELU()), opset=20), gelu)  # the Gelu operator itself
    _assert_same(_graph(_net(Fn(lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))))), gelu)
    _assert_same(_graph(_net(Fn(lambda x: (1 + torch.erf(x * (1 / math.sqrt(2)))) * (x * 0.5)))), gelu)


POOLS = {
    "mean over (2, 3)": (Fn(lambda x: x.mean((2, 3), keepdim=True)), nn.Flatten()),
    "OFA MBv3: mean(3).mean(2), keepdim": (MyGlobalAvgPool2d(keep_dim=True), nn.Flatten()),
    "OFA PN: mean(3).mean(2), to a vector": (MyGlobalAvgPool2d(keep_dim=False), nn.Identity()),
    "avg_pool2d over the whole input": (Fn(lambda x: F.avg_pool2d(x, 16)), nn.Flatten()),
    "view(size(0), -1)": (nn.AdaptiveAvgPool2d(1), Fn(lambda x: x.view(x.size(0), -1))),
    "reshape(1, -1)": (nn.AdaptiveAvgPool2d(1), Fn(lambda x: x.reshape(1, -1))),
    "squeeze(3).squeeze(2)": (nn.AdaptiveAvgPool2d(1), Fn(lambda x: x.squeeze(3).squeeze(2))),
    "flatten then reshape": (nn.AdaptiveAvgPool2d(1), Fn(lambda x: x.flatten(1).reshape(1, 8))),
}


@pytest.mark.parametrize("spelling", POOLS)
def test_global_pooling_and_flatten_spellings(spelling):
    pool, flatten = POOLS[spelling]
    _assert_same(_graph(_net(nn.ReLU(), pool, flatten)), _graph(_net(nn.ReLU())))


def test_max_pooling_over_the_whole_input_is_global():
    g = _graph(_net(nn.ReLU(), Fn(lambda x: F.max_pool2d(x, 16))))
    _assert_same(g, _graph(_net(nn.ReLU(), nn.AdaptiveMaxPool2d(1))))
    assert "GlobalMaxPool" in g.op_types
    partial = _graph(_net(nn.ReLU(), Fn(lambda x: F.avg_pool2d(x, 8)), nn.Flatten(), nn.Linear(32, 4)))
    assert "AveragePool" in partial.op_types  # a 2x2 output is not a global pool


class MatMulAdd(nn.Module):
    """A linear layer written as x @ W (+ b)."""

    def __init__(self, bias: bool):
        super().__init__()
        linear = nn.Linear(8, 4, bias=bias)
        self.weight = nn.Parameter(linear.weight.detach().t().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


@pytest.mark.parametrize("bias", [True, False])
def test_matmul_and_add_is_gemm(bias):
    reference = _graph(_net(nn.ReLU(), linear=nn.Linear(8, 4, bias=bias)))
    assert reference.op_types[-2] == "Gemm"
    raw = op_graph_from_torch(_net(nn.ReLU(), linear=MatMulAdd(bias)), (1, 3, 16, 16))
    assert "MatMul" in [n.op_type for n in raw.nodes]
    _assert_same(_graph(_net(nn.ReLU(), linear=MatMulAdd(bias))), reference)


def test_linear_on_tokens_is_gemm_too():
    """A transformer's linear layer (MatMul with a constant weight on a rank-3 input, then Add) reads as Gemm."""
    g = graph_from_torch(nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)), (1, 5, 8))
    assert g.op_types == ["input", "Gemm", "Gelu", "Gemm", "output"]


def test_batch_norm_folded_or_not():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), buffer, dynamo=False, opset_version=17,
                          do_constant_folding=False)
    unfolded = onnx.load_from_string(buffer.getvalue())
    assert "BatchNormalization" in [n.op_type for n in unfolded.graph.node]
    folded = graph_from_torch(net, (1, 3, 16, 16))
    assert folded.op_types == ["input", "Conv", "Relu", "output"] and folded.x[1, -1] == 1  # the Conv has a bias
    _assert_same(graph_from_onnx(unfolded), folded)


def _tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_identity_and_dropout_are_removed():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, dtype=np.float32))

    def model(middle):
        nodes = [helper.make_node("Conv", ["x", "w"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), *middle,
                 helper.make_node("Relu", [f"c{len(middle)}"], ["y"])]
        graph = helper.make_graph(nodes, "g", [_tensor("x", [1, 3, 8, 8])], [_tensor("y", [1, 4, 8, 8])], [weight])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    plain = graph_from_onnx(model([]))
    noisy = graph_from_onnx(model([helper.make_node("Identity", ["c0"], ["c1"]),
                                   helper.make_node("Dropout", ["c1"], ["c2"])]))
    assert plain.op_types == ["input", "Conv", "Relu", "output"]
    _assert_same(noisy, plain)


def test_canonical_form_is_idempotent():
    from evaluation.ofa_manager import build_subnet
    from iterators.search_space import make_arch
    net = build_subnet(make_arch([["mbconv3_e4_k5"] * 2] * 5, 128))
    graph = canonicalize(op_graph_from_torch(net, (1, 3, 128, 128)))
    once = [n.op_type for n in graph.nodes]
    assert [n.op_type for n in canonicalize(graph).nodes] == once
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Flatten"} <= set(once)
    assert not {"Clip", "Div", "ReduceMean", "Reshape"} & set(once)


def _value(name, shape):
    return {"name": name, "type": {"tensorType": {"elemType": 1, "shape": {"dim": [
        {"dimValue": str(d)} for d in shape]}}}}


def _legacy_constant(str_id, name, value):
    node = LegacyNode()
    raw = base64.b64encode(struct.pack("<f", value)).decode()
    node.__dict__.update(str_id=str_id, name=f"Constant_{str_id}", op_type="Constant", inputs=[],
                         outputs=[_value(name, [])], initializer=None,
                         attribute=[{"name": "value", "type": "TENSOR", "t": {"dataType": 1, "rawData": raw}}])
    return node


def test_legacy_graphs_get_the_canonical_form_too():
    """OFA's h-swish as the original code's pickles hold it (scalars as Constant nodes) reads as HardSwish."""
    shape = [1, 4, 8, 8]

    def node(str_id, op_type, inputs, output):
        n = LegacyNode()
        n.__dict__.update(str_id=str_id, name=op_type.lower(), op_type=op_type, inputs=[_value(i, shape if i in
                          ("x", "a", "m", "r") else []) for i in inputs], outputs=[_value(output, shape)],
                          attribute=[], initializer=None)
        return n
    nodes = [_legacy_constant("c3", "three", 3.0), node("n1", "Add", ["x", "three"], "a"),
             _legacy_constant("c0", "zero", 0.0), _legacy_constant("c6", "six", 6.0),
             node("n2", "Clip", ["a", "zero", "six"], "r"), node("n3", "Mul", ["x", "r"], "m"),
             node("n4", "Div", ["m", "six"], "y")]
    graph = LegacyGraph()
    graph.__dict__.update(onnx_meta_info={}, metadata={}, nodes=nodes, src2dst={}, input_nodes=["n1"],
                          output_nodes=["n4"])
    encoded = encode(canonicalize(legacy_op_graph(graph)))
    assert encoded.op_types == ["input", "HardSwish", "output"]
    assert encoded.edges.tolist() == [[0, 1], [1, 2]]

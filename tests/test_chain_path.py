"""The scatter-free chain path against torch_geometric's layers, the folded FE-MLP against its definition, and the
imports the chain path must do without."""
import random
import subprocess
import sys

import pytest
import torch
import torch_geometric.nn as pyg

from conftest import REPO
from iterators.encoding import encode_archs
from iterators.graphs import GraphSet
from iterators.search_space import random_arch
from models.encoder import GNN_TYPES, make_conv
from models.fe_mlp import SequenceFEMLP
from models.loss import RankingLoss, soft_spearman
from models.predictor import POOLS, build_predictor, pool, unit_moment_shape


def _pyg_layer(gnn_type: str, in_dim: int, out_dim: int) -> torch.nn.Module:
    if gnn_type == "GINConv":
        mlp = torch.nn.Sequential(torch.nn.Linear(in_dim, out_dim), torch.nn.ReLU(), torch.nn.Linear(out_dim, out_dim))
        return pyg.GINConv(mlp)
    return getattr(pyg, gnn_type)(in_dim, out_dim)


@pytest.fixture(scope="module")
def chains():
    rng = random.Random(3)
    archs = [random_arch(f, rng, resolutions=(160, 224)) for f in ("ofa_mbv3", "ofa_pn") for _ in range(20)]
    return encode_archs(archs).batch(torch.randperm(40, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("gnn_type", GNN_TYPES)
def test_chain_layer_equals_the_torch_geometric_layer(gnn_type, chains):
    torch.manual_seed(0)
    reference = _pyg_layer(gnn_type, 7, 5)
    layer = make_conv(gnn_type, 7, 5)
    assert list(layer.state_dict()) == list(reference.state_dict())  # checkpoints load into either
    layer.load_state_dict(reference.state_dict())
    with torch.no_grad():
        for p in reference.parameters():  # biases away from their zero initialisation
            p.add_(0.1 * torch.randn_like(p))
        layer.load_state_dict(reference.state_dict())
    x = torch.randn(chains.x.shape[0], 7, requires_grad=True)
    expected = reference(x, chains.edge_index)
    torch.testing.assert_close(layer(x, chains), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer(x, chains, chain_path=False), expected, rtol=1e-5, atol=1e-6)
    # gradients reach the layer's own parameters on both paths, and agree
    weights = torch.randn_like(expected)
    grads = []
    for chain_path in (True, False):
        layer.zero_grad()
        (layer(x, chains, chain_path) * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-5 * grad.abs().max().item() + 1e-7)


@pytest.mark.parametrize("gnn_type", GNN_TYPES)
@pytest.mark.parametrize("aggr", POOLS)
def test_predictor_chain_and_general_paths_agree(gnn_type, aggr, chains):
    """Predictions, hop embeddings and the gradients of the ranking loss of a whole predictor, in training mode."""
    torch.manual_seed(1)
    model = build_predictor({"family": "ofa_mbv3", "gnn_type": gnn_type, "gnn_dim": 16, "num_layers": 4,
                             "aggr_method": aggr})
    target = torch.randn(chains.num_graphs)
    runs = []
    for chain_path in (True, False):
        model.chain_path = chain_path
        model.zero_grad()
        pred, embeds = model(chains)
        RankingLoss()(pred, target, embeds).backward()
        runs.append((pred.detach(), [e.detach() for e in embeds],
                     {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (pred_a, embeds_a, grads_a), (pred_b, embeds_b, grads_b) = runs
    torch.testing.assert_close(pred_a, pred_b, rtol=1e-5, atol=1e-5)
    for a, b in zip(embeds_a, embeds_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(model.parameters()))
    scale = max(g.abs().max().item() for g in grads_a.values())
    for name, grad in grads_a.items():
        torch.testing.assert_close(grad, grads_b[name], rtol=1e-3, atol=1e-5 * scale, msg=name)
    model.eval()
    model.chain_path = True
    fast = model.predict(chains)
    model.chain_path = False
    torch.testing.assert_close(fast, model.predict(chains), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aggr", POOLS)
def test_pooling_matches_torch_geometric(aggr, chains):
    h = torch.randn(chains.x.shape[0], 4)
    expected = {"mean": pyg.global_mean_pool, "sum": pyg.global_add_pool, "max": pyg.global_max_pool}[aggr]
    torch.testing.assert_close(pool(h, chains, aggr), expected(h, chains.batch, chains.num_graphs))


def test_folded_fe_mlp_is_the_embedding_then_the_linear_map(chains):
    torch.manual_seed(2)
    fe = SequenceFEMLP("ofa_mbv3")
    x = chains.x
    columns = []
    for i, cat in enumerate(fe.categories.values()):  # the definition: embed every node, then map it to a scalar
        columns.append(cat.lin(cat.embed(x[:, i].long())))
    columns.append(fe.resolution(x[:, 5:6]))
    expected = torch.cat(columns, dim=1).abs()
    torch.testing.assert_close(fe(x), expected)
    # gradients reach the embeddings and linear maps themselves
    (fe(x) * torch.arange(1.0, 7.0)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fe.parameters())


def test_one_soft_rank_call_for_all_hops_equals_one_per_hop():
    gen = torch.Generator().manual_seed(0)
    target, norms = torch.randn(32, generator=gen), torch.randn(5, 32, generator=gen)
    batched = soft_spearman(target, norms)
    assert batched.shape == (5,)
    torch.testing.assert_close(batched, torch.stack([soft_spearman(target, n) for n in norms]))


def test_unit_moment_shapes_follow_the_families():
    # MBv3: 5 units of up to 4 blocks; PN: unit 5 spans stages 5 (up to 4 blocks) and 6 (1 block)
    assert unit_moment_shape("ofa_mbv3") == (5, 4) and unit_moment_shape("ofa_pn") == (5, 5)
    assert unit_moment_shape(None) == (0, 0)


def test_readout_lists_seen_values_and_names_the_rest(chains):
    fe = SequenceFEMLP("ofa_mbv3")
    mbv3 = chains.x[chains.x[:, 2] == 1]  # the MBv3 networks' blocks only, at resolutions 160 and 224
    fe.observe(mbv3)
    readout, unseen = fe.readout(), fe.unseen()
    assert list(readout["stage"]) == ["S1", "S2", "S3", "S4", "S5"] and list(readout["block_type"]) == ["mbconv3"]
    assert list(readout["resolution"]) == ["r160", "r224"]
    assert unseen == {"stage": ["S6"], "block_type": ["mbconv2"], "resolution": ["r128", "r192", "r208"]}
    # a checkpoint saved before the buffer existed: every value its family can take counts as seen
    state = {k: v for k, v in fe.state_dict().items() if k != "value_seen"}
    old = SequenceFEMLP("ofa_mbv3")
    old.load_state_dict(state)
    assert old.unseen() == {"stage": ["S6"], "block_type": ["mbconv2"]}
    assert list(old.readout()["layer"]) == ["L1", "L2", "L3", "L4"] and len(old.readout()["resolution"]) == 5


CHAIN_PATH_ONLY = """
import random, sys, torch
from iterators.encoding import encode_archs
from iterators.graphs import GraphSet
from iterators.search_space import random_arch
from models.loss import RankingLoss
from models.predictor import build_predictor, predict_archs
model = build_predictor({"family": "ofa_pn", "gnn_type": sys.argv[1], "gnn_dim": 8, "num_layers": 4,
                         "aggr_method": "mean"})
graphs = encode_archs([random_arch("ofa_pn", random.Random(i)) for i in range(16)])
pred, embeds = model(graphs.batch())
RankingLoss()(pred, torch.randn(16), embeds).backward()
predict_archs(model, [random_arch("ofa_pn", random.Random(0))])
print(sorted(m for m in ("torch_geometric", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize("gnn_type", ["GATv2Conv", "GraphConv"])
def test_the_chain_path_imports_neither_torch_geometric_nor_matplotlib(gnn_type):
    out = subprocess.run([sys.executable, "-c", CHAIN_PATH_ONLY, gnn_type], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("n_blocks, hop", [(2, 1), (4, 3), (3, 1), (3, 4), (5, 2)])
def test_sink_embeddings_compute_only_what_the_last_node_needs(n_blocks, hop):
    torch.manual_seed(4)
    model = build_predictor({"family": "ofa_mbv3", "gnn_type": "GATv2Conv", "gnn_dim": 8, "num_layers": 4,
                             "aggr_method": "mean"}).eval()
    for norm in model.encoder.norms:  # running statistics away from the identity
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    x = torch.stack([torch.randint(0, 3, (30, n_blocks)).float() for _ in range(5)] +
                    [torch.rand(30, n_blocks)], dim=-1)  # [units, blocks, 6]
    full = GraphSet.sequences(x.reshape(-1, 6), torch.full((30,), n_blocks)).batch()
    expected = model.node_embeddings(full, max_hop=hop)[-1][full.last_node]
    torch.testing.assert_close(model.sink_embeddings(x, hop), expected)


def _dag_batch() -> "GraphBatch":
    """Three small DAGs with chain edges, skip edges (one into a node without its chain edge), a node of in-degree 3
    and an isolated first node, batched out of order."""
    xs = [torch.randn(n, 7).numpy() for n in (6, 4, 5)]
    edges = [torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2], [1, 2, 3, 4, 5, 2, 5, 5]]),   # node 5: in-edges from 4, 1, 2
             torch.tensor([[0, 2, 0], [1, 3, 3]]),                                 # node 2: no in-edge
             torch.tensor([[1, 2, 3, 0], [2, 3, 4, 4]])]                           # node 1: no i-1 -> i edge
    return GraphSet.from_lists(xs, [e.numpy() for e in edges]).batch([2, 0, 1])


def test_op_graph_edges_split_into_chain_and_extra_edges():
    batch = _dag_batch()
    assert not batch.chain and not batch.has_self_loops
    # rows: graph 2 (0-4), graph 0 (5-10), graph 1 (11-14)
    assert batch.prev_mask.flatten().tolist() == [0, 0, 1, 1, 1] + [0, 1, 1, 1, 1, 1] + [0, 1, 0, 1]
    assert batch.extra_edges.tolist() == [[0, 5, 6, 7, 11], [4, 7, 10, 10, 14]]


@pytest.mark.parametrize("gnn_type", GNN_TYPES)
def test_chain_path_with_extra_edges_equals_the_torch_geometric_layer(gnn_type):
    torch.manual_seed(5)
    batch = _dag_batch()
    reference = _pyg_layer(gnn_type, 7, 5)
    layer = make_conv(gnn_type, 7, 5)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.1 * torch.randn_like(p))
    layer.load_state_dict(reference.state_dict())
    x = batch.x.clone().requires_grad_()
    expected = reference(x, batch.edge_index)
    torch.testing.assert_close(layer(x, batch), expected, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(expected)
    grads = []
    for chain_path in (True, False):
        layer.zero_grad()
        x.grad = None
        (layer(x, batch, chain_path) * weights).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item() + 1e-7)

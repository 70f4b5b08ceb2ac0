"""The message-passing encoder: every hop level's node embeddings, from the FE-MLP output (hop 0) to hop L.

Every layer holds the parameters of the torch_geometric layer it is named after, under the same names, so state dicts
(this toolkit's and the published AutoBuild ones) load into either. Two ways to run it:

- chain path: in a sequence graph node i's only in-neighbour is node i-1, the row before it in the batch. With the
  self-loops the layers add, node i aggregates over {i, i-1}: a shift of the rows, a mask at each graph's first node
  and dense maths, with no gather, scatter or softmax over edges. torch_geometric is not even imported. An op graph
  (onnx_ir) is mostly such chain edges plus a few skip connections (``GraphBatch.extra_edges``): those alone are
  gathered and scattered.
- general path: the torch_geometric layer itself, run on these parameters (``torch.func.functional_call``), for
  graphs with self-loop edges and as the reference. Both paths give the same outputs (tests/test_chain_path.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iterators.graphs import GraphBatch

ACTIVATIONS = {"ReLU": nn.ReLU, "LeakyReLU": nn.LeakyReLU, "ELU": nn.ELU, "GELU": nn.GELU, "Tanh": nn.Tanh,
               "SiLU": nn.SiLU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def shift(h: torch.Tensor, prev_mask: torch.Tensor) -> torch.Tensor:
    """[N, d] -> [N, d]: row i holds h[i-1] where the edge i-1 -> i exists (``prev_mask`` [N, 1]), else zeros."""
    return F.pad(h[:-1], (0, 0, 1, 0)) * prev_mask


def in_sum(h: torch.Tensor, prev_mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """[N, d] -> [N, d]: the sum of every node's in-neighbours' rows."""
    out = shift(h, prev_mask)
    return out.index_add(0, extra[1], h.index_select(0, extra[0])) if extra.shape[1] else out


def in_degree(prev_mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """[N, 1] number of in-edges of every node."""
    if not extra.shape[1]:
        return prev_mask
    return prev_mask + torch.bincount(extra[1], minlength=prev_mask.shape[0]).unsqueeze(1).to(prev_mask)


def _glorot_(weight: torch.Tensor) -> None:
    bound = math.sqrt(6.0 / (weight.shape[-2] + weight.shape[-1]))
    nn.init.uniform_(weight, -bound, bound)


_PYG_LAYERS: dict[tuple, nn.Module] = {}


class ChainConv(nn.Module):
    """A message-passing layer with a scatter-free path for chains and torch_geometric's layer for other graphs."""

    pyg_name = ""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor, batch: GraphBatch, chain_path: bool = True) -> torch.Tensor:
        if chain_path and not batch.has_self_loops:
            return self.chain_forward(x, batch.prev_mask, batch.extra_edges)
        return self.general_forward(x, batch.edge_index)

    def chain_forward(self, x: torch.Tensor, prev_mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """x [N, in] -> [N, out]; prev_mask [N, 1] marks the edges i-1 -> i, extra [2, X] lists the other edges."""
        raise NotImplementedError

    def self_prev_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(W_self, W_prev, b) when on a chain the layer is W_self h_i + W_prev h_{i-1} + b, else None."""
        return None

    def _pyg_layer(self) -> nn.Module:
        import torch_geometric.nn as pyg  # only the general path needs it
        return getattr(pyg, self.pyg_name)(self.in_dim, self.out_dim)

    def general_forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """torch_geometric's layer with this layer's parameters: one template per shape, its own weights unused."""
        key = (type(self), self.in_dim, self.out_dim)
        if key not in _PYG_LAYERS:
            with torch.random.fork_rng(devices=[]):  # its own initialisation must not move the training's RNG
                _PYG_LAYERS[key] = self._pyg_layer()
        tensors = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        return torch.func.functional_call(_PYG_LAYERS[key], tensors, (x, edge_index))


class GATv2Layer(ChainConv):
    r"""GATv2Conv (one head, self-loops, negative slope 0.2). For an edge j -> i and the self-loop i -> i:

        e_ij = a^T LeakyReLU(W_l h_j + b_l + W_r h_i + b_r),   \alpha_ij = softmax_j(e_ij),
        out_i = \sum_j \alpha_ij (W_l h_j + b_l) + b

    On a chain the softmax runs over {i, i-1} only: \alpha_{i,i-1} = sigmoid(e_{i,i-1} - e_ii) (0 at a first node),
    and W_l, W_r are applied as one [N, in] x [in, 2 out] matmul. Extra edges add their terms to the softmax's sums
    by scatter. Shapes: x [N, in] -> [N, out].
    """

    pyg_name = "GATv2Conv"

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim)
        self.lin_l, self.lin_r = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim)
        self.att = nn.Parameter(torch.empty(1, 1, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        for lin in (self.lin_l, self.lin_r):
            _glorot_(lin.weight)
        _glorot_(self.att)

    def chain_forward(self, x: torch.Tensor, prev_mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([self.lin_l.weight, self.lin_r.weight])
        bias = torch.cat([self.lin_l.bias, self.lin_r.bias])
        src, dst = F.linear(x, weight, bias).split(self.out_dim, dim=1)  # W_l h + b_l, W_r h + b_r
        # row i: src[i-1]; at a graph's first node that is another graph's row (or 0), given weight 0 below
        src_prev = F.pad(src[:-1], (0, 0, 1, 0))
        att = self.att.view(-1, 1)
        e_self = F.leaky_relu(src + dst, 0.2) @ att
        e_prev = F.leaky_relu(src_prev + dst, 0.2) @ att
        alpha_prev = torch.sigmoid(e_prev - e_self) * prev_mask
        out = torch.lerp(src, src_prev, alpha_prev)  # the softmax over {i, i-1}
        if extra.shape[1]:  # nodes with more in-edges: the softmax over all of them, on those rows only
            out = out.index_copy(0, *self._extra_softmax(src, dst, src_prev, e_self, e_prev, prev_mask, extra))
        return out + self.bias

    def _extra_softmax(self, src, dst, src_prev, e_self, e_prev, prev_mask, extra):
        """(rows, outputs) of the nodes that extra edges point to: softmax-weighted sums over all their in-edges."""
        s, t = extra
        rows, slot = torch.unique(t, return_inverse=True)
        src_extra = src.index_select(0, s)
        e_extra = F.leaky_relu(src_extra + dst.index_select(0, t), 0.2) @ self.att.view(-1, 1)
        e_self, src_rows = e_self.index_select(0, rows), src.index_select(0, rows)
        e_prev = e_prev.index_select(0, rows).masked_fill(prev_mask.index_select(0, rows) == 0, float("-inf"))
        with torch.no_grad():  # each node's largest score, subtracted for a stable softmax (its gradient cancels)
            top = torch.maximum(e_self, e_prev).squeeze(1).scatter_reduce(0, slot, e_extra.squeeze(1), "amax")
            top = top.unsqueeze(1)
        w_self, w_prev = torch.exp(e_self - top), torch.exp(e_prev - top)
        w_extra = torch.exp(e_extra - top.index_select(0, slot))
        denom = (w_self + w_prev).index_add(0, slot, w_extra)
        num = (w_self * src_rows + w_prev * src_prev.index_select(0, rows)).index_add(0, slot, w_extra * src_extra)
        return rows, num / denom


class GraphConvLayer(ChainConv):
    r"""GraphConv with sum aggregation: out_i = W_root h_i + W_rel \sum_{j -> i} h_j + b.

    On a chain the sum is h_{i-1} (0 at a first node): a shifted copy of the rows. Shapes: x [N, in] -> [N, out].
    """

    pyg_name = "GraphConv"

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim)
        self.lin_rel, self.lin_root = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim, bias=False)

    def chain_forward(self, x: torch.Tensor, prev_mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        # the order of torch_geometric's sums, so that published checkpoints give the original's numbers to 1e-6
        return self.lin_rel(in_sum(x, prev_mask, extra)) + self.lin_root(x)

    def self_prev_weights(self):
        return self.lin_root.weight, self.lin_rel.weight, self.lin_rel.bias


class SAGELayer(ChainConv):
    r"""SAGEConv with mean aggregation: out_i = W_r h_i + W_l mean_{j -> i} h_j + b_l (an empty mean is 0).

    On a chain the mean is h_{i-1}, as in GraphConv. Shapes: x [N, in] -> [N, out].
    """

    pyg_name = "SAGEConv"

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim)
        self.lin_l, self.lin_r = nn.Linear(in_dim, out_dim), nn.Linear(in_dim, out_dim, bias=False)

    def chain_forward(self, x: torch.Tensor, prev_mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        mean = in_sum(x, prev_mask, extra)
        if extra.shape[1]:  # on a chain the sum is the mean already (or 0: no in-neighbour)
            mean = mean / in_degree(prev_mask, extra).clamp_min(1)
        return self.lin_l(mean) + self.lin_r(x)

    def self_prev_weights(self):
        return self.lin_r.weight, self.lin_l.weight, self.lin_l.bias


class GCNLayer(ChainConv):
    r"""GCNConv: out_i = \sum_{j \in N(i) \cup \{i\}} (d_i d_j)^{-1/2} W h_j + b, d_i = in-degree + 1.

    On a chain d_i = 2 except at a first node (1): out_i = W (h_i / d_i + h_{i-1} / \sqrt{d_i d_{i-1}}) + b.
    Shapes: x [N, in] -> [N, out].
    """

    pyg_name = "GCNConv"

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim)
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        _glorot_(self.lin.weight)

    def chain_forward(self, x: torch.Tensor, prev_mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        deg = 1 + in_degree(prev_mask, extra)
        inv_sqrt = deg.rsqrt()
        mixed = x / deg + F.pad(x[:-1], (0, 0, 1, 0)) * (prev_mask * inv_sqrt * F.pad(inv_sqrt[:-1], (0, 0, 1, 0)))
        if extra.shape[1]:
            s, t = extra
            norm = inv_sqrt.index_select(0, s) * inv_sqrt.index_select(0, t)
            mixed = mixed.index_add(0, t, x.index_select(0, s) * norm)
        return F.linear(mixed, self.lin.weight, self.bias)


class GINLayer(ChainConv):
    r"""GINConv (eps = 0, fixed): out_i = MLP((1 + eps) h_i + \sum_{j -> i} h_j), MLP = Linear, ReLU, Linear.

    Shapes: x [N, in] -> [N, out].
    """

    pyg_name = "GINConv"

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim)
        self.nn = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))
        self.register_buffer("eps", torch.zeros(1))

    def chain_forward(self, x: torch.Tensor, prev_mask: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return self.nn((1 + self.eps) * x + in_sum(x, prev_mask, extra))

    def _pyg_layer(self) -> nn.Module:
        import torch_geometric.nn as pyg
        return pyg.GINConv(nn.Sequential(nn.Linear(self.in_dim, self.out_dim), nn.ReLU(),
                                         nn.Linear(self.out_dim, self.out_dim)))


CONVS = {cls.pyg_name: cls for cls in (GATv2Layer, GraphConvLayer, GCNLayer, GINLayer, SAGELayer)}
GNN_TYPES = tuple(CONVS)


def make_conv(gnn_type: str, in_dim: int, out_dim: int) -> ChainConv:
    """One message-passing layer by its torch_geometric name."""
    if gnn_type not in CONVS:
        raise ValueError(f"unknown gnn_type {gnn_type!r}; choose one of {', '.join(GNN_TYPES)}")
    return CONVS[gnn_type](in_dim, out_dim)


def _chain_layer_inference(h: torch.Tensor, batch: GraphBatch, w_self: torch.Tensor, w_prev: torch.Tensor,
                           bias: torch.Tensor) -> torch.Tensor:
    """W_self h_i + W_prev h_{i-1} + b on chains, for inference: h_{i-1} is read as the row above, with no shifted
    copy, and both matmuls accumulate into one buffer. The sums keep torch_geometric's order, (W_prev h_{i-1} + b) +
    W_self h_i, so published checkpoints still give the original's numbers; at a first node W_prev h_{i-1} is 0."""
    out = torch.empty(h.shape[0], w_self.shape[0])
    torch.addmm(bias, h[:-1], w_prev.t(), out=out[1:])
    out[batch.ptr[:-1]] = bias
    return out.addmm_(h, w_self.t())


def _activate_(activation: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """activation(h), in place where the activation allows it (inference only)."""
    if type(activation) is nn.ReLU:
        return F.relu_(h)
    if type(activation) is nn.LeakyReLU:
        return F.leaky_relu_(h, activation.negative_slope)
    return activation(h)


class HopEncoder(nn.Module):
    r"""L message-passing layers, each followed by batch norm and an activation, with residuals after the first:

        h^{l+1} = act(BN(conv_l(h^l, E))) + [l > 0] h^l

    Input x: [N, in_dim] (hop 0); returns [h^0, h^1, ..., h^L] with h^l: [N, dim] for l >= 1. ``chain_path`` False
    sends chains through torch_geometric too (the reference the chain path is tested and benchmarked against).
    """

    def __init__(self, in_dim: int, dim: int, num_layers: int, gnn_type: str = "GATv2Conv",
                 activation: str = "ReLU", residual: bool = True):
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be at least 1")
        self.convs = nn.ModuleList(make_conv(gnn_type, in_dim if i == 0 else dim, dim) for i in range(num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(num_layers))
        self.activation = make_activation(activation)
        self.residual = residual
        self.chain_path = True

    def layer(self, i: int, h: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """Hop i -> hop i + 1 (layer i, 0-based)."""
        weights = self.convs[i].self_prev_weights()
        if weights is not None and batch.chain and self.chain_path and not self.training \
                and not torch.is_grad_enabled():
            out = self.norms[i](_chain_layer_inference(h, batch, *weights))
            out = _activate_(self.activation, out)
            return out.add_(h) if self.residual and i > 0 else out
        out = self.activation(self.norms[i](self.convs[i](h, batch, self.chain_path)))
        return out + h if self.residual and i > 0 else out

    def forward(self, x: torch.Tensor, batch: GraphBatch, max_hop: int | None = None) -> list[torch.Tensor]:
        """``max_hop`` stops early: only [h^0, ..., h^max_hop] are computed."""
        hops = [x]
        for i in range(len(self.convs) if max_hop is None else min(max_hop, len(self.convs))):
            hops.append(self.layer(i, hops[-1], batch))
        return hops

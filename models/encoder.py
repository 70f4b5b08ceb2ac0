"""The message-passing encoder: every hop level's node embeddings, from the FE-MLP output (hop 0) to hop L."""
from __future__ import annotations

import torch
import torch_geometric.nn as pyg
from torch import nn

ACTIVATIONS = {"ReLU": nn.ReLU, "LeakyReLU": nn.LeakyReLU, "ELU": nn.ELU, "GELU": nn.GELU, "Tanh": nn.Tanh,
               "SiLU": nn.SiLU}


def make_conv(gnn_type: str, in_dim: int, out_dim: int) -> nn.Module:
    """One torch_geometric message-passing layer by name."""
    if gnn_type == "GATv2Conv":
        return pyg.GATv2Conv(in_dim, out_dim)
    if gnn_type == "GraphConv":
        return pyg.GraphConv(in_dim, out_dim)
    if gnn_type == "GCNConv":
        return pyg.GCNConv(in_dim, out_dim)
    if gnn_type == "SAGEConv":
        return pyg.SAGEConv(in_dim, out_dim)
    if gnn_type == "GINConv":
        return pyg.GINConv(nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim)))
    raise ValueError(f"unknown gnn_type {gnn_type!r}; choose one of {', '.join(GNN_TYPES)}")


GNN_TYPES = ("GATv2Conv", "GraphConv", "GCNConv", "GINConv", "SAGEConv")


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class HopEncoder(nn.Module):
    r"""L message-passing layers, each followed by batch norm and an activation, with residuals after the first:

        h^{l+1} = act(BN(conv_l(h^l, E))) + [l > 0] h^l

    Input x: [N, in_dim] (hop 0); returns [h^0, h^1, ..., h^L] with h^l: [N, dim] for l >= 1.
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

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, max_hop: int | None = None) -> list[torch.Tensor]:
        """``max_hop`` stops early: only [h^0, ..., h^max_hop] are computed."""
        hops = [x]
        layers = list(zip(self.convs, self.norms))[:max_hop]
        for i, (conv, norm) in enumerate(layers):
            h = self.activation(norm(conv(hops[-1], edge_index)))
            if self.residual and i > 0:
                h = h + hops[-1]
            hops.append(h)
        return hops

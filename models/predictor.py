"""The AutoBuild predictor: FE-MLP -> hop encoder -> per-hop graph pooling -> MLP head -> standardised target.

Buffers make a checkpoint self-contained: the target's training moments (to report predictions in the target's
units), every hop's node-embedding norm moments and the per-(stage, depth) target moments (to score units), and the
test metrics of the run that trained it.
"""
from __future__ import annotations

import torch
from torch import nn

from iterators.encoding import encode_archs
from iterators.graphs import GraphBatch, GraphSet
from iterators.search_space import Arch
from iterators.units import unit_moment_shape
from models.encoder import HopEncoder, make_activation
from models.fe_mlp import OpGraphFEMLP, SequenceFEMLP

POOLS = ("mean", "sum", "max")
TEST_METRICS = ("MAE", "MAPE", "Spearman", "KendallTau")


class _GraphSum(torch.autograd.Function):
    """[N, d] node rows -> [B, d] sums per graph; the backward gathers from a contiguous gradient (a strided one made
    index_select 10x slower)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, graph_of_node: torch.Tensor, num_graphs: int) -> torch.Tensor:
        ctx.save_for_backward(graph_of_node)
        return h.new_zeros(num_graphs, h.shape[1]).index_add_(0, graph_of_node, h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (graph_of_node,) = ctx.saved_tensors
        return grad.contiguous().index_select(0, graph_of_node), None, None


def pool(h: torch.Tensor, batch: GraphBatch, method: str) -> torch.Tensor:
    """Graph read-out: [N, d] node rows -> [B, d] per-graph sum, mean or max (graphs are contiguous row ranges)."""
    if method == "max":
        return torch.segment_reduce(h, "max", lengths=batch.num_nodes, axis=0)
    summed = _GraphSum.apply(h, batch.batch, batch.num_graphs)
    return summed / batch.num_nodes.unsqueeze(1) if method == "mean" else summed


class Predictor(nn.Module):
    def __init__(self, fe_mlp: nn.Module, gnn_dim: int = 32, num_layers: int = 4, gnn_type: str = "GATv2Conv",
                 aggr_method: str = "mean", gnn_activ: str = "ReLU", reg_activ: str = "ReLU",
                 unit_moment_shape: tuple[int, int] = (0, 0)):
        super().__init__()
        if aggr_method not in POOLS:
            raise ValueError(f"unknown aggr_method {aggr_method!r}; choose one of {', '.join(POOLS)}")
        self.fe_mlp = fe_mlp
        self.encoder = HopEncoder(fe_mlp.out_dim, gnn_dim, num_layers, gnn_type, gnn_activ)
        self.aggr_method = aggr_method
        self.head = nn.Sequential(nn.Linear(gnn_dim, gnn_dim), nn.Linear(gnn_dim, gnn_dim), nn.ReLU(),
                                  nn.Linear(gnn_dim, gnn_dim), nn.Linear(gnn_dim, gnn_dim))
        self.head_activation = make_activation(reg_activ)
        self.regressor = nn.Linear(gnn_dim, 1)
        n_hops = num_layers + 1
        self.register_buffer("target_moments", torch.tensor([0.0, 1.0]))
        self.register_buffer("hop_moments", torch.stack([torch.zeros(n_hops), torch.ones(n_hops)]))
        self.register_buffer("unit_moments", torch.stack([torch.zeros(unit_moment_shape),
                                                          torch.ones(unit_moment_shape)], dim=-1))
        self.register_buffer("test_metrics", torch.full((len(TEST_METRICS),), float("nan")))

    @property
    def num_hops(self) -> int:
        return len(self.encoder.convs) + 1

    @property
    def chain_path(self) -> bool:
        """Whether chains (sequence graphs) take the scatter-free path; False runs torch_geometric's layers."""
        return self.encoder.chain_path

    @chain_path.setter
    def chain_path(self, value: bool) -> None:
        self.encoder.chain_path = value

    def node_embeddings(self, batch: GraphBatch, max_hop: int | None = None) -> list[torch.Tensor]:
        """[h^0, ..., h^L] (or up to h^max_hop), each [N, d]."""
        return self.encoder(self.fe_mlp(batch.x), batch, max_hop)

    @torch.no_grad()
    def sink_embeddings(self, x: torch.Tensor, hop: int) -> torch.Tensor:
        """x [U, n, F]: U chains of n nodes -> [U, d], the hop-``hop`` embedding of every chain's last node (eval mode).

        The sink at hop h depends on the hop-l nodes at positions >= n - 1 - (h - l) only, so layer l runs on that
        tail of every chain: for units of n = h + 1 blocks this halves the work of ``node_embeddings``.
        """
        if self.training:
            raise RuntimeError("sink_embeddings needs eval mode: batch statistics would depend on the trimmed chains")
        n_chains, n, _ = x.shape
        h = self.fe_mlp(x.reshape(n_chains * n, -1)).view(n_chains, n, -1)
        for layer in range(min(hop, len(self.encoder.convs))):
            keep = n - max(0, n - 1 - (hop - layer))  # positions this layer's input must cover, counted from the end
            flat = h[:, -keep:].reshape(n_chains * keep, -1)
            chains = GraphBatch(flat, torch.arange(0, n_chains * keep + 1, keep), chain=True)
            h = self.encoder.layer(layer, flat, chains).view(n_chains, keep, -1)  # where keep < n, the first row lacks its predecessor: dropped next
        return h[:, -1]

    def _regress(self, graph_embed: torch.Tensor) -> torch.Tensor:
        return self.regressor(self.head_activation(self.head(graph_embed))).squeeze(1)

    def forward(self, batch: GraphBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Standardised prediction [B] and every hop's graph embedding ([B, d] each), pooled in one call."""
        hops = self.node_embeddings(batch)
        graph_embeds = pool(torch.cat(hops, dim=1), batch, self.aggr_method).split([h.shape[1] for h in hops], 1)
        return self._regress(graph_embeds[-1]), list(graph_embeds)

    def predict(self, batch: GraphBatch) -> torch.Tensor:
        """Predictions in the target's own units, [B] (pools only the last hop)."""
        mean, std = self.target_moments
        last_hop = self.node_embeddings(batch)[-1]
        return self._regress(pool(last_hop, batch, self.aggr_method)) * std + mean

    def fe_readout(self) -> dict[str, dict[str, float]]:
        return self.fe_mlp.readout()

    def shift_unit_scores(self, norms: torch.Tensor, stage: int, hop: int) -> torch.Tensor:
        """Map hop-``hop`` embedding norms onto the target distribution of units at ``stage`` of depth index ``hop``."""
        z = (norms - self.hop_moments[0, hop]) / self.hop_moments[1, hop]
        return z * self.unit_moments[stage, hop, 1] + self.unit_moments[stage, hop, 0]


@torch.no_grad()
def predict_graphs(model: Predictor, graphs: GraphSet, batch_size: int = 256) -> list[float]:
    """Predictions in target units, in order; small batches keep the working set in cache, faster on CPU."""
    model.eval()
    return [v for _, batch in graphs.batches(batch_size) for v in model.predict(batch).tolist()]


def predict_archs(model: Predictor, archs: list[Arch], batch_size: int = 256) -> list[float]:
    """Predictions of a sequence-graph predictor for OFA architectures, in order."""
    return predict_graphs(model, encode_archs(archs), batch_size)


def build_predictor(config: dict) -> Predictor:
    """A predictor from a training config (the dict saved beside every checkpoint)."""
    graph_format = config.get("format", "custom")
    if graph_format == "custom":
        fe_mlp, moments = SequenceFEMLP(config.get("family")), unit_moment_shape(config.get("family"))
    elif graph_format == "onnx_ir":
        # the op vocabulary version the graphs were in; checkpoints from before version 2 do not name one
        fe_mlp, moments = OpGraphFEMLP(vocab_version=config.get("vocab_version", 1)), (0, 0)
    else:
        raise ValueError(f"unknown graph format {graph_format!r}; choose custom or onnx_ir")
    return Predictor(fe_mlp, gnn_dim=config["gnn_dim"], num_layers=config["num_layers"],
                     gnn_type=config["gnn_type"], aggr_method=config["aggr_method"],
                     gnn_activ=config.get("gnn_activ", "ReLU"), reg_activ=config.get("reg_activ", "ReLU"),
                     unit_moment_shape=moments)

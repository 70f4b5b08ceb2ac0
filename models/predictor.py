"""The AutoBuild predictor: FE-MLP -> hop encoder -> per-hop graph pooling -> MLP head -> standardised target.

Buffers make a checkpoint self-contained: the target's training moments (to report predictions in the target's
units), every hop's node-embedding norm moments and the per-(stage, depth) target moments (to score units), and the
test metrics of the run that trained it.
"""
from __future__ import annotations

import torch
import torch_geometric.nn as pyg
from torch import nn

from iterators.encoding import encode_archs
from iterators.graphs import GraphBatch, GraphSet
from iterators.search_space import Arch
from models.encoder import HopEncoder, make_activation
from models.fe_mlp import OpGraphFEMLP, SequenceFEMLP

POOLS = {"mean": pyg.global_mean_pool, "sum": pyg.global_add_pool, "max": pyg.global_max_pool}
TEST_METRICS = ("MAE", "MAPE", "Spearman", "KendallTau")
# (stages, depth indices) of the per-(stage, depth) target moments that unit scores are mapped onto
UNIT_MOMENT_SHAPES = {"ofa_mbv3": (5, 4), "ofa_pn": (5, 5)}


class Predictor(nn.Module):
    def __init__(self, fe_mlp: nn.Module, gnn_dim: int = 32, num_layers: int = 4, gnn_type: str = "GATv2Conv",
                 aggr_method: str = "mean", gnn_activ: str = "ReLU", reg_activ: str = "ReLU",
                 unit_moment_shape: tuple[int, int] = (0, 0)):
        super().__init__()
        if aggr_method not in POOLS:
            raise ValueError(f"unknown aggr_method {aggr_method!r}; choose one of {', '.join(POOLS)}")
        self.fe_mlp = fe_mlp
        self.encoder = HopEncoder(fe_mlp.out_dim, gnn_dim, num_layers, gnn_type, gnn_activ)
        self.pool = POOLS[aggr_method]
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

    def node_embeddings(self, batch: GraphBatch, max_hop: int | None = None) -> list[torch.Tensor]:
        """[h^0, ..., h^L] (or up to h^max_hop), each [N, d]."""
        return self.encoder(self.fe_mlp(batch.x), batch.edge_index, max_hop)

    def _regress(self, graph_embed: torch.Tensor) -> torch.Tensor:
        return self.regressor(self.head_activation(self.head(graph_embed))).squeeze(1)

    def forward(self, batch: GraphBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Standardised prediction [B] and every hop's graph embedding ([B, d] each)."""
        graph_embeds = [self.pool(h, batch.batch, batch.num_graphs) for h in self.node_embeddings(batch)]
        return self._regress(graph_embeds[-1]), graph_embeds

    def predict(self, batch: GraphBatch) -> torch.Tensor:
        """Predictions in the target's own units, [B] (pools only the last hop)."""
        mean, std = self.target_moments
        last_hop = self.node_embeddings(batch)[-1]
        return self._regress(self.pool(last_hop, batch.batch, batch.num_graphs)) * std + mean

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
    return [v for start in range(0, len(graphs), batch_size)
            for v in model.predict(graphs.batch(torch.arange(start, min(start + batch_size, len(graphs))))).tolist()]


def predict_archs(model: Predictor, archs: list[Arch], batch_size: int = 256) -> list[float]:
    """Predictions of a sequence-graph predictor for OFA architectures, in order."""
    return predict_graphs(model, encode_archs(archs), batch_size)


FE_MLPS = {"custom": SequenceFEMLP, "onnx_ir": OpGraphFEMLP}


def build_predictor(config: dict) -> Predictor:
    """A predictor from a training config (the dict saved beside every checkpoint)."""
    graph_format = config.get("format", "custom")
    if graph_format not in FE_MLPS:
        raise ValueError(f"unknown graph format {graph_format!r}; choose one of {', '.join(FE_MLPS)}")
    # an onnx_ir checkpoint names the op vocabulary version it was trained on; those from before version 2 do not
    fe_kwargs = {"vocab_version": config.get("vocab_version", 1)} if graph_format == "onnx_ir" else {}
    return Predictor(FE_MLPS[graph_format](**fe_kwargs), gnn_dim=config["gnn_dim"], num_layers=config["num_layers"],
                     gnn_type=config["gnn_type"], aggr_method=config["aggr_method"],
                     gnn_activ=config.get("gnn_activ", "ReLU"), reg_activ=config.get("reg_activ", "ReLU"),
                     unit_moment_shape=UNIT_MOMENT_SHAPES.get(config.get("family"), (0, 0))
                     if graph_format == "custom" else (0, 0))

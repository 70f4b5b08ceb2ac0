"""FE-MLPs: the interpretable first layer. Every feature category is mapped to one non-negative scalar.

For a node with categorical features c_1..c_m and real feature r the embedding is

    h0 = | [ w_1^T E_1[c_1] + b_1, ..., w_m^T E_m[c_m] + b_m, MLP(r) ] |          (shape [N, m + 1])

so each column of ``h0`` is the learned importance of one category's value, readable on its own.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from iterators.encoding import FEATURES, resolution_feature
from iterators.search_space import EXPANSIONS, KERNELS


class CategoryScalar(nn.Module):
    """Embedding of a categorical feature followed by a linear map to one scalar: [N] long -> [N, 1]."""

    def __init__(self, num_values: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_values, embed_dim)
        self.lin = nn.Linear(embed_dim, 1)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.lin(self.embed(index))

    def scores(self) -> list[float]:
        """|scalar| of every value of the category, in index order."""
        with torch.no_grad():
            return self(torch.arange(self.embed.num_embeddings)).abs().squeeze(1).tolist()


# (number of values, embedding size) per categorical column of the sequence-graph encoding
SEQUENCE_CATEGORIES = {"stage": (6, 3), "layer": (4, 2), "block_type": (2, 2), "expansion": (3, 2), "kernel": (3, 3)}
READOUT_RESOLUTIONS = (128, 160, 192, 208, 224)


class SequenceFEMLP(nn.Module):
    """FE-MLP of the sequence graph: x [N, 6] (layout in iterators/encoding.py) -> h0 [N, 6]."""

    out_dim = len(SEQUENCE_CATEGORIES) + 1

    def __init__(self):
        super().__init__()
        self.categories = nn.ModuleDict({name: CategoryScalar(n, d) for name, (n, d) in SEQUENCE_CATEGORIES.items()})
        self.resolution = nn.Sequential(nn.Linear(1, 3), nn.Linear(3, 1))
        self._columns = [FEATURES.index(name) for name in SEQUENCE_CATEGORIES]
        self._res_column = FEATURES.index("resolution")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = x[:, self._columns].long()
        scalars = [mod(codes[:, i]) for i, mod in enumerate(self.categories.values())]
        scalars.append(self.resolution(x[:, self._res_column:self._res_column + 1]))
        return torch.cat(scalars, dim=1).abs()

    def readout(self) -> dict[str, dict[str, float]]:
        """The score of every value of every feature: what the predictor learned about stages, kernels, ..."""
        cat = self.categories
        out = {
            "stage": {f"S{i + 1}": v for i, v in enumerate(cat["stage"].scores())},
            "layer": {f"L{i + 1}": v for i, v in enumerate(cat["layer"].scores())},
            "block_type": {f"mbconv{i + 2}": v for i, v in enumerate(cat["block_type"].scores())},
            "expansion": {f"e{e}": v for e, v in zip(EXPANSIONS, cat["expansion"].scores())},
            "kernel": {f"k{k}": v for k, v in zip(KERNELS, cat["kernel"].scores())},
        }
        with torch.no_grad():
            r = torch.tensor([[resolution_feature(r)] for r in READOUT_RESOLUTIONS])
            out["resolution"] = {f"r{res}": v for res, v in
                                 zip(READOUT_RESOLUTIONS, self.resolution(r).abs().squeeze(1).tolist())}
        return out


class OpGraphFEMLP(nn.Module):
    """FE-MLP of the ONNX-IR graph: x [N, 19] (layout in iterators/onnx_ir/features.py) -> h0 [N, 3].

    Op type -> embedding -> scalar; the 12 shape columns -> linear -> scalar; the 6 attribute columns -> linear ->
    scalar. A buffer counts the op types seen in training, so the read-out lists only ops the model has learned.
    The embedding covers the op vocabulary of ``vocab_version``; ops added to the vocabulary later read as unknown.
    """

    out_dim = 3

    def __init__(self, embed_dim: int = 8, vocab_version: int | None = None):
        super().__init__()
        from iterators import onnx_ir
        self.vocab_version = vocab_version or onnx_ir.VOCAB_VERSION
        self.vocab = onnx_ir.vocabulary(self.vocab_version)
        self._shapes, self._attrs = onnx_ir.SHAPE_COLUMNS, onnx_ir.ATTR_COLUMNS
        self.op = CategoryScalar(len(self.vocab), embed_dim)
        n_shape = self._shapes.stop - self._shapes.start
        n_attr = self._attrs.stop - self._attrs.start
        self.shape = nn.Sequential(nn.Linear(n_shape, embed_dim), nn.Linear(embed_dim, 1))
        self.attr = nn.Sequential(nn.Linear(n_attr, embed_dim), nn.Linear(embed_dim, 1))
        self.register_buffer("op_seen", torch.zeros(len(self.vocab)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops = x[:, 0].long()
        ops = ops.masked_fill(ops >= len(self.vocab), 0)  # newer than this model's vocabulary: unknown
        if self.training:
            self.op_seen += torch.bincount(ops, minlength=len(self.vocab)).to(self.op_seen)
        return torch.cat([self.op(ops), self.shape(x[:, self._shapes]), self.attr(x[:, self._attrs])], dim=1).abs()

    def _seen(self) -> list[int]:
        return torch.nonzero(self.op_seen).flatten().tolist()

    def unseen_ops(self, op_types: list[str]) -> Counter:
        """Count the ops of a graph whose type never occurred in training: their embeddings are untrained."""
        seen = {self.vocab[i] for i in self._seen()}
        return Counter(op for op in op_types if op not in seen)

    def readout(self) -> dict[str, dict[str, float]]:
        scores = self.op.scores()
        return {"op_type": {self.vocab[i]: scores[i] for i in self._seen()}}

"""FE-MLPs: the interpretable first layer. Every feature category is mapped to one non-negative scalar.

For a node with categorical features c_1..c_m and real feature r the embedding is

    h0 = | [ w_1^T E_1[c_1] + b_1, ..., w_m^T E_m[c_m] + b_m, MLP(r) ] |          (shape [N, m + 1])

so each column of ``h0`` is the learned importance of one category's value, readable on its own. Since
w_c^T E_c[v] + b_c depends on the value v only, the forward pass computes it once per value (a table of scalars, built
from the parameters on every call, so training still updates E_c, w_c and b_c) and looks the nodes up in it; an MLP
of two linear maps (the resolution's; the op graph's shape and attribute maps) is applied as one affine map.

Both FE-MLPs count the feature values seen in training (``observe``, a buffer saved with the checkpoint): the read-out
lists only those, and ``unseen()`` names the rest, whose scores were never trained.
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from iterators.encoding import FEATURES, block_type_index, resolution_feature
from iterators.search_space import EXPANSIONS, FAMILIES, KERNELS, RESOLUTIONS


def _affine(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Two linear maps with nothing between them, applied as the one affine map they make: [N, k] -> [N, 1]."""
    first, second = mlp
    return F.linear(x, second.weight @ first.weight, F.linear(first.bias, second.weight, second.bias))


class CategoryScalar(nn.Module):
    """Embedding of a categorical feature followed by a linear map to one scalar, held as ``table()``: the scalar of
    every value, looked up by the FE-MLPs."""

    def __init__(self, num_values: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_values, embed_dim)
        self.lin = nn.Linear(embed_dim, 1)

    def table(self) -> torch.Tensor:
        """[num_values] the scalar of every value."""
        return self.lin(self.embed.weight).squeeze(1)

    def scores(self) -> list[float]:
        """|scalar| of every value of the category, in index order."""
        with torch.no_grad():
            return self.table().abs().tolist()


# (number of values, embedding size) per categorical column of the sequence-graph encoding, in column order
SEQUENCE_CATEGORIES = {"stage": (6, 3), "layer": (4, 2), "block_type": (2, 2), "expansion": (3, 2), "kernel": (3, 3)}
if FEATURES[:len(SEQUENCE_CATEGORIES)] != tuple(SEQUENCE_CATEGORIES) or FEATURES[-1] != "resolution":
    raise ImportError("SequenceFEMLP expects the categorical columns first and the resolution last")
_CATEGORY_NAMES = {  # how the read-out names each value
    "stage": [f"S{i + 1}" for i in range(6)], "layer": [f"L{i + 1}" for i in range(4)],
    "block_type": [f"mbconv{t}" for t in (2, 3)], "expansion": [f"e{e}" for e in EXPANSIONS],
    "kernel": [f"k{k}" for k in KERNELS],
}
REPORTED_RESOLUTIONS = (128, 160, 192, 208, 224)  # resolutions the read-out names as unseen when not trained on
MAX_LISTED_RESOLUTIONS = 8  # more seen resolutions than this: the read-out lists 5, evenly spread


class SequenceFEMLP(nn.Module):
    """FE-MLP of the sequence graph: x [N, 6] (layout in iterators/encoding.py) -> h0 [N, 6].

    ``value_seen`` counts, per categorical value (categories back to back) and per resolution of RESOLUTIONS, how
    often it occurred in training. Checkpoints from before it existed load with every value of ``family`` marked seen.
    """

    out_dim = len(SEQUENCE_CATEGORIES) + 1

    def __init__(self, family: str | None = None):
        super().__init__()
        self.family = family
        self.categories = nn.ModuleDict({name: CategoryScalar(n, d) for name, (n, d) in SEQUENCE_CATEGORIES.items()})
        self.resolution = nn.Sequential(nn.Linear(1, 3), nn.Linear(3, 1))
        sizes = torch.tensor([n for n, _ in SEQUENCE_CATEGORIES.values()])
        self.register_buffer("_offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self._n_values = int(sizes.sum())
        self.register_buffer("value_seen", torch.zeros(self._n_values + len(RESOLUTIONS)))

    def value_table(self) -> torch.Tensor:
        """[18] the scalar of every categorical value, categories back to back."""
        return torch.cat([cat.table() for cat in self.categories.values()])

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :len(SEQUENCE_CATEGORIES)].long() + self._offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = self._codes(x)
        values = self.value_table().index_select(0, codes.flatten()).view(codes.shape)  # 2x faster than indexing
        return torch.cat([values, _affine(self.resolution, x[:, -1:])], dim=1).abs()

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Count the feature values of training nodes x [N, 6]."""
        self.value_seen[:self._n_values] += torch.bincount(self._codes(x).flatten(), minlength=self._n_values)
        res = torch.round(x[:, -1] * 32 + 192).long()
        slot = (res - RESOLUTIONS[0]) // (RESOLUTIONS[1] - RESOLUTIONS[0])
        self.value_seen[self._n_values:] += torch.bincount(slot, minlength=len(RESOLUTIONS))[:len(RESOLUTIONS)]

    def _possible(self) -> torch.Tensor:
        """1 for every value the family can take (all when it is unknown), else 0; layout of ``value_seen``."""
        if self.family not in FAMILIES:
            return torch.ones_like(self.value_seen)
        fam = FAMILIES[self.family]
        allowed = {"stage": range(fam.n_stages), "layer": range(max(max(d) for d in fam.stage_depths)),
                   "block_type": [block_type_index(fam.block_type)], "expansion": range(len(EXPANSIONS)),
                   "kernel": range(len(KERNELS))}
        mask = torch.zeros_like(self.value_seen)
        for name, offset in zip(SEQUENCE_CATEGORIES, self._offsets.tolist()):
            mask[[offset + v for v in allowed[name]]] = 1
        mask[self._n_values:] = 1
        return mask

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "value_seen", self._possible())  # a checkpoint from before value_seen
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _seen_by_category(self) -> dict[str, list[bool]]:
        seen = (self.value_seen > 0).tolist()
        out, start = {}, 0
        for name, (n, _) in SEQUENCE_CATEGORIES.items():
            out[name], start = seen[start:start + n], start + n
        out["resolution"] = seen[start:]
        return out

    def _listed_resolutions(self, seen: list[bool]) -> list[int]:
        values = [r for r, s in zip(RESOLUTIONS, seen) if s]
        if len(values) > MAX_LISTED_RESOLUTIONS:
            values = [values[round(i * (len(values) - 1) / 4)] for i in range(5)]
        return values

    def readout(self) -> dict[str, dict[str, float]]:
        """The score of every value seen in training: what the predictor learned about stages, kernels, ..."""
        seen = self._seen_by_category()
        out = {name: {label: score for label, score, s in zip(_CATEGORY_NAMES[name], cat.scores(), seen[name]) if s}
               for name, cat in self.categories.items()}
        resolutions = self._listed_resolutions(seen["resolution"])
        with torch.no_grad():
            r = torch.tensor([[resolution_feature(r)] for r in resolutions]).reshape(-1, 1)
            scores = self.resolution(r).abs().squeeze(1).tolist()
        out["resolution"] = {f"r{res}": v for res, v in zip(resolutions, scores)}
        return out

    def unseen(self) -> dict[str, list[str]]:
        """Per category, the values never seen in training (their scores are untrained and left out of the read-out);
        for the resolution, those of REPORTED_RESOLUTIONS."""
        seen = self._seen_by_category()
        out = {name: [label for label, s in zip(_CATEGORY_NAMES[name], seen[name]) if not s]
               for name in SEQUENCE_CATEGORIES}
        out["resolution"] = [f"r{r}" for r in REPORTED_RESOLUTIONS if not seen["resolution"][RESOLUTIONS.index(r)]]
        return {name: values for name, values in out.items() if values}


class OpGraphFEMLP(nn.Module):
    """FE-MLP of the ONNX-IR graph: x [N, 19] (layout in iterators/onnx_ir.py) -> h0 [N, 3].

    Op type -> embedding -> scalar; the 12 shape columns -> linear -> scalar; the 6 attribute columns -> linear ->
    scalar. A buffer counts the op types seen in training, so the read-out lists only ops the model has learned.
    """

    out_dim = 3

    def __init__(self, embed_dim: int = 8):
        super().__init__()
        from iterators import onnx_ir
        self.vocab = onnx_ir.OP_VOCAB
        self._shapes, self._attrs = onnx_ir.SHAPE_COLUMNS, onnx_ir.ATTR_COLUMNS
        self.op = CategoryScalar(len(self.vocab), embed_dim)
        n_shape = self._shapes.stop - self._shapes.start
        n_attr = self._attrs.stop - self._attrs.start
        self.shape = nn.Sequential(nn.Linear(n_shape, embed_dim), nn.Linear(embed_dim, 1))
        self.attr = nn.Sequential(nn.Linear(n_attr, embed_dim), nn.Linear(embed_dim, 1))
        self.register_buffer("op_seen", torch.zeros(len(self.vocab)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops = self.op.table().index_select(0, x[:, 0].long()).unsqueeze(1)
        return torch.cat([ops, _affine(self.shape, x[:, self._shapes]), _affine(self.attr, x[:, self._attrs])],
                         dim=1).abs()

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Count the op types of training nodes x [N, 19]."""
        self.op_seen += torch.bincount(x[:, 0].long(), minlength=len(self.vocab)).to(self.op_seen)

    def _seen(self) -> list[int]:
        return torch.nonzero(self.op_seen).flatten().tolist()

    def unseen_ops(self, op_types: list[str]) -> Counter:
        """Count the ops of a graph whose type never occurred in training: their embeddings are untrained."""
        seen = {self.vocab[i] for i in self._seen()}
        return Counter(op for op in op_types if op not in seen)

    def readout(self) -> dict[str, dict[str, float]]:
        scores = self.op.scores()
        return {"op_type": {self.vocab[i]: scores[i] for i in self._seen()}}

    def unseen(self) -> dict[str, list[str]]:
        return {}  # the vocabulary holds every ONNX op: the read-out lists the seen ones, the rest go unnamed

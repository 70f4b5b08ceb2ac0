"""Many small graphs in flat tensors, cut into mini-batches without PyG's per-graph collation.

A ``GraphSet`` keeps every graph's node features and graph-local edges back to back, with offsets; ``batch(idx)``
gathers the chosen graphs into one disjoint union with index arithmetic only, which is what lets a training epoch over
thousands of architectures take a fraction of a second.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class GraphBatch(NamedTuple):
    x: torch.Tensor           # [N, F] node features of all graphs
    edge_index: torch.Tensor  # [2, E] directed edges, indices into x
    batch: torch.Tensor       # [N] graph id (0..num_graphs-1) of every node
    num_graphs: int

    @property
    def last_node(self) -> torch.Tensor:
        """[num_graphs] index of every graph's last node (the sink of a sequence graph)."""
        counts = torch.bincount(self.batch, minlength=self.num_graphs)
        return torch.cumsum(counts, 0) - 1


def _gather_ranges(ptr: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions covered by the ranges ptr[i]..ptr[i+1] for i in idx, concatenated; and each range's length."""
    starts, counts = ptr[idx], ptr[idx + 1] - ptr[idx]
    new_starts = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())
    pos = torch.arange(total) + torch.repeat_interleave(starts - new_starts, counts, output_size=total)
    return pos, counts


class GraphSet:
    """Graphs stored flat: ``x[node_ptr[g]:node_ptr[g+1]]`` and ``edges[:, edge_ptr[g]:edge_ptr[g+1]]`` (graph-local)."""

    def __init__(self, x: torch.Tensor, node_ptr: torch.Tensor, edges: torch.Tensor, edge_ptr: torch.Tensor):
        if node_ptr.numel() != edge_ptr.numel():
            raise ValueError("node_ptr and edge_ptr must describe the same number of graphs")
        self.x, self.node_ptr, self.edges, self.edge_ptr = x, node_ptr, edges, edge_ptr

    def __len__(self) -> int:
        return self.node_ptr.numel() - 1

    @classmethod
    def from_lists(cls, xs: list[np.ndarray], edge_lists: list[np.ndarray]) -> "GraphSet":
        """xs[g]: [n_g, F] features; edge_lists[g]: [2, e_g] graph-local edges."""
        node_ptr = torch.tensor(np.concatenate([[0], np.cumsum([len(x) for x in xs])]), dtype=torch.long)
        edge_ptr = torch.tensor(np.concatenate([[0], np.cumsum([e.shape[1] for e in edge_lists])]), dtype=torch.long)
        x = torch.as_tensor(np.concatenate(xs), dtype=torch.float32)
        edges = torch.as_tensor(np.concatenate(edge_lists, axis=1), dtype=torch.long).reshape(2, -1)
        return cls(x, node_ptr, edges, edge_ptr)

    @classmethod
    def sequences(cls, x: torch.Tensor, lengths: torch.Tensor) -> "GraphSet":
        """Sequence graphs (edges i -> i+1) from stacked node features and per-graph lengths."""
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
        n_edges = lengths - 1
        edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(n_edges, 0)])
        total = int(n_edges.sum())
        local_src = torch.arange(total) - torch.repeat_interleave(edge_ptr[:-1], n_edges, output_size=total)
        edges = torch.stack([local_src, local_src + 1])
        return cls(x.float(), node_ptr, edges, edge_ptr)

    def batch(self, idx=None) -> GraphBatch:
        idx = torch.arange(len(self)) if idx is None else torch.as_tensor(idx, dtype=torch.long)
        node_pos, n_nodes = _gather_ranges(self.node_ptr, idx)
        edge_pos, n_edges = _gather_ranges(self.edge_ptr, idx)
        node_offsets = torch.cumsum(n_nodes, 0) - n_nodes
        edge_index = self.edges[:, edge_pos] + torch.repeat_interleave(node_offsets, n_edges,
                                                                       output_size=edge_pos.numel())
        batch = torch.repeat_interleave(torch.arange(idx.numel()), n_nodes, output_size=node_pos.numel())
        return GraphBatch(self.x[node_pos], edge_index, batch, idx.numel())

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
        """Yield (graph indices, GraphBatch) over the whole set."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            yield idx, self.batch(idx)

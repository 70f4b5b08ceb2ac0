"""Many small graphs in flat tensors, cut into mini-batches without PyG's per-graph collation.

A ``GraphSet`` keeps every graph's node features and graph-local edges back to back, with offsets; ``batch(idx)``
gathers the chosen graphs into one disjoint union with index arithmetic only, which is what lets a training epoch over
thousands of architectures take a fraction of a second.

Edges i -> i+1 between consecutive rows ("chain edges") are the models' fast case: node i reads its predecessor as
the row above it, with no gather or scatter. Every sequence graph has only chain edges (such a set and its batches
are marked ``chain`` and carry no edge list at all; one is built only if asked for); an op graph exported in
topological order has mostly chain edges (87% in the shipped onnx_ir caches) and a few others, its skip connections:
``GraphBatch.extra_edges``.
"""
from __future__ import annotations

import numpy as np
import torch


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    """[n] counts -> [n + 1] offsets starting at 0."""
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


class GraphBatch:
    """A disjoint union of graphs: nodes of graph g are rows ``ptr[g]:ptr[g+1]`` of ``x`` (graphs are contiguous).

    x: [N, F] node features; ptr: [B + 1] node offsets; edge_index: [2, E] directed edges into x (built on first use
    for a chain batch); batch: [N] graph id of every node (built on first use). Split of the edges for the models'
    chain path: ``prev_mask`` [N, 1] is 1 where the edge i-1 -> i exists, ``extra_edges`` [2, X] holds the others.
    """

    __slots__ = ("x", "ptr", "chain", "_edge_index", "_batch", "_prev_mask", "_extra_edges", "_self_loops")

    def __init__(self, x: torch.Tensor, ptr: torch.Tensor, edge_index: torch.Tensor | None = None,
                 chain: bool = False):
        if edge_index is None and not chain:
            raise ValueError("a batch of graphs that are not chains needs its edge_index")
        self.x, self.ptr, self.chain = x, ptr, chain
        self._edge_index, self._batch, self._prev_mask, self._extra_edges = edge_index, None, None, None
        self._self_loops = False

    @property
    def num_graphs(self) -> int:
        return self.ptr.numel() - 1

    @property
    def num_nodes(self) -> torch.Tensor:
        """[B] nodes per graph."""
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def batch(self) -> torch.Tensor:
        if self._batch is None:
            self._batch = torch.repeat_interleave(torch.arange(self.num_graphs), self.num_nodes,
                                                  output_size=self.x.shape[0])
        return self._batch

    @property
    def edge_index(self) -> torch.Tensor:
        if self._edge_index is None:  # a chain: every node but each graph's last feeds the next row
            src = torch.ones(self.x.shape[0], dtype=torch.bool)
            src[self.ptr[1:] - 1] = False
            src = torch.nonzero(src).flatten()
            self._edge_index = torch.stack([src, src + 1])
        return self._edge_index

    @property
    def last_node(self) -> torch.Tensor:
        """[num_graphs] index of every graph's last node (the sink of a sequence graph)."""
        return self.ptr[1:] - 1

    def _split_edges(self) -> None:
        if self.chain:
            mask = torch.ones(self.x.shape[0], 1)
            mask[self.ptr[:-1]] = 0.0
            self._prev_mask, self._extra_edges = mask, self.x.new_zeros(2, 0, dtype=torch.long)
            return
        src, dst = self.edge_index
        n = self.x.shape[0]
        chain_idx = torch.nonzero(src == dst - 1).flatten()
        # one i-1 -> i edge per node goes on the chain; a repeated copy stays an extra edge
        first = torch.full((n,), src.numel()).scatter_reduce_(0, dst[chain_idx], chain_idx, "amin")
        on_chain = chain_idx[first[dst[chain_idx]] == chain_idx]
        extra = torch.ones(src.numel(), dtype=torch.bool)
        extra[on_chain] = False
        self._prev_mask = torch.zeros(n, 1)
        self._prev_mask[dst[on_chain]] = 1.0
        self._extra_edges = self.edge_index[:, extra]
        self._self_loops = bool((src == dst).any())

    @property
    def prev_mask(self) -> torch.Tensor:
        """[N, 1] float: 1 where node i has the in-edge i-1 -> i (chains: all but each graph's first node)."""
        if self._prev_mask is None:
            self._split_edges()
        return self._prev_mask

    @property
    def extra_edges(self) -> torch.Tensor:
        """[2, X] the edges other than one i-1 -> i per node (none for a chain batch)."""
        if self._extra_edges is None:
            self._split_edges()
        return self._extra_edges

    @property
    def has_self_loops(self) -> bool:
        """Whether some edge is i -> i (the layers that add their own self-loops then run torch_geometric's path)."""
        if self._prev_mask is None:
            self._split_edges()
        return self._self_loops


def _gather_ranges(ptr: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions covered by the ranges ptr[i]..ptr[i+1] for i in idx, concatenated; and each range's length."""
    starts, counts = ptr[idx], ptr[idx + 1] - ptr[idx]
    new_starts = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())
    pos = torch.arange(total) + torch.repeat_interleave(starts - new_starts, counts, output_size=total)
    return pos, counts


def _chain_edges(node_ptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Graph-local edges i -> i+1 of chains with the given node offsets, and their edge offsets."""
    lengths = node_ptr[1:] - node_ptr[:-1]
    n_edges = (lengths - 1).clamp_min(0)
    edge_ptr = _offsets(n_edges)
    total = int(n_edges.sum())
    local_src = torch.arange(total) - torch.repeat_interleave(edge_ptr[:-1], n_edges, output_size=total)
    return torch.stack([local_src, local_src + 1]), edge_ptr


class GraphSet:
    """Graphs stored flat: ``x[node_ptr[g]:node_ptr[g+1]]`` and ``edges[:, edge_ptr[g]:edge_ptr[g+1]]`` (graph-local).

    ``chain`` is true when every graph's edges are exactly i -> i+1 (i = 0..n-2), in that order.
    """

    def __init__(self, x: torch.Tensor, node_ptr: torch.Tensor, edges: torch.Tensor, edge_ptr: torch.Tensor):
        if node_ptr.numel() != edge_ptr.numel():
            raise ValueError("node_ptr and edge_ptr must describe the same number of graphs")
        self.x, self.node_ptr, self.edges, self.edge_ptr = x, node_ptr, edges, edge_ptr
        chain_edges, chain_ptr = _chain_edges(node_ptr)
        self.chain = torch.equal(edge_ptr, chain_ptr) and torch.equal(edges, chain_edges)
        self._edges_offset: torch.Tensor | None = None

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
        node_ptr = _offsets(torch.as_tensor(lengths, dtype=torch.long))
        edges, edge_ptr = _chain_edges(node_ptr)
        return cls(x.float(), node_ptr, edges, edge_ptr)

    def batch(self, idx=None) -> GraphBatch:
        if idx is None:  # the whole set, in order: no gathering
            return GraphBatch(self.x, self.node_ptr, None if self.chain else self.edges_offset(), self.chain)
        idx = torch.as_tensor(idx, dtype=torch.long)
        node_pos, n_nodes = _gather_ranges(self.node_ptr, idx)
        ptr = _offsets(n_nodes)
        if self.chain:
            return GraphBatch(self.x[node_pos], ptr, chain=True)
        edge_pos, n_edges = _gather_ranges(self.edge_ptr, idx)
        edge_index = self.edges[:, edge_pos] + torch.repeat_interleave(ptr[:-1], n_edges, output_size=edge_pos.numel())
        return GraphBatch(self.x[node_pos], ptr, edge_index)

    def edges_offset(self) -> torch.Tensor:
        """[2, E] edges of the whole set as indices into ``x``."""
        if self._edges_offset is None:
            n_edges = self.edge_ptr[1:] - self.edge_ptr[:-1]
            self._edges_offset = self.edges + torch.repeat_interleave(self.node_ptr[:-1], n_edges,
                                                                      output_size=self.edges.shape[1])
        return self._edges_offset

    def slice(self, start: int, stop: int) -> GraphBatch:
        """Graphs start..stop-1 as a batch of views, without gathering."""
        ptr = self.node_ptr[start:stop + 1]
        x = self.x[int(ptr[0]):int(ptr[-1])]
        if self.chain:
            return GraphBatch(x, ptr - ptr[0], chain=True)
        edges = self.edges_offset()[:, int(self.edge_ptr[start]):int(self.edge_ptr[stop])]
        return GraphBatch(x, ptr - ptr[0], edges - ptr[0])

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
        """Yield (graph indices, GraphBatch) over the whole set."""
        if not shuffle:
            for start in range(0, len(self), batch_size):
                stop = min(start + batch_size, len(self))
                yield torch.arange(start, stop), self.slice(start, stop)
            return
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            yield idx, self.batch(idx)

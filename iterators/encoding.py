"""The sequence-graph encoding (format ``custom``): one node per block, directed edges block i -> block i+1.

Node feature layout (one row per block, in network order):

    column  name        value
    0       stage       stage index (0-based; a unit placed at stage s starts at s)
    1       layer       position of the block inside its stage (0-based)
    2       block type  mbconv2 -> 0, mbconv3 -> 1
    3       expansion   index into EXPANSIONS (3, 4, 6 -> 0, 1, 2)
    4       kernel      index into KERNELS (3, 5, 7 -> 0, 1, 2)
    5       resolution  (resolution - 192) / 32
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from iterators.graphs import GraphSet
from iterators.search_space import EXPANSIONS, FAMILIES, KERNELS, Arch

FEATURES = ("stage", "layer", "block_type", "expansion", "kernel", "resolution")
N_FEATURES = len(FEATURES)
_E_INDEX = {e: i for i, e in enumerate(EXPANSIONS)}
_K_INDEX = {k: i for i, k in enumerate(KERNELS)}


def block_type_index(block_type: int) -> int:
    return block_type - 2


def resolution_feature(resolution: float) -> float:
    return (resolution - 192) / 32


def sequence_rows(stages: Sequence[Sequence[tuple[int, int]]], block_type: int, resolution: int,
                  first_stage: int = 0) -> list[tuple]:
    """Feature rows of the blocks of ``stages`` (lists of (e, k)), the first of them placed at ``first_stage``."""
    t, r = block_type_index(block_type), resolution_feature(resolution)
    return [(first_stage + s, layer, t, _E_INDEX[e], _K_INDEX[k], r)
            for s, stage in enumerate(stages) for layer, (e, k) in enumerate(stage)]


def arch_rows(arch: Arch) -> list[tuple]:
    return sequence_rows(arch.stages, FAMILIES[arch.family].block_type, arch.resolution)


def encode_arch(arch: Arch, y: float | None = None) -> Data:
    """One architecture as a torch_geometric ``Data`` (x: [n_blocks, 6], edge_index: [2, n_blocks-1])."""
    x = torch.tensor(arch_rows(arch), dtype=torch.float32)
    src = torch.arange(x.shape[0] - 1)
    data = Data(x=x, edge_index=torch.stack([src, src + 1]))
    if y is not None:
        data.y = torch.tensor([y], dtype=torch.float32)
    return data


def sequences_to_graphset(rows_per_graph: Iterable[list[tuple]]) -> GraphSet:
    """Stack the feature rows of many sequence graphs into a GraphSet."""
    lengths, flat = [], []
    for rows in rows_per_graph:
        lengths.append(len(rows))
        flat.extend(rows)
    x = torch.tensor(flat, dtype=torch.float32).reshape(-1, N_FEATURES)
    return GraphSet.sequences(x, torch.tensor(lengths))


def encode_archs(archs: Iterable[Arch]) -> GraphSet:
    return sequences_to_graphset(arch_rows(a) for a in archs)

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

from typing import Iterable

import numpy as np
import torch

from iterators.graphs import GraphSet
from iterators.search_space import EXPANSIONS, FAMILIES, KERNELS, Arch

FEATURES = ("stage", "layer", "block_type", "expansion", "kernel", "resolution")
N_FEATURES = len(FEATURES)
# (e, k) -> e_index * 3 + k_index: one small integer per block
_BLOCK_CODE = {(e, k): i * len(KERNELS) + j for i, e in enumerate(EXPANSIONS) for j, k in enumerate(KERNELS)}


def block_type_index(block_type: int) -> int:
    return block_type - 2


def resolution_feature(resolution: float) -> float:
    return (resolution - 192) / 32


def _ranks_within(counts: np.ndarray) -> np.ndarray:
    """[0, 1, .., c_0 - 1, 0, 1, .., c_1 - 1, ...] for counts c."""
    starts = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(starts, counts)


def encode_archs(archs: Iterable[Arch]) -> GraphSet:
    """Sequence graphs of architectures, one node per block in network order (columns in the module docstring).

    One pass of Python collects each architecture's block codes and stage depths; the columns are then built with
    array arithmetic, so encoding keeps pace with the chain path's inference.
    """
    codes, stage_depths, n_stages, n_blocks, block_types, resolutions = [], [], [], [], [], []
    for arch in archs:
        depths = arch.depths
        codes.extend(_BLOCK_CODE[block] for stage in arch.stages for block in stage)
        stage_depths.extend(depths)
        n_stages.append(len(depths))
        n_blocks.append(sum(depths))
        block_types.append(block_type_index(FAMILIES[arch.family].block_type))
        resolutions.append(resolution_feature(arch.resolution))
    stage_depths, n_blocks = np.array(stage_depths, dtype=np.int64), np.array(n_blocks, dtype=np.int64)
    codes = np.array(codes, dtype=np.int64)
    x = np.empty((len(codes), N_FEATURES), dtype=np.float32)
    x[:, 0] = np.repeat(_ranks_within(np.array(n_stages, dtype=np.int64)), stage_depths)
    x[:, 1] = _ranks_within(stage_depths)
    x[:, 2] = np.repeat(block_types, n_blocks)
    x[:, 3] = codes // len(KERNELS)
    x[:, 4] = codes % len(KERNELS)
    x[:, 5] = np.repeat(np.array(resolutions, dtype=np.float32), n_blocks)
    return GraphSet.sequences(torch.from_numpy(x), torch.from_numpy(n_blocks))

"""Architectures as one-hot block and depth choices: the features of the closed-form baselines (models/baselines.py),
of additive latency tables (models/latency_table.py) and the variables of the budget integer program (rm_search).

For a family whose stage s holds at most D_s blocks, an architecture is the 0/1 vector u = [x, z] with

    x[block_column(s, b, c)] = 1   if stage s keeps more than b blocks and block b is choice c
    z[depth_column(s, d)]    = 1   if stage s has d blocks (stages whose depth is elastic only)

and choice c = e_index * 3 + k_index indexes ``CHOICES`` (e3k3, e3k5, ..., e6k7). x is BINAS's product of the block
choices and the depth: a block's choice counts only when the stage's depth keeps the block. Valid vectors are exactly
those meeting ``structure()``: one depth per elastic stage, and per slot (s, b) one choice if the depth keeps it,
none otherwise. Resolution enters the baselines as rho = (r - 192) / 32 and rho^2 after u (``features``).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from iterators.encoding import encode_archs, resolution_feature
from iterators.graphs import GraphBatch
from iterators.search_space import FAMILIES, KERNELS, Arch, make_arch
from iterators.units import CHOICES  # (e, k) of choice c

CHOICE_NAMES = tuple(f"e{e}k{k}" for e, k in CHOICES)
N_CHOICES = len(CHOICES)
N_RESOLUTION_FEATURES = 2  # rho, rho^2


class BlockLayout:
    """Column layout of the block/depth indicators of one family (use ``layout(family)``, which caches it)."""

    def __init__(self, family: str):
        fam = FAMILIES[family]
        self.family = family
        self.depth_options = fam.stage_depths
        self.n_stages = fam.n_stages
        self.max_depths = tuple(max(d) for d in fam.stage_depths)
        self.min_depths = tuple(min(d) for d in fam.stage_depths)
        self.slots = [(s, b) for s in range(self.n_stages) for b in range(self.max_depths[s])]
        self._slot = {sb: i for i, sb in enumerate(self.slots)}
        self.n_block_columns = len(self.slots) * N_CHOICES
        self.depths = [(s, d) for s, options in enumerate(fam.stage_depths) if len(options) > 1 for d in options]
        self._depth = {sd: self.n_block_columns + i for i, sd in enumerate(self.depths)}
        self.n_indicators = self.n_block_columns + len(self.depths)
        self.n_features = self.n_indicators + N_RESOLUTION_FEATURES
        # lookups for vectorised encoding: slot index of (stage, position); depth column of (stage, depth) or -1
        self._slot_table = torch.full((self.n_stages, max(self.max_depths)), -1, dtype=torch.long)
        for (s, b), i in self._slot.items():
            self._slot_table[s, b] = i
        self._depth_table = torch.full((self.n_stages, max(self.max_depths) + 1), -1, dtype=torch.long)
        for (s, d), col in self._depth.items():
            self._depth_table[s, d] = col

    def block_column(self, stage: int, position: int, choice: int) -> int:
        return self._slot[(stage, position)] * N_CHOICES + choice

    def depth_column(self, stage: int, depth: int) -> int | None:
        """The column of ``depth`` blocks in ``stage``; None for a stage of fixed depth."""
        return self._depth.get((stage, depth))

    def column_names(self) -> list[str]:
        """'S1.L2.e4k5' for block columns, 'S1.D3' for depth columns, then 'rho', 'rho^2'."""
        names = [f"S{s + 1}.L{b + 1}.{c}" for s, b in self.slots for c in CHOICE_NAMES]
        return names + [f"S{s + 1}.D{d}" for s, d in self.depths] + ["rho", "rho^2"]

    # --- encoding ---------------------------------------------------------------------------------------------

    def features(self, batch: GraphBatch) -> torch.Tensor:
        """[B, n_features] float64: indicators, rho, rho^2 of a batch of sequence graphs (iterators/encoding.py)."""
        x = batch.x
        stage, position = x[:, 0].long(), x[:, 1].long()
        choice = x[:, 3].long() * len(KERNELS) + x[:, 4].long()
        out = torch.zeros(batch.num_graphs, self.n_features, dtype=torch.float64)
        out[batch.batch, self._slot_table[stage, position] * N_CHOICES + choice] = 1.0
        depth = torch.zeros(batch.num_graphs, self.n_stages, dtype=torch.long)
        depth.index_put_((batch.batch, stage), torch.ones_like(stage), accumulate=True)
        depth_col = self._depth_table[torch.arange(self.n_stages), depth]  # [B, stages]; -1 for fixed stages
        rows, stages = torch.nonzero(depth_col >= 0, as_tuple=True)
        out[rows, depth_col[rows, stages]] = 1.0
        # every node of a graph carries its resolution: scattering them all leaves that value
        rho = torch.zeros(batch.num_graphs, dtype=torch.float64).scatter_(0, batch.batch, x[:, 5].double())
        out[:, self.n_indicators] = rho
        out[:, self.n_indicators + 1] = rho * rho
        return out

    def encode(self, archs: list[Arch]) -> np.ndarray:
        """[n, n_features] float64 features of architectures of this family."""
        if not archs:
            return np.zeros((0, self.n_features))
        wrong = {a.family for a in archs} - {self.family}
        if wrong:
            raise ValueError(f"a {self.family} layout cannot encode {', '.join(sorted(wrong))} architectures")
        return self.features(encode_archs(archs).batch()).numpy()

    # --- the structure of valid indicator vectors (the integer program's constraints) --------------------------

    def structure(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, b) with A @ u == b exactly for the indicator vectors u of valid architectures.

        Rows: per elastic stage, its depth columns sum to 1; per slot (s, b), its choices sum to 1 when b is below
        the stage's least depth, else to the depth columns that keep it (those with d > b).
        """
        rows, rhs = [], []
        for s in range(self.n_stages):
            if len(self.depth_options[s]) > 1:
                row = np.zeros(self.n_indicators)
                row[[self._depth[(s, d)] for d in self.depth_options[s]]] = 1.0
                rows.append(row)
                rhs.append(1.0)
        for s, b in self.slots:
            row = np.zeros(self.n_indicators)
            start = self.block_column(s, b, 0)
            row[start:start + N_CHOICES] = 1.0
            if b < self.min_depths[s]:
                rhs.append(1.0)
            else:
                row[[self._depth[(s, d)] for d in self.depth_options[s] if d > b]] = -1.0
                rhs.append(0.0)
            rows.append(row)
        return np.array(rows), np.array(rhs)

    def decode(self, u: np.ndarray, resolution: int) -> Arch:
        """The architecture of a valid 0/1 indicator vector (the first n_indicators entries of ``u``)."""
        u = np.asarray(u)[:self.n_indicators] > 0.5
        stages = []
        for s in range(self.n_stages):
            depth = self.min_depths[s]
            for d in self.depth_options[s]:
                col = self.depth_column(s, d)
                if col is not None and u[col]:
                    depth = d
            blocks = []
            for b in range(depth):
                start = self.block_column(s, b, 0)
                picked = np.flatnonzero(u[start:start + N_CHOICES])
                if len(picked) != 1:
                    raise ValueError(f"stage {s + 1} block {b + 1}: {len(picked)} choices set, expected 1")
                e, k = CHOICES[picked[0]]
                blocks.append(FAMILIES[self.family].block_name(e, k))
            stages.append(blocks)
        return make_arch(stages, resolution, self.family)

    def unit_columns(self, unit_stages: list[int], stage_blocks: list[list[tuple[int, int]]]) -> list[int]:
        """Indicator columns a unit sets: its blocks' (s, b, c) and its stages' depths. ``stage_blocks[i]`` holds the
        (e, k) of the blocks of stage ``unit_stages[i]``."""
        cols = []
        for s, blocks in zip(unit_stages, stage_blocks):
            for b, (e, k) in enumerate(blocks):
                cols.append(self.block_column(s, b, CHOICES.index((e, k))))
            depth_col = self.depth_column(s, len(blocks))
            if depth_col is not None:
                cols.append(depth_col)
        return cols


@lru_cache(maxsize=None)
def layout(family: str) -> BlockLayout:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    return BlockLayout(family)


def rho(resolution: float) -> float:
    """The resolution feature of the baselines (the sequence encoding's): (r - 192) / 32."""
    return resolution_feature(resolution)

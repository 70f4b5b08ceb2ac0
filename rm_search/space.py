"""What the search may build: per unit position, a set of candidate units (a reduced space, or every unit of the
stage: "Stage-Full"), with sampling and mutation; optionally widened, so that a search started in a reduced space can
still reach every unit of the full one."""
from __future__ import annotations

import json
import random

from iterators.search_space import EXPANSIONS, FAMILIES, KERNELS, Arch
from iterators.units import ReducedSpace, assemble, split_into_units


def _key(config) -> str:
    return json.dumps(config)


class UnitCandidates:
    """The candidates of one unit position: an explicit list, or (``configs=None``) every unit of the stage."""

    def __init__(self, family: str, unit: int, configs: list | None = None):
        self.family, self.unit = family, unit
        self.configs = configs

    def __len__(self) -> int:
        if self.configs is not None:
            return len(self.configs)
        fam = FAMILIES[self.family]
        n = 1
        for s in fam.units[self.unit - 1]:
            n *= sum((len(EXPANSIONS) * len(KERNELS)) ** d for d in fam.stage_depths[s])
        return n

    def sample(self, rng: random.Random):
        if self.configs is not None:
            return rng.choice(self.configs)
        # full space: a depth per covered stage, then every block, uniformly (OFA's own sampler)
        fam = FAMILIES[self.family]
        parts = [[fam.block_name(rng.choice(EXPANSIONS), rng.choice(KERNELS))
                  for _ in range(rng.choice(fam.stage_depths[s]))] for s in fam.units[self.unit - 1]]
        return parts[0] if len(parts) == 1 else parts

    def sample_other(self, current, rng: random.Random):
        """A candidate different from ``current`` (``current`` itself when it is the only one)."""
        if len(self) == 1:
            return current
        while True:
            config = self.sample(rng)
            if _key(config) != _key(current):
                return config


class SearchSpace:
    """Networks at one resolution, one candidate unit per position.

    ``widen`` (0-1): the probability that a mutation draws the new unit from the whole stage instead of the listed
    candidates; 0 keeps the search inside the listed units, 1 mutates as in the full space.
    """

    def __init__(self, family: str, candidates: list[UnitCandidates], resolution: int, widen: float = 0.0):
        self.family, self.candidates, self.resolution, self.widen = family, candidates, resolution, widen
        self._full = [UnitCandidates(family, c.unit) for c in candidates]

    @classmethod
    def full(cls, family: str, resolution: int) -> "SearchSpace":
        return cls(family, [UnitCandidates(family, u) for u in range(1, len(FAMILIES[family].units) + 1)],
                   resolution)

    @classmethod
    def reduced(cls, space: ReducedSpace, resolution: int, widen: float = 0.0) -> "SearchSpace":
        return cls(space.family, [UnitCandidates(space.family, u, configs)
                                  for u, configs in enumerate(space.configs(), start=1)], resolution, widen)

    @property
    def size(self) -> int:
        n = 1
        for c in self.candidates:
            n *= len(c)
        return n

    @property
    def reachable(self) -> int:
        """How many networks a search may visit: the listed ones, or all of the full space once widened."""
        if not self.widen:
            return self.size
        n = 1
        for c in self._full:
            n *= len(c)
        return n

    def build(self, unit_configs: list) -> Arch:
        return assemble(self.family, unit_configs, self.resolution)

    def sample(self, rng: random.Random) -> Arch:
        return self.build([c.sample(rng) for c in self.candidates])

    def mutate(self, arch: Arch, rng: random.Random, stage_mutate_prob: float, depth: int = 1) -> Arch:
        """Replace every unit by another candidate of its position with probability ``stage_mutate_prob``,
        ``depth`` times over (PN's merged stage 5+6 is one unit)."""
        units = split_into_units(arch)
        for _ in range(depth):
            units = [self._pool(p, rng).sample_other(u, rng) if rng.random() < stage_mutate_prob else u
                     for p, u in enumerate(units)]
        return self.build(units)

    def _pool(self, position: int, rng: random.Random) -> UnitCandidates:
        return self._full[position] if self.widen and rng.random() < self.widen else self.candidates[position]

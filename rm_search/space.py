"""What the search may build: per unit position, a set of candidate unit configs (a reduced space from
save_topk_ofa.py files, or every unit of the stage: "Stage-Full"), with sampling and mutation."""
from __future__ import annotations

import json
import random

from iterators.search_space import EXPANSIONS, FAMILIES, KERNELS, Arch
from iterators.units import assemble, corpus_family, split_into_units, unit_stages


def _key(config) -> str:
    return json.dumps(config)


class UnitCandidates:
    """The candidates of one unit position: an explicit list, or (``configs=None``) every unit of the stage."""

    def __init__(self, family: str, unit: int, configs: list | None = None):
        self.family, self.unit = family, unit
        self.configs = configs
        self._keys = None if configs is None else {_key(c) for c in configs}

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

    def __contains__(self, config) -> bool:
        if self.configs is not None:
            return _key(config) in self._keys
        try:
            unit_stages(self.family, self.unit, config)
            return True
        except ValueError:
            return False


class SearchSpace:
    def __init__(self, family: str, candidates: list[UnitCandidates], resolution: int):
        self.family, self.candidates, self.resolution = family, candidates, resolution

    @classmethod
    def full(cls, family: str, resolution: int) -> "SearchSpace":
        return cls(family, [UnitCandidates(family, u) for u in range(1, len(FAMILIES[family].units) + 1)],
                   resolution)

    @classmethod
    def from_files(cls, paths: list[str], resolution: int) -> "SearchSpace":
        """Merge *_search_space.json files (save_topk_ofa.py) per unit position, keeping first-seen order."""
        merged, family = None, None
        for path in paths:
            with open(path) as f:
                space = json.load(f)
            fam = corpus_family(space)
            if family not in (None, fam) or (merged is not None and len(space) != len(merged)):
                raise ValueError(f"{path}: a {fam} space of {len(space)} units cannot merge with a {family} space")
            family = fam
            merged = merged or [{} for _ in space]  # per position: key -> config, in first-seen order
            for pos, configs in enumerate(space):
                for c in configs:
                    merged[pos].setdefault(_key(c), c)
        candidates = [UnitCandidates(family, u, list(configs.values())) for u, configs in enumerate(merged, start=1)]
        for cand in candidates:
            for config in cand.configs:
                unit_stages(family, cand.unit, config)  # validate every listed unit
        return cls(family, candidates, resolution)

    @property
    def size(self) -> int:
        n = 1
        for c in self.candidates:
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
            units = [cand.sample_other(u, rng) if rng.random() < stage_mutate_prob else u
                     for cand, u in zip(self.candidates, units)]
        return self.build(units)

    def contains(self, arch: Arch) -> bool:
        return arch.family == self.family and all(u in c for c, u in zip(self.candidates, split_into_units(arch)))

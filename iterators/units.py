"""Units: the module subgraphs AutoBuild scores and recombines, one per stage (PN: stages 5 and 6 merged).

A unit of family F at position u (1-based, as in the paper's files) is a block sequence for the stages
``FAMILIES[F].units[u-1]``. Its JSON config is a list of block strings, or for a unit spanning two stages (PN unit 5)
``[[stage-5 blocks], [stage-6 block]]``. Units of one family recombine into whole networks: one unit per position.
"""
from __future__ import annotations

import heapq
import itertools
import json
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from iterators.encoding import N_FEATURES, block_type_index, resolution_feature
from iterators.errors import UserError, reading
from iterators.graphs import GraphSet
from iterators.search_space import EXPANSIONS, FAMILIES, KERNELS, Arch, ArchError, Family, make_arch, parse_block

CHOICES = tuple(itertools.product(EXPANSIONS, KERNELS))  # the 9 (e, k) blocks, choice c = e_index * 3 + k_index


@dataclass(frozen=True)
class UnitGroup:
    """All units of one position and one stage split, as a matrix of block choices."""
    unit: int                   # 1-based position
    stage_lengths: tuple        # blocks per covered stage, e.g. (3,) or PN unit 5's (3, 1)
    choices: np.ndarray         # [n_units, n_blocks] indices into CHOICES

    @property
    def hops(self) -> int:
        return sum(self.stage_lengths) - 1

    def configs(self, fam: Family) -> list:
        names = [fam.block_name(e, k) for e, k in CHOICES]
        out = []
        for row in self.choices:
            blocks = [names[c] for c in row]
            if len(self.stage_lengths) == 1:
                out.append(blocks)
            else:
                splits = np.cumsum(self.stage_lengths)[:-1]
                out.append([list(part) for part in np.split(np.array(blocks), splits)])
        return out


def unit_groups(family: str) -> list[UnitGroup]:
    """Every unit of the family, grouped by position and stage split (each group shares its graph length)."""
    fam = FAMILIES[family]
    groups = []
    for u, stages in enumerate(fam.units, start=1):
        for lengths in itertools.product(*(fam.stage_depths[s] for s in stages)):
            n = sum(lengths)
            grid = np.indices((len(CHOICES),) * n).reshape(n, -1).T  # lexicographic, like itertools.product
            groups.append(UnitGroup(u, tuple(lengths), grid))
    return groups


def count_units(family: str) -> int:
    return sum(len(g.choices) for g in unit_groups(family))


def group_graphs(group: UnitGroup, family: str, resolution: int) -> GraphSet:
    """Sequence graphs of a group's units placed at their stage (layer features restart at 0 in every stage)."""
    fam = FAMILIES[family]
    first_stage = fam.units[group.unit - 1][0]
    stage_col = np.concatenate([[first_stage + i] * n for i, n in enumerate(group.stage_lengths)])
    layer_col = np.concatenate([np.arange(n) for n in group.stage_lengths])
    n_units, n_blocks = group.choices.shape
    x = np.empty((n_units, n_blocks, N_FEATURES), dtype=np.float32)
    x[:, :, 0] = stage_col
    x[:, :, 1] = layer_col
    x[:, :, 2] = block_type_index(fam.block_type)
    x[:, :, 3] = group.choices // len(KERNELS)
    x[:, :, 4] = group.choices % len(KERNELS)
    x[:, :, 5] = resolution_feature(resolution)
    return GraphSet.sequences(torch.from_numpy(x.reshape(-1, N_FEATURES)), torch.full((n_units,), n_blocks))


def unit_blocks(config) -> list[str]:
    """Flatten a unit config (list of blocks, or list of per-stage lists) into its blocks."""
    if config and isinstance(config[0], list):
        return [b for part in config for b in part]
    return list(config)


def unit_stages(family: str, unit: int, config) -> list[list[str]]:
    """A unit config as the per-stage block lists it contributes to a network, validated against the family."""
    fam = FAMILIES[family]
    stages = fam.units[unit - 1]
    parts = config if len(stages) > 1 else [config]
    if len(parts) != len(stages) or not all(isinstance(p, list) for p in parts):
        raise ArchError(f"unit {unit} of {family} covers {len(stages)} stage(s); got config {config!r}")
    for s, part in zip(stages, parts):
        if len(part) not in fam.stage_depths[s]:
            raise ArchError(f"unit {unit}: stage {s + 1} has {len(part)} blocks; {family} allows "
                            f"{'/'.join(map(str, fam.stage_depths[s]))}")
        for block in part:
            if parse_block(block)[0] != fam.block_type:
                raise ArchError(f"unit {unit}: {block!r} is not a {fam.prefix} block")
    return [list(p) for p in parts]


def assemble(family: str, unit_configs: list, resolution: int) -> Arch:
    """One unit config per position -> a validated whole network."""
    fam = FAMILIES[family]
    if len(unit_configs) != len(fam.units):
        raise ArchError(f"{family} networks are made of {len(fam.units)} units, got {len(unit_configs)}")
    config = [stage for u, cfg in enumerate(unit_configs, start=1) for stage in unit_stages(family, u, cfg)]
    return make_arch(config, resolution, family)


def split_into_units(arch: Arch) -> list:
    """Inverse of ``assemble``: a network's unit configs, in order."""
    config = arch.config
    return [config[stages[0]] if len(stages) == 1 else [config[s] for s in stages]
            for stages in FAMILIES[arch.family].units]


def load_unit_corpus(path: str) -> list[dict]:
    """A label_units.py output: a list of {"unit", "config", "hops", "score"}."""
    fix = "give a *_labeled_sgs.json written by label_units.py"
    with reading(path, "unit corpus", fix):
        with open(path) as f:
            corpus = json.load(f)
        if not isinstance(corpus, list) or not corpus or not all(
                isinstance(u, dict) and {"unit", "config", "score"} <= set(u) and isinstance(u["unit"], int)
                and isinstance(u["score"], (int, float)) and math.isfinite(u["score"]) for u in corpus):
            raise UserError(f"{path}: expected a list of {{unit, config, hops, score}} with integer units and "
                            f"finite scores; {fix}")
    return corpus


def top_k_units(corpus: list[dict], ks: list[int]) -> list[list[dict]]:
    """Per unit position (1..U), its k best units by score, best first. ``ks``: one k, or one per unit."""
    positions = sorted({u["unit"] for u in corpus})
    if positions != list(range(1, len(positions) + 1)):
        raise ValueError(f"the unit corpus covers units {positions}; expected 1..{len(positions)}")
    if len(ks) not in (1, len(positions)) or min(ks) < 1:
        raise ValueError(f"give one positive k for all {len(positions)} units or one per unit, got {ks}")
    ks = ks * len(positions) if len(ks) == 1 else ks
    return [sorted((u for u in corpus if u["unit"] == pos), key=lambda u: -u["score"])[:k]
            for pos, k in zip(positions, ks)]


def corpus_family(corpus_or_space) -> str:
    """The family of a unit corpus or a search space, from its first block string."""
    first = corpus_or_space[0]
    config = first["config"] if isinstance(first, dict) else first[0]
    block = unit_blocks(config)[0]
    for fam in FAMILIES.values():
        if parse_block(block)[0] == fam.block_type:
            return fam.name
    raise ArchError(f"no family uses {block!r}")


SORT_ALL_UP_TO = 1 << 22  # spaces up to this many networks are ranked by one vectorised sort, larger ones lazily
FEISTEL_ROUNDS = 6


def rank_networks(scores_per_unit: list[list[float]], seed: int | None = None, start: int = 0,
                  stop: int | None = None) -> np.ndarray:
    """Rows ``start .. stop-1`` of the ranking of every network (one unit per position), as unit indices
    ``[stop - start, n_units]``; only that slice is built, whatever the size of the space.

    Ranked by summed unit score, best first; ties in lexicographic order of the units' ranks within their position
    (their list order when each list is sorted best first). With ``seed`` (>= 0) the networks are shuffled instead,
    by a seeded pseudo-random permutation evaluated at the slice's positions only.
    """
    sizes = [len(s) for s in scores_per_unit]
    total = math.prod(sizes)
    stop = total if stop is None else min(stop, total)
    if start < 0 or stop < 0:
        raise ValueError(f"the slice [{start}, {stop}) must not be negative")
    if start >= stop:
        return np.zeros((0, len(sizes)), dtype=np.int64)
    if seed is not None:
        return _decode(_permute(np.arange(start, stop, dtype=np.uint64), total, seed), sizes)
    # work on each position's units sorted best first; map back to the caller's indices at the end
    by_rank = [np.argsort(-np.asarray(s, dtype=np.float64), kind="stable") for s in scores_per_unit]
    sorted_scores = [np.asarray(s, dtype=np.float64)[r] for s, r in zip(scores_per_unit, by_rank)]
    if total <= SORT_ALL_UP_TO:
        summed = np.zeros(sizes)
        for u, s in enumerate(sorted_scores):
            summed = summed + s.reshape([-1 if v == u else 1 for v in range(len(sizes))])
        flat = np.argsort(-summed.ravel(), kind="stable")[start:stop]
        ranks = np.stack(np.unravel_index(flat, sizes), axis=1)
    else:
        ranks = np.array(list(itertools.islice(_best_first(sorted_scores), start, stop)), dtype=np.int64)
    return np.stack([by_rank[u][ranks[:, u]] for u in range(len(sizes))], axis=1)


def _best_first(sorted_scores: list[np.ndarray]) -> Iterator[tuple[int, ...]]:
    """Every combination of ranks (each position's scores sorted best first) in order of summed score, best first,
    ties in lexicographic order: a best-first walk in which each combination has exactly one parent (its last
    non-zero rank lowered by one), so no visited set is needed and the heap holds O(popped x positions) entries."""
    sizes = [len(s) for s in sorted_scores]
    weights = [math.prod(sizes[u + 1:]) for u in range(len(sizes))]  # mixed radix: flat index = lexicographic order
    lists = [s.tolist() for s in sorted_scores]

    def entry(ranks: tuple[int, ...], last: int):
        summed = 0.0
        for s, r in zip(lists, ranks):  # same order of additions as the vectorised sort: bit-identical sums
            summed = summed + s[r]
        return -summed, sum(w * r for w, r in zip(weights, ranks)), last, ranks

    heap = [entry((0,) * len(sizes), 0)]
    while heap:
        _, _, last, ranks = heapq.heappop(heap)
        yield ranks
        for u in range(last, len(sizes)):
            if ranks[u] + 1 < sizes[u]:
                heapq.heappush(heap, entry(ranks[:u] + (ranks[u] + 1,) + ranks[u + 1:], u))


def _permute(positions: np.ndarray, total: int, seed: int) -> np.ndarray:
    """A seeded pseudo-random bijection of [0, total) evaluated at ``positions``: a balanced Feistel network over the
    smallest even number of bits that covers ``total``, cycle-walked back into range."""
    if total > 1 << 64:
        raise ValueError(f"{total} networks are too many to shuffle (at most 2^64)")
    bits = max(2, (total - 1).bit_length())
    half = (bits + 1) // 2
    mask = np.uint64((1 << half) - 1)
    keys = np.random.SeedSequence(seed).generate_state(FEISTEL_ROUNDS, dtype=np.uint64)

    def feistel(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << np.uint64(half)) | right

    out = feistel(positions)
    outside = out >= np.uint64(total) if total < 1 << 64 else np.zeros(len(out), dtype=bool)
    while outside.any():
        out[outside] = feistel(out[outside])
        outside = out >= np.uint64(total)
    return out


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast 64-bit hash (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _decode(flat: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Flat lexicographic indices -> per-position indices [n, positions]."""
    out = np.empty((len(flat), len(sizes)), dtype=np.int64)
    rest = flat.copy()
    for u in range(len(sizes) - 1, -1, -1):
        out[:, u] = (rest % np.uint64(sizes[u])).astype(np.int64)
        rest //= np.uint64(sizes[u])
    return out

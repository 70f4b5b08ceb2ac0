"""Units: the module subgraphs AutoBuild scores and recombines, one per stage (PN: stages 5 and 6 merged).

A unit of family F at position u (1-based, as in the paper's files) is a block sequence for the stages
``FAMILIES[F].units[u-1]``. Its JSON config is a list of block strings, or for a unit spanning two stages (PN unit 5)
``[[stage-5 blocks], [stage-6 block]]``. Units of one family recombine into whole networks: one unit per position.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from iterators.encoding import N_FEATURES, block_type_index, resolution_feature
from iterators.errors import UserError, reading
from iterators.graphs import GraphSet
from iterators.safe_pickle import restricted_load
from iterators.search_space import (EXPANSIONS, FAMILIES, KERNELS, Arch, ArchError, Family, get_family, make_arch,
                                    parse_block)
from iterators.targets import Target, TargetError

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


def unit_moment_shape(family: str | None) -> tuple[int, int]:
    """(unit positions, depth indices) of the per-(position, depth) target moments that unit scores are mapped onto:
    a unit of n blocks has depth index n - 1. (0, 0) for a format or family without units."""
    if family not in FAMILIES:
        return (0, 0)
    fam = FAMILIES[family]
    return len(fam.units), max(sum(max(fam.stage_depths[s]) for s in stages) for stages in fam.units)


def unit_target_moments(archs: list[Arch], y: np.ndarray, family: str) -> torch.Tensor:
    """[positions, depth indices, 2]: mean and std of the target over networks whose unit u has depth index h.

    Unit scores are shifted onto these distributions, so a unit's score reads in the target's own units. A
    (position, depth) never seen keeps the neutral N(0, 1).
    """
    shape = unit_moment_shape(family)
    moments = torch.stack([torch.zeros(shape), torch.ones(shape)], dim=-1)
    groups: dict[tuple[int, int], list[float]] = {}
    for arch, value in zip(archs, y):
        for unit, hop in enumerate(arch.unit_hops()):
            groups.setdefault((unit, hop), []).append(float(value))
    for (unit, hop), values in groups.items():
        moments[unit, hop] = torch.tensor([np.mean(values), np.std(values)])
    return moments


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


# --- unit corpora: label_units.py's output (JSON) and the original code's *_labeled_sgs.pkl --------------------------

CORPUS_FORMAT = "autobuild_unit_corpus"
SPACE_FORMAT = "autobuild_reduced_space"
FORMAT_VERSION = 1
# metrics whose smaller values are better: a corpus scored on one of them alone keeps its lowest-scored units
COST_METRICS = ("latency", "flops", "params", "n_params")


class _Dropped:
    """Stands in for the non-data objects of the original's pickles (each unit's torch_geometric graph, which the
    toolkit rebuilds from the config): built from anything, keeps nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


# what a labeled_sgs.pkl names besides plain data: PyG's Data and its storage, and torch's tensor rebuilders
_LEGACY_PICKLE_CLASSES = {**{name: _Dropped for name in (
    ("torch_geometric.data.data", "Data"), ("torch_geometric.data.data", "DataEdgeAttr"),
    ("torch_geometric.data.data", "DataTensorAttr"), ("torch_geometric.data.storage", "GlobalStorage"),
    ("torch_geometric.data.storage", "BaseStorage"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch.storage", "_load_from_bytes"), ("torch", "Size"),
    ("torch", "Tensor"), ("torch", "FloatStorage"), ("torch", "LongStorage"))},
    ("collections", "OrderedDict"): collections.OrderedDict}


def _read(path: str, what: str, fix: str):
    """A JSON file, or (``.pkl``) a pickle of the original code, read through the restricted unpickler."""
    with reading(path, what, fix):
        if path.endswith(".pkl"):
            return restricted_load(path, _LEGACY_PICKLE_CLASSES)
        with open(path) as f:
            return json.load(f)


def config_family(config) -> str:
    """The family of a unit config, from its first block string."""
    block = unit_blocks(config)[0]
    for fam in FAMILIES.values():
        if parse_block(block)[0] == fam.block_type:
            return fam.name
    raise ArchError(f"no family uses {block!r}")


def is_cost_target(target: str | None) -> bool:
    """True for a target over cost metrics only (e.g. ``latency_gpu``, ``np.log(flops)``): lower is better."""
    if not target:
        return False
    try:
        names = Target(target).names
    except TargetError:
        return False
    return bool(names) and all(n.startswith(COST_METRICS) for n in names)


@dataclass
class UnitCorpus:
    """Every unit of a family with its score (label_units.py): ``units`` holds {"unit", "config", "hops", "score"}."""
    family: str
    units: list[dict]
    target: str | None = None     # the target of the predictor that scored them, when known
    predictor: str | None = None  # its checkpoint
    path: str | None = None       # the file it was read from

    def at(self, position: int) -> list[dict]:
        return [u for u in self.units if u["unit"] == position]

    def save(self, path: str) -> str:
        """JSON: a header object with one unit per line, written atomically."""
        header = {"format": CORPUS_FORMAT, "version": FORMAT_VERSION, "family": self.family, "target": self.target,
                  "predictor": self.predictor}
        with open(path + ".tmp", "w") as f:
            f.write(json.dumps(header)[:-1] + ', "units": [\n')
            f.write(",\n".join(json.dumps({k: u[k] for k in ("unit", "config", "hops", "score")}) for u in self.units))
            f.write("\n]}\n")
        os.replace(path + ".tmp", path)
        return path


def load_unit_corpus(path: str) -> UnitCorpus:
    """A unit corpus: label_units.py's JSON (or the plain list it wrote before), or the original's pickle."""
    fix = "give a *_labeled_sgs.json written by label_units.py (or the original's *_labeled_sgs.pkl)"
    data = _read(path, "unit corpus", fix)
    meta = data if isinstance(data, dict) else {}
    units = meta.get("units") if meta else data
    with reading(path, "unit corpus", fix):
        if not isinstance(units, list) or not units or not all(
                isinstance(u, dict) and {"unit", "config", "score"} <= set(u) and isinstance(u["unit"], int)
                and isinstance(u["score"], (int, float)) and math.isfinite(u["score"]) for u in units):
            raise ValueError("expected a list of {unit, config, hops, score} with integer units and finite scores")
        family = meta.get("family") or config_family(units[0]["config"])
        units = [{"unit": u["unit"], "config": u["config"], "score": float(u["score"]),
                  "hops": int(u.get("hops", len(unit_blocks(u["config"])) - 1))} for u in units]
        positions = sorted({u["unit"] for u in units})
        if positions != list(range(1, len(get_family(family).units) + 1)):
            raise ValueError(f"it covers unit positions {positions}; {family} has 1..{len(FAMILIES[family].units)}")
        for u in units:
            unit_stages(family, u["unit"], u["config"])
    return UnitCorpus(family, units, meta.get("target"), meta.get("predictor"), path)


# --- reduced spaces: per unit position, the units a network may use ------------------------------------------------

def _config_key(config) -> str:
    return json.dumps(config)


@dataclass
class ReducedSpace:
    """The search space AutoBuild builds: per unit position, a list of candidate units.

    ``candidates[p]`` holds position p+1's units as {"config", "score", "source"}: the score the unit has in the corpus
    it was picked from (None when unknown) and that corpus's index in ``sources`` (how it was picked: file, target,
    which end, k). Networks are every combination of one candidate per position.
    """
    family: str
    candidates: list[list[dict]]
    sources: list[dict] = field(default_factory=list)

    def __post_init__(self):
        fam = get_family(self.family)
        if len(self.candidates) != len(fam.units) or not all(self.candidates):
            raise ArchError(f"a {self.family} reduced space needs a non-empty candidate list for each of its "
                            f"{len(fam.units)} unit positions, got {[len(c) for c in self.candidates]}")
        for position, cands in enumerate(self.candidates, start=1):
            for c in cands:
                unit_stages(self.family, position, c["config"])

    @classmethod
    def top_k(cls, corpus: UnitCorpus, ks: list[int], keep: str = "auto") -> "ReducedSpace":
        """The k best units of every position: the highest-scored, or the lowest for a cost target (``keep="auto"``).

        ``ks``: one k for every position, or one per position.
        """
        n = len(FAMILIES[corpus.family].units)
        if len(ks) not in (1, n) or min(ks) < 1:
            raise UserError(f"-k {' '.join(map(str, ks))}: give one k (at least 1) for all {n} unit positions, or one "
                            "per position")
        if keep not in ("auto", "highest", "lowest"):
            raise UserError(f"-keep: choose auto, highest or lowest, not {keep!r}")
        ks = list(ks) * n if len(ks) == 1 else list(ks)
        lowest = keep == "lowest" or (keep == "auto" and is_cost_target(corpus.target))
        source = {"corpus": os.path.basename(corpus.path or ""), "target": corpus.target,
                  "keep": "lowest" if lowest else "highest", "k": ks}
        candidates = [[{"config": u["config"], "score": u["score"], "source": 0}
                       for u in sorted(corpus.at(p), key=lambda u: u["score"], reverse=not lowest)[:k]]
                      for p, k in enumerate(ks, start=1)]
        return cls(corpus.family, candidates, [source])

    @classmethod
    def merge(cls, spaces: list["ReducedSpace"]) -> "ReducedSpace":
        """Union per position, in first-seen order; a unit listed by several spaces is kept once (its first entry)."""
        families = {s.family for s in spaces}
        if len(families) != 1:
            raise UserError(f"cannot merge reduced spaces of different families: {', '.join(sorted(families))}")
        merged: list[dict[str, dict]] = [{} for _ in spaces[0].candidates]
        sources = []
        for space in spaces:
            for position, cands in enumerate(space.candidates):
                for c in cands:
                    merged[position].setdefault(_config_key(c["config"]), {**c, "source": len(sources) + c["source"]})
            sources += space.sources
        return cls(spaces[0].family, [list(m.values()) for m in merged], sources)

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.candidates]

    @property
    def size(self) -> int:
        return math.prod(self.sizes)

    def configs(self) -> list[list]:
        return [[c["config"] for c in cands] for cands in self.candidates]

    def scores(self) -> list[list[float]]:
        """Per position, the candidates' scores; only meaningful for a space picked from one corpus."""
        if len(self.sources) > 1 or any(c["score"] is None for cands in self.candidates for c in cands):
            raise UserError("networks of a reduced space are ordered by summed unit score only when all its units "
                            "come from one scored corpus")
        return [[c["score"] for c in cands] for cands in self.candidates]

    def network(self, row, resolution: int) -> Arch:
        """The network that takes candidate ``row[p]`` at every position p."""
        return assemble(self.family, [self.candidates[p][i]["config"] for p, i in enumerate(row)], resolution)

    def save(self, path: str) -> str:
        """JSON, one position per line, written atomically."""
        header = {"format": SPACE_FORMAT, "version": FORMAT_VERSION, "family": self.family, "sources": self.sources}
        with open(path + ".tmp", "w") as f:
            f.write(json.dumps(header)[:-1] + ', "candidates": [\n')
            f.write(",\n".join(json.dumps(cands) for cands in self.candidates))
            f.write("\n]}\n")
        os.replace(path + ".tmp", path)
        return path

    @classmethod
    def load(cls, path: str) -> "ReducedSpace":
        """A reduced-space file: save_topk_ofa.py's JSON (or the plain list of config lists it wrote before), or the
        original's *_search_space.pkl (a list, per position, of unit configs)."""
        fix = "give a *_search_space.json written by save_topk_ofa.py (or the original's *_search_space.pkl)"
        data = _read(path, "reduced search space", fix)
        with reading(path, "reduced search space", fix):
            if isinstance(data, dict):
                if data.get("format") != SPACE_FORMAT:
                    raise ValueError(f"its format is {data.get('format')!r}, not {SPACE_FORMAT!r}")
                return cls(data["family"], data["candidates"], data.get("sources", []))
            if not isinstance(data, list) or not data or not all(isinstance(p, list) and p for p in data):
                raise ValueError("expected a list, per unit position, of unit configs")
            source = {"corpus": os.path.basename(path), "target": None, "keep": None, "k": [len(p) for p in data]}
            return cls(config_family(data[0][0]), [[{"config": c, "score": None, "source": 0} for c in p]
                                                   for p in data], [source])


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

"""The OFA search spaces: one source of truth for their choices, and one parser/validator for architectures.

An architecture is a resolution plus, per stage, a list of blocks; a block is an MBConv with an expansion ratio e and
a kernel size k, written ``mbconv{t}_e{e}_k{k}`` (t = 3 for OFA-MobileNetV3, 2 for OFA-ProxylessNAS).
Stages and blocks are numbered from 1 in error messages and from 0 in code.
"""
from __future__ import annotations

import argparse
import math
import random
import re
from dataclasses import dataclass

EXPANSIONS = (3, 4, 6)
KERNELS = (3, 5, 7)
RESOLUTIONS = tuple(range(128, 225, 4))  # OFA's elastic input sizes
PAPER_RESOLUTIONS = (192, 208, 224)
OFA_SLOTS_PER_STAGE = 4  # OFA's ks/e lists reserve 4 slots for every elastic stage

_BLOCK_RE = re.compile(r"^mbconv(\d+)_e(\d+)_k(\d+)$")


class ArchError(ValueError):
    """An architecture that does not belong to its search space."""


@dataclass(frozen=True)
class Family:
    name: str
    block_type: int  # the t of mbconv{t}
    stage_depths: tuple[tuple[int, ...], ...]  # allowed number of blocks per stage
    description: str
    # the stages each unit covers; a fixed one-block stage is merged into the unit before it
    units: tuple[tuple[int, ...], ...]

    @property
    def n_stages(self) -> int:
        return len(self.stage_depths)

    @property
    def prefix(self) -> str:
        return f"mbconv{self.block_type}"

    @property
    def n_ofa_slots(self) -> int:
        return sum(OFA_SLOTS_PER_STAGE if max(d) > 1 else 1 for d in self.stage_depths)

    def block_name(self, e: int, k: int) -> str:
        return f"{self.prefix}_e{e}_k{k}"


FAMILIES = {
    "ofa_mbv3": Family("ofa_mbv3", 3, ((2, 3, 4),) * 5, "OFA-MobileNetV3 (w1.2)",
                       ((0,), (1,), (2,), (3,), (4,))),
    "ofa_pn": Family("ofa_pn", 2, ((2, 3, 4),) * 5 + ((1,),), "OFA-ProxylessNAS (w1.3)",
                     ((0,), (1,), (2,), (3,), (4, 5))),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ArchError(f"unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def parse_block(block: str) -> tuple[int, int, int]:
    """'mbconv3_e4_k5' -> (3, 4, 5) = (block type, expansion, kernel)."""
    m = _BLOCK_RE.match(block) if isinstance(block, str) else None
    if m is None:
        raise ArchError(f"{block!r} is not a block string of the form mbconv<t>_e<e>_k<k>")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


@dataclass(frozen=True)
class Arch:
    """A validated architecture: ``stages[s][b] = (e, k)``."""
    family: str
    resolution: int
    stages: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def config(self) -> list[list[str]]:
        fam = FAMILIES[self.family]
        return [[fam.block_name(e, k) for e, k in stage] for stage in self.stages]

    @property
    def depths(self) -> list[int]:
        return [len(s) for s in self.stages]

    @property
    def n_blocks(self) -> int:
        return sum(self.depths)

    def to_json(self) -> dict:
        return {"resolution": self.resolution, "config": self.config}

    def unit_hops(self) -> list[int]:
        """Per unit, its depth index: the number of its blocks - 1 (the hop whose embedding scores it)."""
        return [sum(len(self.stages[s]) for s in unit) - 1 for unit in FAMILIES[self.family].units]

    def key(self) -> str:
        """A stable, human-readable identity, e.g. for database rows."""
        return f"{self.family}:{self.resolution}:" + "|".join(
            ",".join(f"e{e}k{k}" for e, k in stage) for stage in self.stages)


def describe(config) -> str:
    """Blocks as ``e<e>k<k>``, stages separated by `` | ``, e.g. ``e4k5 e3k3 | e6k7 e6k7 | ...``: the one way the
    toolkit prints an architecture (an Arch or its config) or a unit (a list of blocks, or of per-stage lists)."""
    if isinstance(config, Arch):
        config = config.config
    stages = config if config and isinstance(config[0], (list, tuple)) else [config]
    return " | ".join(" ".join("e{1}k{2}".format(*parse_block(b)) for b in stage) for stage in stages)


def validate_resolution(resolution) -> int:
    if (isinstance(resolution, bool) or not isinstance(resolution, (int, float)) or not math.isfinite(resolution)
            or int(resolution) != resolution):
        raise ArchError(f"resolution must be an integer, got {resolution!r}")
    resolution = int(resolution)
    if resolution not in RESOLUTIONS:
        raise ArchError(f"resolution {resolution} is outside OFA's elastic range "
                        f"({RESOLUTIONS[0]}-{RESOLUTIONS[-1]} in steps of 4)")
    return resolution


def resolution_flag(text: str) -> int:
    """argparse ``type`` of a resolution flag: a bad value becomes the parser's one-line error naming the flag."""
    try:
        return validate_resolution(int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err) if isinstance(err, ArchError) else f"{text!r} is not an integer")


def infer_family(config) -> str:
    """The family whose block prefix the first block of ``config`` uses."""
    try:
        block_type = parse_block(config[0][0])[0]
    except (TypeError, IndexError, KeyError):
        raise ArchError("config must be a non-empty list of stages, each a list of block strings") from None
    for fam in FAMILIES.values():
        if fam.block_type == block_type:
            return fam.name
    raise ArchError(f"no family uses blocks of type mbconv{block_type}")


def make_arch(config, resolution, family: str | None = None) -> Arch:
    """Parse and validate ``config`` (a list of stages, each a list of block strings)."""
    family = family or infer_family(config)
    fam = get_family(family)
    resolution = validate_resolution(resolution)
    if not isinstance(config, (list, tuple)) or len(config) != fam.n_stages:
        n = len(config) if isinstance(config, (list, tuple)) else "no"
        raise ArchError(f"{fam.description} has {fam.n_stages} stages, the config has {n}")
    stages = []
    for s, stage in enumerate(config, start=1):
        if not isinstance(stage, (list, tuple)) or len(stage) not in fam.stage_depths[s - 1]:
            n = len(stage) if isinstance(stage, (list, tuple)) else "no list of"
            raise ArchError(f"stage {s} has {n} blocks; {fam.name} allows "
                            f"{'/'.join(map(str, fam.stage_depths[s - 1]))}")
        blocks = []
        for b, block in enumerate(stage, start=1):
            try:
                t, e, k = parse_block(block)
            except ArchError as err:
                raise ArchError(f"stage {s} block {b}: {err}") from None
            if t != fam.block_type:
                raise ArchError(f"stage {s} block {b}: {block!r} is not a {fam.prefix} block of {fam.name}")
            if e not in EXPANSIONS:
                raise ArchError(f"stage {s} block {b}: expansion {e} not in {EXPANSIONS}")
            if k not in KERNELS:
                raise ArchError(f"stage {s} block {b}: kernel {k} not in {KERNELS}")
            blocks.append((e, k))
        stages.append(tuple(blocks))
    return Arch(fam.name, resolution, tuple(stages))


def arch_from_json(entry: dict, family: str | None = None) -> Arch:
    """``{"resolution": 224, "config": [[...], ...]}`` -> Arch."""
    if not isinstance(entry, dict) or "config" not in entry or "resolution" not in entry:
        raise ArchError('an architecture entry needs the keys "resolution" and "config"')
    return make_arch(entry["config"], entry["resolution"], family)


def random_arch(family: str, rng: random.Random, resolutions=PAPER_RESOLUTIONS) -> Arch:
    fam = get_family(family)
    stages = tuple(tuple((rng.choice(EXPANSIONS), rng.choice(KERNELS)) for _ in range(rng.choice(depths)))
                   for depths in fam.stage_depths)
    return Arch(family, rng.choice(resolutions), stages)


# --- OFA's own notation: {"ks": [...], "e": [...], "d": [...], "r": resolution} -------------------------------------

def _slot_starts(fam: Family) -> list[int]:
    starts, pos = [], 0
    for depths in fam.stage_depths:
        starts.append(pos)
        pos += OFA_SLOTS_PER_STAGE if max(depths) > 1 else 1
    return starts


def to_ofa(arch: Arch) -> dict:
    """Arch -> OFA's subnet notation; slots past a stage's depth are filled with the smallest choices."""
    fam = FAMILIES[arch.family]
    ks = [KERNELS[0]] * fam.n_ofa_slots
    es = [EXPANSIONS[0]] * fam.n_ofa_slots
    for start, stage in zip(_slot_starts(fam), arch.stages):
        for i, (e, k) in enumerate(stage):
            ks[start + i], es[start + i] = k, e
    return {"ks": ks, "e": es, "d": arch.depths, "r": arch.resolution}


def from_ofa(ofa: dict, family: str | None = None) -> Arch:
    """OFA's subnet notation -> Arch. The family follows from the slot count (20: MBv3, 21: PN) unless given."""
    try:
        ks, es, ds, r = list(ofa["ks"]), list(ofa["e"]), list(ofa["d"]), ofa["r"]
    except (KeyError, TypeError):
        raise ArchError('OFA notation needs the keys "ks", "e", "d" and "r"') from None
    if family is None:
        by_slots = {f.n_ofa_slots: f.name for f in FAMILIES.values()}
        if len(ks) not in by_slots:
            raise ArchError(f"OFA notation with {len(ks)} kernel slots matches no family "
                            f"({', '.join(f'{n}: {f}' for n, f in by_slots.items())})")
        family = by_slots[len(ks)]
    fam = get_family(family)
    if len(ks) != fam.n_ofa_slots or len(es) != fam.n_ofa_slots:
        raise ArchError(f"{fam.name} needs {fam.n_ofa_slots} ks and e slots, got {len(ks)} and {len(es)}")
    if len(ds) == fam.n_stages - 1 and fam.stage_depths[-1] == (1,):
        ds = ds + [1]  # OFA tools often omit the fixed last stage of ProxylessNAS
    if len(ds) != fam.n_stages:
        raise ArchError(f"{fam.name} needs {fam.n_stages} stage depths in d, got {len(ds)}")
    # OFA clips the depth of a fixed one-block stage to 1 whatever d says
    ds = [1 if depths == (1,) else d for d, depths in zip(ds, fam.stage_depths)]
    config = [[fam.block_name(es[start + i], ks[start + i]) for i in range(d)]
              for start, d in zip(_slot_starts(fam), ds)]
    return make_arch(config, r, fam.name)

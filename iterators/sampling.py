"""Architectures sampled to cover a search space's whole cost range, not only the middle that uniform sampling fills.

Uniform sampling draws every choice independently, so a sum over many choices (FLOPs, latency) crowds around its
middle: of 1,000 uniform OFA-MBv3 networks hardly any comes near the smallest or the largest network of the space.
``spread_archs`` gives the i-th network a size level t in [0, 1] and draws each of its choices (resolution, stage
depths, expansions, kernels) from a distribution tilted towards the small options below t = 1/2 and towards the large
ones above, uniform at t = 1/2:

    p(option j of K) ~ exp(tilt * (2t - 1) * (2j / (K - 1) - 1))        options sorted from small to large

The levels follow a jittered van der Corput sequence, so every prefix of the list is itself spread over [0, 1] (a run
cut short by a time budget still covers the range), and the list is prefix-stable: ``spread_archs(.., n)[:m] ==
spread_archs(.., m)``, so a longer run extends a shorter one.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

from iterators.search_space import EXPANSIONS, KERNELS, RESOLUTIONS, Arch, get_family

DEFAULT_TILT = 2.5


def van_der_corput(i: int) -> float:
    """The base-2 radical inverse of i: 0, 1/2, 1/4, 3/4, 1/8, ... (any prefix of length m hits every 1/m-bin)."""
    value, scale = 0.0, 0.5
    while i:
        value += scale * (i & 1)
        i >>= 1
        scale /= 2
    return value


def tilted_choice(options: Sequence, level: float, tilt: float, rng: random.Random):
    """One of ``options`` (sorted small to large), tilted towards the large ones as ``level`` goes from 0 to 1."""
    if len(options) == 1:
        return options[0]
    weights = [math.exp(tilt * (2 * level - 1) * (2 * j / (len(options) - 1) - 1)) for j in range(len(options))]
    return rng.choices(options, weights)[0]


def tilted_arch(family: str, level: float, rng: random.Random, resolutions: Sequence[int] = RESOLUTIONS,
                tilt: float = DEFAULT_TILT) -> Arch:
    fam = get_family(family)
    stages = tuple(tuple((tilted_choice(EXPANSIONS, level, tilt, rng), tilted_choice(KERNELS, level, tilt, rng))
                         for _ in range(tilted_choice(sorted(depths), level, tilt, rng)))
                   for depths in fam.stage_depths)
    return Arch(fam.name, tilted_choice(sorted(resolutions), level, tilt, rng), stages)


def spread_archs(family: str, n: int, seed: int = 0, resolutions: Sequence[int] = RESOLUTIONS,
                 tilt: float = DEFAULT_TILT) -> list[Arch]:
    """``n`` distinct architectures whose size levels spread over [0, 1] (see the module docstring)."""
    space_size = len(resolutions) * math.prod(
        sum((len(EXPANSIONS) * len(KERNELS)) ** d for d in depths) for depths in get_family(family).stage_depths)
    if n > space_size:
        raise ValueError(f"{family} has only {space_size} architectures at these resolutions, {n} were asked for")
    seen, archs = set(), []
    for i in range(n):
        rng = random.Random(f"{seed}-{family}-{i}")  # str seeds are stable across runs and Python versions
        level = (van_der_corput(i + 1) + rng.random() / (i + 1)) % 1.0  # jittered within its bin
        arch = tilted_arch(family, level, rng, resolutions, tilt)
        while arch.key() in seen:  # a repeat (likely only at the extremes): draw again at the same level
            arch = tilted_arch(family, level, rng, resolutions, tilt)
        seen.add(arch.key())
        archs.append(arch)
    return archs

"""Pareto bookkeeping: non-dominated sorting and the 2-D hypervolume.

Objectives are given as rows of a [n, m] array with a direction per column: +1 to maximise, -1 to minimise.
"""
from __future__ import annotations

import numpy as np


def _as_minimised(points, directions) -> np.ndarray:
    directions = np.asarray(directions, dtype=float)
    return -np.asarray(points, dtype=float).reshape(-1, len(directions)) * directions


def non_dominated_sort(points, directions) -> list[list[int]]:
    """Fronts of indices: front 0 is non-dominated, front 1 is non-dominated once front 0 is removed, ...

    Duplicated points share a front (neither dominates the other).
    """
    f = _as_minimised(points, directions)
    n = len(f)
    if n == 0:
        return []
    # dominated_by[i, j]: j dominates i
    le = np.all(f[None, :, :] <= f[:, None, :], axis=2)
    lt = np.any(f[None, :, :] < f[:, None, :], axis=2)
    dominated_by = le & lt
    remaining = np.ones(n, dtype=bool)
    fronts = []
    while remaining.any():
        front = remaining & ~np.any(dominated_by[:, remaining], axis=1)
        fronts.append(np.flatnonzero(front).tolist())
        remaining &= ~front
    return fronts


def front_2d(points, directions) -> list[int]:
    """Indices (ascending) of the non-dominated points of a 2-D set in O(n log n): ``non_dominated_sort(...)[0]``
    for sets too big for its n x n comparison; identical points share the front."""
    f = _as_minimised(points, directions)
    front, last = [], None
    for i in np.lexsort((f[:, 1], f[:, 0])):
        if last is None or f[i, 1] < last[1] or (f[i] == last).all():
            front.append(int(i))
            last = f[i]
    return sorted(front)


def hypervolume_2d(points, reference, directions) -> float:
    """Area dominated by ``points`` and bounded by ``reference``; points not better than it add nothing.

    In minimised coordinates the area is the union of the boxes [x, r_x] x [y, r_y]; sweeping the points by x, each
    adds the strip between its y and the lowest y seen so far.
    """
    f = _as_minimised(points, directions)
    r = _as_minimised([reference], directions)[0]
    f = f[np.all(f < r, axis=1)]
    area, lowest_y = 0.0, r[1]
    for x, y in f[np.lexsort((f[:, 1], f[:, 0]))]:
        if y < lowest_y:
            area += (r[0] - x) * (lowest_y - y)
            lowest_y = y
    return float(area)

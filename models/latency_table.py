"""Per-block latency lookup tables: the additive latency model of BINAS and aw_nas.

    latency(arch) = base[r] + sum over the blocks the depths keep of block[r][stage, position, e, k]

``base`` covers what every network runs (the stem with OFA's fixed first block, the head and classifier). A table is
either measured (every OFA block timed alone at its input shape: evaluation/block_latency.py) or fitted to any
latency cache by ridge least squares over the block indicators of iterators/block_indicators.py, either per
resolution, or with the resolution modelled (``scaled``: every term scales with (r / 224)^2 like the MACs;
``affine``, the default: each block has a fixed part too, such as a kernel launch), which holds for every resolution
between the least and greatest fitted. A table is a small JSON file (``save``/``load``), enough to predict:

    table = LatencyTable.load("l1_models/ofa_mbv3_cpu_latency_table.json")
    table.predict(archs)                       # [n] ms
    base, costs = table.costs(224)             # the integer program's latency row over the indicator columns
    table.block(224, stage=0, position=1, e=4, k=5)
"""
from __future__ import annotations

import json
import os

import numpy as np

from iterators.block_indicators import CHOICES, N_CHOICES, layout
from iterators.errors import UserError
from iterators.search_space import RESOLUTIONS, Arch
from models.ridge import ridge_primal

TABLE_VERSION = 1
FIT_MODES = ("affine", "scaled", "per_resolution")
REFERENCE_RESOLUTION = 224


class LatencyTableError(UserError, ValueError):
    """A latency table that cannot serve: a missing or malformed file, or a resolution it does not cover."""


class LatencyTable:
    """``entries[r] = (base, blocks)``: blocks [n_slots * 9] in the block-column order of the family's layout."""

    def __init__(self, family: str, device: str, entries: dict[int, tuple[float, np.ndarray]], unit: str = "ms",
                 source: str = "", details: dict | None = None):
        self.family, self.device, self.unit, self.source = family, device, unit, source
        self.layout = layout(family)
        self.entries = {int(r): (float(base), np.asarray(blocks, dtype=np.float64)) for r, (base, blocks)
                        in entries.items()}
        for r, (_, blocks) in self.entries.items():
            if blocks.shape != (self.layout.n_block_columns,):
                raise LatencyTableError(f"resolution {r}: {blocks.shape[0]} block entries, {family} needs "
                                        f"{self.layout.n_block_columns}")
        self.details = details or {}

    @property
    def resolutions(self) -> list[int]:
        return sorted(self.entries)

    def _entry(self, resolution: int) -> tuple[float, np.ndarray]:
        if resolution not in self.entries:
            raise LatencyTableError(f"the {self.device} latency table of {self.family} has no entry for resolution "
                                    f"{resolution}; it covers {_ranges(self.resolutions)}")
        return self.entries[resolution]

    def block(self, resolution: int, stage: int, position: int, e: int, k: int) -> float:
        """Latency of one block (0-based stage and position) with expansion e and kernel k at ``resolution``."""
        return float(self._entry(resolution)[1][self.layout.block_column(stage, position, CHOICES.index((e, k)))])

    def costs(self, resolution: int) -> tuple[float, np.ndarray]:
        """(base, cost of every indicator column): latency = base + costs @ u[:n_indicators]; depth columns cost 0."""
        base, blocks = self._entry(resolution)
        return base, np.concatenate([blocks, np.zeros(self.layout.n_indicators - len(blocks))])

    def predict_features(self, u: np.ndarray, resolutions) -> np.ndarray:
        """Latency of indicator vectors ``u`` [n, >= n_block_columns] at ``resolutions`` [n]."""
        u = np.asarray(u)[:, :self.layout.n_block_columns]
        resolutions = np.asarray(resolutions, dtype=int)
        out = np.empty(len(u))
        for r in np.unique(resolutions):
            base, blocks = self._entry(int(r))
            rows = resolutions == r
            out[rows] = base + u[rows] @ blocks
        return out

    def predict(self, archs: list[Arch]) -> np.ndarray:
        if not archs:
            return np.zeros(0)
        return self.predict_features(self.layout.encode(archs), [a.resolution for a in archs])

    def fastest(self, resolution: int) -> float:
        """Latency of the fastest network at ``resolution``: per stage the best depth with the cheapest blocks."""
        base, blocks = self._entry(resolution)
        lay, total = self.layout, base
        for s in range(lay.n_stages):
            cheapest = [blocks[lay.block_column(s, b, 0):lay.block_column(s, b, 0) + N_CHOICES].min()
                        for b in range(lay.max_depths[s])]
            total += min(sum(cheapest[:d]) for d in lay.depth_options[s])
        return float(total)

    # --- fitting ------------------------------------------------------------------------------------------------

    @classmethod
    def fit(cls, archs: list[Arch], latency: np.ndarray, device: str, mode: str = "affine",
            lam: float | None = None, source: str = "") -> "LatencyTable":
        """Least squares (ridge, penalty by leave-one-out error unless ``lam``) of ``latency`` on the blocks of
        ``archs``. ``scaled``/``affine``: one table whose terms scale with (r / 224)^2 (affine: plus a fixed part per
        block), valid at every OFA resolution in the fitted range (``_fit_scaled``); ``per_resolution``: an
        independent table for every resolution present in ``archs``."""
        if not archs:
            raise LatencyTableError("no architectures to fit a latency table on")
        family = archs[0].family
        if any(a.family != family for a in archs):
            raise LatencyTableError("a latency table is fitted on architectures of one family")
        lay = layout(family)
        x = lay.encode(archs)[:, :lay.n_block_columns]
        latency = np.asarray(latency, dtype=np.float64)
        res = np.array([a.resolution for a in archs])
        if mode == "per_resolution":
            entries, lams = {}, {}
            for r in np.unique(res):
                sol = ridge_primal(x[res == r], latency[res == r], lam)
                entries[int(r)] = (sol.intercept, sol.coef)
                lams[int(r)] = sol.lam
            details = {"mode": mode, "ridge_lambda": lams, "n_fit": len(archs)}
        elif mode in ("scaled", "affine"):
            entries, details = _fit_scaled(x, res, latency, lam, affine=mode == "affine")
            details["n_fit"] = len(archs)
        else:
            raise LatencyTableError(f"unknown fit mode {mode!r}; choose one of {', '.join(FIT_MODES)}")
        return cls(family, device, entries, "ms", source, details)

    # --- files --------------------------------------------------------------------------------------------------

    def to_json(self) -> dict:
        lay = self.layout
        return {"latency_table": TABLE_VERSION, "family": self.family, "device": self.device, "unit": self.unit,
                "source": self.source, "details": self.details,
                "layout": "blocks[stage][position] = 9 values for " + ", ".join(f"e{e}k{k}" for e, k in CHOICES),
                "resolutions": {str(r): {"base": base, "blocks": [
                    [blocks[lay.block_column(s, b, 0):lay.block_column(s, b, 0) + N_CHOICES].tolist()
                     for b in range(lay.max_depths[s])] for s in range(lay.n_stages)]}
                    for r, (base, blocks) in sorted(self.entries.items())}}

    def save(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(self.to_json(), f, indent=1)
        os.replace(path + ".tmp", path)
        return path

    @classmethod
    def load(cls, path: str) -> "LatencyTable":
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise LatencyTableError(f"no latency table at {path}") from None
        except json.JSONDecodeError as err:
            raise LatencyTableError(f"{path}: not JSON ({err})") from None
        if not isinstance(data, dict) or data.get("latency_table") != TABLE_VERSION:
            raise LatencyTableError(f"{path}: not a latency table of version {TABLE_VERSION}")
        try:
            entries = {int(r): (e["base"], np.concatenate([np.ravel(stage) for stage in e["blocks"]]))
                       for r, e in data["resolutions"].items()}
            return cls(data["family"], data["device"], entries, data.get("unit", "ms"), data.get("source", ""),
                       data.get("details"))
        except (KeyError, TypeError, ValueError) as err:
            raise LatencyTableError(f"{path}: malformed latency table ({err})") from None


def _fit_scaled(x: np.ndarray, res: np.ndarray, latency: np.ndarray, lam: float | None, affine: bool
                ) -> tuple[dict, dict]:
    """scaled: latency ~ c0 + (c1 + sum_j t_j x_j) q with q = (r / 224)^2, a constant plus a head and blocks that
    scale with the pixels; affine: every block also has a fixed part, t_j = a_j + b_j q (launch overheads, which
    dominate small GPU batches). Materialised for every OFA resolution between the least and the greatest fitted."""
    q = (res / REFERENCE_RESOLUTION) ** 2
    n = x.shape[1]
    sol = ridge_primal(np.column_stack([x * q[:, None], q] + ([x] if affine else [])), latency, lam)
    scaled, c1, c0 = sol.coef[:n], sol.coef[n], sol.intercept
    fixed = sol.coef[n + 1:] if affine else np.zeros(n)
    entries = {r: (c0 + c1 * (r / REFERENCE_RESOLUTION) ** 2, fixed + scaled * (r / REFERENCE_RESOLUTION) ** 2)
               for r in RESOLUTIONS if res.min() <= r <= res.max()}  # interpolate, never extrapolate
    return entries, {"mode": "affine" if affine else "scaled", "ridge_lambda": sol.lam, "constant_ms": c0,
                     "scaled_base_ms": c1, "fitted_resolutions": sorted(int(r) for r in np.unique(res))}


def _ranges(values: list[int]) -> str:
    if len(values) > 3 and all(b - a == 4 for a, b in zip(values, values[1:])):
        return f"{values[0]}-{values[-1]} in steps of 4"
    return ", ".join(map(str, values))

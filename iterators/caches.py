"""Architecture caches: the toolkit's own inspectable format and the published AutoBuild pickles.

Own format (``cache/<family>_<format>_cache.jsonl.gz``): gzipped JSON lines. Line 1 is a header::

    {"autobuild_cache": 1, "family": "ofa_mbv3", "format": "custom",
     "metrics": {"acc": {"unit": "0-1", "source": "..."}, ...}, "notes": "..."}

and every further line one architecture with its metrics::

    {"resolution": 224, "config": [["mbconv3_e4_k5", ...], ...], "acc": 0.77, "latency_cpu": 12.3, ...}

Published format (``cache/<family>_<format>_cache.pkl``): a pickled list of dicts with ``'original config'`` =
``(resolution, config)`` and metric keys; read through the restricted unpickler (plain data only).
"""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field

from iterators.errors import UserError, reading
from iterators.paths import CACHE_DIR
from iterators.safe_pickle import restricted_load
from iterators.search_space import Arch, FAMILIES, arch_from_json, from_ofa, make_arch

CACHE_VERSION = 1
ARCH_KEYS = ("resolution", "config", "graph")
GRAPH_FORMATS = ("custom", "onnx_ir")
FIX = "give a cache written by make_demo_caches.py, a published AutoBuild .pkl or an OFA-notation .json"


class CacheError(UserError, ValueError):
    """A cache file that cannot be used: one line naming the file, what is wrong and what to do."""


@dataclass
class Cache:
    family: str
    archs: list[Arch | None]      # None for a network outside the OFA spaces (onnx_ir caches)
    entries: list[dict]           # metrics of archs[i], by name
    header: dict = field(default_factory=dict)
    graphs: list[dict] | None = None  # onnx_ir caches: {"x", "edges", "op_types"} per entry (iterators/onnx_ir.py)

    @property
    def metrics(self) -> set[str]:
        names = set(self.header.get("metrics", {}))
        for e in self.entries:
            names.update(e)
        return names

    def __len__(self) -> int:
        return len(self.archs)


def base_family(name: str) -> str:
    """'ofa_mbv3_latency_cpu' (a published cache/checkpoint stem) -> 'ofa_mbv3'."""
    for fam in sorted(FAMILIES, key=len, reverse=True):
        if name == fam or name.startswith(fam + "_"):
            return fam
    raise CacheError(f"{name!r} names no known family ({', '.join(FAMILIES)})")


def write_cache(path: str, family: str, archs: list[Arch | None], entries: list[dict], metrics: dict,
                notes: str = "", graph_format: str = "custom", extra_header: dict | None = None,
                graphs: list[dict] | None = None) -> None:
    """Write the own format atomically (a crash never leaves a half-written cache behind)."""
    header = {"autobuild_cache": CACHE_VERSION, "family": family, "format": graph_format,
              "metrics": metrics, "count": len(archs), "notes": notes, **(extra_header or {})}
    tmp = path + ".tmp"
    with gzip.GzipFile(tmp, "wb", mtime=0) as raw:
        raw.write((json.dumps(header) + "\n").encode())
        for i, (arch, metric_values) in enumerate(zip(archs, entries)):
            row = {**(arch.to_json() if arch else {}), **({"graph": graphs[i]} if graphs else {}), **metric_values}
            raw.write((json.dumps(row) + "\n").encode())
    os.replace(tmp, path)


def _metrics(row: dict, where: str) -> dict:
    """The metric values of a cache row (numbers; null for a missing value), without the architecture keys."""
    metrics = {k: v for k, v in row.items() if k not in ARCH_KEYS}
    for name, value in metrics.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CacheError(f"{where}: metric {name!r} is {value!r}, not a number; {FIX}")
    return metrics


def read_own_cache(path: str, family: str | None = None) -> Cache:
    """The toolkit's .jsonl.gz format; with ``family``, a cache whose header names another family is refused."""
    with reading(path, "cache", FIX), gzip.open(path, "rt") as f:
        first = f.readline()
        if not first.strip():
            raise CacheError(f"{path} is empty: not a cache; {FIX}")
        header = json.loads(first)
        if not isinstance(header, dict) or header.get("autobuild_cache") != CACHE_VERSION:
            raise CacheError(f"{path}: line 1 is not the header of an AutoBuild cache of version {CACHE_VERSION}; "
                             f"{FIX}")
        cache_family, graph_format = header.get("family"), header.get("format", "custom")
        if graph_format not in GRAPH_FORMATS:
            raise CacheError(f"{path}: the header names format {graph_format!r}; expected {' or '.join(GRAPH_FORMATS)}")
        # an onnx_ir cache may hold networks of any family (any name); a custom one only OFA architectures
        if not isinstance(cache_family, str) or not cache_family or (graph_format == "custom"
                                                                     and cache_family not in FAMILIES):
            raise CacheError(f"{path}: the header names family {cache_family!r}; a {graph_format} cache needs "
                             f"{'one of ' + ', '.join(FAMILIES) if graph_format == 'custom' else 'a family name'}")
        _check_family(path, cache_family, family)
        archs, entries, graphs = [], [], []
        for line_no, line in enumerate(f, start=2):
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                archs.append(arch_from_json(row, cache_family) if "config" in row else None)
            except ValueError as err:
                raise CacheError(f"{where}: {err}; {FIX}") from None
            if graph_format == "onnx_ir":
                if "graph" not in row:
                    raise CacheError(f"{where}: an onnx_ir cache entry needs a 'graph'")
                graphs.append(row["graph"])
            entries.append(_metrics(row, where))
    if not archs:
        raise CacheError(f"{path} holds a header but no architectures; {FIX}")
    return Cache(cache_family, archs, entries, header, graphs or None)


def _check_family(path: str, found: str, expected: str | None) -> None:
    if expected is not None and found != expected:
        raise CacheError(f"{path} is a cache of {found}, not {expected}: pass -families {found}, or the cache of "
                         f"{expected}")


def read_published_cache(path: str) -> Cache:
    """A published AutoBuild custom-format cache (pickled list of dicts)."""
    with reading(path, "published AutoBuild cache", FIX):
        data = restricted_load(path)
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) and "original config" in e
                                                         for e in data):
        raise CacheError(f"{path}: expected a pickled list of dicts with an 'original config' key (a published "
                         f"AutoBuild cache)")
    archs, entries = [], []
    for i, entry in enumerate(data):
        try:
            resolution, config = entry["original config"]
            archs.append(make_arch(config, resolution))
        except (TypeError, ValueError) as err:
            raise CacheError(f"{path}: entry {i}: {err}") from None
        entries.append({k: v for k, v in entry.items() if k != "original config" and isinstance(v, (int, float))
                        and not isinstance(v, bool)})
    families = {a.family for a in archs}
    if len(families) > 1:
        raise CacheError(f"{path} mixes architectures of {' and '.join(sorted(families))}")
    return Cache(archs[0].family, archs, entries, {"source": os.path.basename(path)})


def read_ofa_records(path: str) -> Cache:
    """Measurements recorded with OFA tools (e.g. ../shared/HELP/): ``{"archs": [{"ks", "e", "d", "r",
    "latency_ms": {"<device>": ms, ...}}, ...]}``; every latency becomes a metric ``latency_<device>``."""
    with reading(path, "OFA-notation JSON", FIX):
        with open(path) as f:
            records = json.load(f)
        records = records["archs"] if isinstance(records, dict) else records
        if not isinstance(records, list):
            raise CacheError(f"{path}: expected a list of OFA subnets (or {{\"archs\": [...]}})")
    archs, entries = [], []
    for i, rec in enumerate(records):
        try:
            archs.append(from_ofa(rec))
            entries.append(_metrics({f"latency_{k}": v for k, v in rec.get("latency_ms", {}).items()},
                                    f"{path}: record {i}"))
        except (ValueError, AttributeError) as err:
            raise CacheError(f"{path}: record {i}: {err}") from None
    if not archs:
        raise CacheError(f"{path}: no architectures")
    families = {a.family for a in archs}
    if len(families) > 1:
        raise CacheError(f"{path} mixes architectures of {' and '.join(sorted(families))}")
    metrics = {m: {"unit": "ms", "source": f"measured, {os.path.basename(path)}"} for m in entries[0]}
    return Cache(archs[0].family, archs, entries, {"metrics": metrics, "source": os.path.basename(path)})


def check_not_smaller(path: str, n: int, force: bool) -> None:
    """Refuse to replace a cache of more than ``n`` architectures (e.g. a shipped one) unless ``force``."""
    if force or not os.path.exists(path):
        return
    with reading(path, "cache", "pass -force to replace it"), gzip.open(path, "rt") as f:
        header = json.loads(f.readline())
        count = header.get("count") if isinstance(header, dict) else None
    if not isinstance(count, int) or count > n:
        raise CacheError(f"{path} holds {count if isinstance(count, int) else 'an unknown number of'} architectures, "
                         f"more than -n {n}: pass -force to replace it, or write elsewhere with -out_dir")


def cache_path(family: str, graph_format: str = "custom", cache_dir: str = CACHE_DIR) -> str:
    """``-families X -format F`` -> the cache file, own format preferred over a published pickle."""
    stem = os.path.join(cache_dir, f"{family}_{graph_format}_cache")
    for candidate in (stem + ".jsonl.gz", stem + ".pkl"):
        if os.path.exists(candidate):
            return candidate
    raise CacheError(
        f"no cache for family {family!r} in format {graph_format!r}: expected {stem}.jsonl.gz (this toolkit's "
        f"format; make_demo_caches.py builds one) or {stem}.pkl (a published AutoBuild cache, distributed by the "
        f"original authors with their code, github.com/Ascend-Research/AutoBuild; put it in {cache_dir})")


def load_cache(path: str, family: str | None = None) -> Cache:
    """Own format (.jsonl.gz), published pickle (.pkl) or OFA-notation records (.json), by extension. With
    ``family``, a cache of another family is refused (its header, or its blocks, say which it is)."""
    if not os.path.exists(path):
        raise CacheError(f"{path}: no such cache file")
    if path.endswith(".pkl"):
        cache = read_published_cache(path)
    elif path.endswith(".json"):
        cache = read_ofa_records(path)
    else:
        return read_own_cache(path, family)
    _check_family(path, cache.family, family)
    return cache

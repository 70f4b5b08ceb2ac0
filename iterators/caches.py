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

from iterators.safe_pickle import restricted_load
from iterators.search_space import Arch, FAMILIES, arch_from_json, from_ofa, make_arch

CACHE_VERSION = 1
CACHE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cache")
ARCH_KEYS = ("resolution", "config", "graph")


class CacheError(ValueError):
    pass


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


def read_own_cache(path: str) -> Cache:
    with gzip.open(path, "rt") as f:
        header = json.loads(f.readline())
        if header.get("autobuild_cache") != CACHE_VERSION:
            raise CacheError(f"{path}: not an AutoBuild cache of version {CACHE_VERSION} (header: {header})")
        family = header["family"]
        archs, entries, graphs = [], [], []
        for line_no, line in enumerate(f, start=2):
            row = json.loads(line)
            try:
                archs.append(arch_from_json(row, family) if "config" in row else None)
            except ValueError as err:
                raise CacheError(f"{path}:{line_no}: {err}") from None
            if header.get("format") == "onnx_ir":
                if "graph" not in row:
                    raise CacheError(f"{path}:{line_no}: an onnx_ir cache entry needs a 'graph'")
                graphs.append(row["graph"])
            entries.append({k: v for k, v in row.items() if k not in ARCH_KEYS})
    return Cache(family, archs, entries, header, graphs or None)


def read_published_cache(path: str) -> Cache:
    """A published AutoBuild custom-format cache (pickled list of dicts)."""
    data = restricted_load(path)
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "original config" not in data[0]:
        raise CacheError(f"{path}: expected a list of dicts with an 'original config' key")
    archs, entries = [], []
    for i, entry in enumerate(data):
        resolution, config = entry["original config"]
        try:
            archs.append(make_arch(config, resolution))
        except ValueError as err:
            raise CacheError(f"{path}: entry {i}: {err}") from None
        entries.append({k: v for k, v in entry.items() if k != "original config" and isinstance(v, (int, float))})
    return Cache(archs[0].family, archs, entries, {"source": os.path.basename(path)})


def read_ofa_records(path: str) -> Cache:
    """Measurements recorded with OFA tools (e.g. ../shared/HELP/): ``{"archs": [{"ks", "e", "d", "r",
    "latency_ms": {"<device>": ms, ...}}, ...]}``; every latency becomes a metric ``latency_<device>``."""
    with open(path) as f:
        records = json.load(f)
    records = records["archs"] if isinstance(records, dict) else records
    archs, entries = [], []
    for i, rec in enumerate(records):
        try:
            archs.append(from_ofa(rec))
        except ValueError as err:
            raise CacheError(f"{path}: record {i}: {err}") from None
        entries.append({f"latency_{k}": v for k, v in rec.get("latency_ms", {}).items()})
    if not archs:
        raise CacheError(f"{path}: no architectures")
    metrics = {m: {"unit": "ms", "source": f"measured, {os.path.basename(path)}"} for m in entries[0]}
    return Cache(archs[0].family, archs, entries, {"metrics": metrics, "source": os.path.basename(path)})


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


def load_cache(path: str) -> Cache:
    """Own format (.jsonl.gz), published pickle (.pkl) or OFA-notation records (.json), by extension."""
    if not os.path.exists(path):
        raise CacheError(f"no cache file at {path}")
    if path.endswith(".pkl"):
        return read_published_cache(path)
    if path.endswith(".json"):
        return read_ofa_records(path)
    return read_own_cache(path)

"""Profiling a device: latency caches measured here (resumable), read from a vendor's tool, or exported for one.

A device's cache is ``<cache_dir>/<family>_<name>_latency.jsonl.gz`` in the toolkit's cache format
(iterators/caches.py). Every network is appended to the measurement log ``.<family>_<name>_latency.partial.jsonl``
beside it the moment it is measured, and the log is folded into the gzipped cache at the end of a run (or at the start
of the next one, after a kill), so an interruption loses at most the network being timed.

Row fields of a measured cache (ms unless said otherwise):

    latency_ms          the training target: latency_ratio x the reference's median over the whole cache when
                        the runs were paired with the reference subnet, else the raw median
    latency_raw_ms      median of the timed runs; latency_iqr_ms, latency_p10_ms, latency_p90_ms their spread
    latency_ratio       median over the runs of (network time / reference time) of the same pair; latency_ratio_iqr
    ref_median_ms       the reference's median during this network's runs (it drifts with the machine's load)
    flops, n_params     M MACs and M parameters of the subnet (batch 1)
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time

import numpy as np
from scipy import stats
from tqdm import tqdm

from evaluation.latency import ONNX_OPSET, LatencyBackend, export_onnx, measure, reference_arch
from evaluation.ofa_manager import build_subnet, count_flops_params
from iterators.caches import load_cache, write_cache
from iterators.errors import UserError, reading
from iterators.measurement_log import MeasurementLog
from iterators.search_space import Arch, ArchError, arch_from_json, from_ofa

TARGET = "latency_ms"
MANIFEST = "manifest.json"
TEMPLATE = "latencies.csv"


def cache_paths(cache_dir: str, family: str, name: str) -> tuple[str, str]:
    """(the gzipped cache, the measurement log beside it) of device ``name``."""
    return (os.path.join(cache_dir, f"{family}_{name}_latency.jsonl.gz"),
            os.path.join(cache_dir, f".{family}_{name}_latency.partial.jsonl"))


class DeviceCache:
    """The rows of a device's cache and of its measurement log, by architecture key, under one set of settings."""

    def __init__(self, cache_dir: str, family: str, name: str, settings: dict):
        self.family, self.settings = family, settings
        self.path, partial = cache_paths(cache_dir, family, name)
        self.rows: dict[str, dict] = {}
        self.header: dict = {}
        if os.path.exists(self.path):
            cache = load_cache(self.path)
            self.header = cache.header
            if cache.family != family or cache.header.get("settings") != settings:
                raise UserError(f"{self.path} holds {cache.family} measurements made with "
                                f"{cache.header.get('settings')}; this run is {family} with {settings}: give another "
                                f"-name, or the same settings to extend it")
            self.rows = {a.key(): {**a.to_json(), **e} for a, e in zip(cache.archs, cache.entries)}
        os.makedirs(cache_dir, exist_ok=True)
        self.log = MeasurementLog(partial, family, settings)
        self.rows.update(self.log.rows)

    def __contains__(self, arch: Arch) -> bool:
        return arch.key() in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, arch: Arch, measurements: dict) -> None:
        self.rows[arch.key()] = self.log.append(arch, measurements)

    def fold(self, metrics: dict, header: dict, notes: str = "") -> str:
        """Write every row into the gzipped cache (atomically), ``latency_ms`` recomputed, then drop the log."""
        rows = list(self.rows.values())
        ref_scale = None
        if self.settings.get("paired"):
            ref_scale = float(np.median([r["ref_median_ms"] for r in rows]))
            for r in rows:
                r[TARGET] = r["latency_ratio"] * ref_scale
        else:
            for r in rows:
                r.setdefault(TARGET, r.get("latency_raw_ms"))
        archs = [arch_from_json(r, self.family) for r in rows]
        entries = [{k: v for k, v in r.items() if k not in ("resolution", "config")} for r in rows]
        write_cache(self.path, self.family, archs, entries, metrics, notes=notes,
                    extra_header={**header, "settings": self.settings, "reference_scale_ms": ref_scale})
        self.log.remove()
        self.header = {**header, "settings": self.settings, "reference_scale_ms": ref_scale}
        return self.path

    def close(self) -> None:
        self.log.close()


def measured_metrics(paired: bool, how: str) -> dict:
    """The header's description of every metric of a measured cache."""
    target = ("median ratio to the reference subnet x the reference's median over this cache" if paired
              else "median of the timed runs")
    return {
        TARGET: {"unit": "ms", "source": f"{target}; {how}"},
        "latency_raw_ms": {"unit": "ms", "source": "raw median of the timed runs (drifts with the machine's load)"},
        "latency_iqr_ms": {"unit": "ms", "source": "interquartile range of the timed runs"},
        "latency_p10_ms": {"unit": "ms", "source": "10th percentile of the timed runs"},
        "latency_p90_ms": {"unit": "ms", "source": "90th percentile of the timed runs"},
        "flops": {"unit": "M MACs", "source": "thop on the OFA subnet, batch 1 (batch norm not counted)"},
        "n_params": {"unit": "M", "source": "parameter count of the OFA subnet"},
        **({"latency_ratio": {"unit": "1", "source": "median of network/reference time over the run pairs"},
            "latency_ratio_iqr": {"unit": "1", "source": "interquartile range of those ratios"},
            "ref_median_ms": {"unit": "ms", "source": "the reference's median during this network's runs"}}
           if paired else {}),
    }


def measure_one(backend: LatencyBackend, arch: Arch, reference, warmup: int, repeats: int) -> dict:
    """One network's row: its latency statistics (paired with ``reference`` when given) and FLOPs/parameters."""
    lat = measure(backend, backend.prepare(arch), reference, warmup, repeats)
    flops, params = count_flops_params(build_subnet(arch), arch.resolution)
    row = {"latency_raw_ms": lat["median_ms"], "latency_iqr_ms": lat["iqr_ms"], "latency_p10_ms": lat["p10_ms"],
           "latency_p90_ms": lat["p90_ms"], "repeats": repeats, "flops": flops, "n_params": params,
           "measured_at": round(time.time(), 1)}
    if reference is not None:
        row.update(latency_ratio=lat["ratio"], latency_ratio_iqr=lat["ratio_iqr"], ref_median_ms=lat["ref_median_ms"])
    return row


def measure_archs(backend: LatencyBackend, archs: list[Arch], cache: DeviceCache, paired: bool, warmup: int,
                  repeats: int, budget_s: float | None = None, progress: bool = True) -> dict:
    """Measure every architecture of ``archs`` that ``cache`` lacks, appending each as it is done.

    Stops before the next network once ``budget_s`` seconds have passed. Returns {"measured", "seconds",
    "stopped": None | "budget" | "interrupted"}; Ctrl-C stops it too (the network being timed is lost).
    """
    todo = [a for a in archs if a not in cache]
    start, done, stopped = time.perf_counter(), 0, None
    bar = tqdm(todo, desc=f"measure ({backend.name})", unit="net", disable=not progress, dynamic_ncols=True)
    try:
        with backend.session():
            reference = backend.prepare(reference_arch(cache.family)) if paired else None
            for arch in bar:
                if budget_s is not None and time.perf_counter() - start >= budget_s:
                    stopped = "budget"
                    break
                cache.append(arch, measure_one(backend, arch, reference, warmup, repeats))
                done += 1
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        bar.close()
        cache.log.close()
    return {"measured": done, "seconds": time.perf_counter() - start, "stopped": stopped,
            "skipped": len(archs) - len(todo)}


def spread_subset(rows: list[dict], n: int) -> list[dict]:
    """``n`` rows evenly spaced over the range of their latency (the smallest and the largest included)."""
    order = sorted(rows, key=lambda r: r[TARGET])
    idx = np.unique(np.round(np.linspace(0, len(order) - 1, min(n, len(order)))).astype(int))
    return [order[i] for i in idx]


def recheck(backend: LatencyBackend, cache: DeviceCache, n: int, warmup: int, repeats: int,
            progress: bool = True) -> dict:
    """Measure ``n`` cached networks (spread over the latency range) again and compare with their first
    measurement: Spearman and median |relative difference| of the raw medians and, when paired, of the ratios."""
    rows = spread_subset(list(cache.rows.values()), n)
    paired = bool(cache.settings.get("paired"))
    again = []
    with backend.session():
        reference = backend.prepare(reference_arch(cache.family)) if paired else None
        for row in tqdm(rows, desc="recheck", unit="net", disable=not progress, dynamic_ncols=True):
            lat = measure(backend, backend.prepare(arch_from_json(row, cache.family)), reference, warmup, repeats)
            again.append(lat)

    def agreement(first: list[float], second: list[float]) -> dict:
        first, second = np.array(first), np.array(second)
        return {"spearman": float(stats.spearmanr(first, second).statistic),
                "median_abs_rel_diff": float(np.median(np.abs(second / first - 1)))}

    out = {"n": len(rows), "raw": agreement([r["latency_raw_ms"] for r in rows], [a["median_ms"] for a in again])}
    if paired:
        out["paired"] = agreement([r["latency_ratio"] for r in rows], [a["ratio"] for a in again])
    return out


# --- latencies measured elsewhere ------------------------------------------------------------------------------------

def export_subnets(archs: list[Arch], out_dir: str, batch_size: int, progress: bool = True) -> str:
    """Write every architecture's subnet as ONNX (``net_<i>_<hash>.onnx``, kept when already there), a manifest
    naming each file's architecture, and a ``latencies.csv`` to fill in with the device's measurements."""
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for i, arch in enumerate(archs):
        digest = hashlib.sha256(f"{arch.key()}:{batch_size}:{ONNX_OPSET}".encode()).hexdigest()[:10]
        entries.append({"file": f"net_{i:05d}_{digest}.onnx", **arch.to_json(),
                        "input_shape": [batch_size, 3, arch.resolution, arch.resolution]})
    manifest = {"family": archs[0].family if archs else None, "opset": ONNX_OPSET, "input_name": "input",
                "output_name": "logits", "batch_size": batch_size, "networks": entries,
                "how_to": f"measure every file's latency in ms on the device, write it into {TEMPLATE} and run "
                          "profile_device.py -import <this folder>/latencies.csv"}
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(os.path.join(out_dir, TEMPLATE), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", TARGET])
        writer.writerows([e["file"], ""] for e in entries)
    for arch, entry in tqdm(list(zip(archs, entries)), desc="export ONNX", unit="net", disable=not progress,
                            dynamic_ncols=True):
        path = os.path.join(out_dir, entry["file"])
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(export_onnx(arch, batch_size))
            os.replace(path + ".tmp", path)
    return os.path.join(out_dir, MANIFEST)


def _positive_ms(value, where: str) -> float:
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise UserError(f"{where}: {TARGET} is empty; fill in every network's latency or delete its row")
    try:
        ms = float(value)
    except (TypeError, ValueError):
        ms = math.nan
    if not math.isfinite(ms) or ms <= 0:
        raise UserError(f"{where}: {TARGET} {value!r} is not a positive number of milliseconds")
    return ms


def _json_field(value, name: str, where: str):
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise UserError(f"{where}: column {name} must hold JSON, e.g. "
                        + ('[["mbconv3_e4_k5", ...], ...]' if name == "config" else "[3, 5, 7, ...]")) from None


def read_latency_file(path: str, family: str, manifest_path: str | None = None) -> list[tuple[Arch, float]]:
    """(architecture, latency in ms) of every row of a CSV or JSON file of latencies measured elsewhere.

    A row names its network by ``file`` (an ONNX file of an ``-export_only`` manifest, found beside ``path`` unless
    ``manifest_path`` is given), by ``config`` (JSON list of stages of block strings) and ``resolution``, or in OFA's
    notation by ``ks``, ``e``, ``d`` and ``r``; its latency is ``latency_ms``. JSON files hold a list of such objects
    (or {"networks": [...]}). A network given several times gets the median of its latencies.
    """
    if not os.path.isfile(path):
        raise UserError(f"-import {path}: no such file")
    with reading(path, "latency file (CSV with a header line, or JSON)"):
        if path.lower().endswith(".json"):
            with open(path) as f:
                rows = json.load(f)
            rows = rows.get("networks") if isinstance(rows, dict) else rows
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise UserError(f"-import {path}: expected a JSON list of objects (or {{\"networks\": [...]}})")
        else:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
    if not rows:
        raise UserError(f"-import {path}: no rows")
    columns = set().union(*rows)
    by_file = None
    if "file" in columns:
        by_file = _manifest_archs(manifest_path or os.path.join(os.path.dirname(os.path.abspath(path)), MANIFEST),
                                  family)
    elif not ({"config", "resolution"} <= columns or {"ks", "e", "d", "r"} <= columns):
        raise UserError(f"-import {path}: name each network by a file column (with an -export_only manifest), by "
                        f"config and resolution, or by ks, e, d and r; the columns are {', '.join(sorted(columns))}")
    if TARGET not in columns:
        raise UserError(f"-import {path}: needs a {TARGET} column (the latency in milliseconds); the columns are "
                        f"{', '.join(sorted(columns))}")
    latencies: dict[str, list[float]] = {}
    archs: dict[str, Arch] = {}
    for i, row in enumerate(rows, start=1):
        where = f"-import {path}: row {i}"
        try:
            if by_file is not None:
                if row.get("file") not in by_file:
                    raise UserError(f"{where}: file {row.get('file')!r} is not in the manifest")
                arch = by_file[row["file"]]
            elif row.get("config") is not None:
                arch = arch_from_json({"config": _json_field(row["config"], "config", where),
                                       "resolution": _json_field(row.get("resolution"), "resolution", where)}, family)
            else:
                arch = from_ofa({k: _json_field(row.get(k), k, where) for k in ("ks", "e", "d", "r")}, family)
        except ArchError as err:
            raise UserError(f"{where}: {err}") from None
        archs[arch.key()] = arch
        latencies.setdefault(arch.key(), []).append(_positive_ms(row.get(TARGET), where))
    return [(archs[k], float(np.median(v))) for k, v in latencies.items()]


def _manifest_archs(manifest_path: str, family: str) -> dict[str, Arch]:
    if not os.path.isfile(manifest_path):
        raise UserError(f"{manifest_path}: no manifest; rows that name a file need the {MANIFEST} that "
                        "-export_only wrote (pass -manifest when it is not beside the imported file)")
    with reading(manifest_path, f"-export_only manifest of {family} networks"):
        with open(manifest_path) as f:
            return {e["file"]: arch_from_json(e, family) for e in json.load(f)["networks"]}


def import_latencies(cache: DeviceCache, measured: list[tuple[Arch, float]]) -> None:
    """Add latencies measured elsewhere to ``cache`` (a network already there is replaced)."""
    for arch, ms in measured:
        cache.rows[arch.key()] = {**arch.to_json(), TARGET: ms}

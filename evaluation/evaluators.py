"""Metrics of whole networks, measured or predicted, behind one interface (eval_topk_ofa.py, rm_search).

    acc                ImageNet top-1 (%) of the OFA subnet, supernet weights, BN statistics recalibrated
    cpu, gpu           measured batch-1 latency (ms): fixed threads, warm-up, median of repeated runs
    flops, params      exact M MACs / M parameters of the OFA subnet
    <device>_predicted latency (ms) from a predictor in l1_models/: the toolkit's own (e.g. cpu_predicted, trained
                       on the demo caches) and the published AutoBuild ones when present
                       (2080ti_predicted, 2990wx_predicted, kirin9000_predicted)
    <device>_table     latency (ms) from an additive per-block table l1_models/<family>_<device>_latency_table.json
                       (models/latency_table.py; make_latency_table.py fits or measures one)

Metric names are case-insensitive (the original's ``2080Ti_predicted`` is ``2080ti_predicted``). A predicted metric's
evaluator carries the digest of its predictor, which keys its rows in the results store; every checkpoint is checked
for family, target kind and format before use. ``evaluate_missing`` evaluates what the store lacks and stores it.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from evaluation import ofa_manager as ofa
from evaluation.ofa_accuracy import AccuracyEvaluator
from evaluation.results_store import ResultsStore
from iterators.errors import UserError, warn
from iterators.paths import L1_DIR
from iterators.search_space import Arch
from iterators.targets import Target
from models.checkpoints import check_predictor, find_config, load_config, load_predictor, predictor_digest, target_kind
from models.latency_table import LatencyTable, LatencyTableError
from models.predictor import predict_archs

# devices of the latency predictors published with the original code, by their target
PUBLISHED_DEVICES = {"latency_gpu": "2080ti", "latency_cpu": "2990wx", "latency_npu": "kirin9000"}
PREDICTED_SUFFIX = "_predicted"
TABLE_SUFFIX = "_table"
MEASURED_METRICS = ("acc", "cpu", "gpu", "flops", "params")
PREDICTED_ACC = "acc_predicted"  # the metric of an accuracy predictor (rm_search's -acc_predictor)
PREDICT_CHUNK = 4096             # architectures encoded and predicted at a time (bounded memory)


@dataclass
class Evaluator:
    metric: str
    unit: str
    higher_is_better: bool
    run: Callable[[list[Arch]], Iterator[tuple[int, float, dict]]]  # yields (index, value, details) per arch
    predictor: str = ""  # digest of the predictor behind a predicted metric, '' when measured: part of the store key
    # "cpu" or "cuda[:i]" when the metric is a timing on that device: nothing else may run there meanwhile (the Ray
    # backend gives such metrics one worker per node and runs them alone)
    timing_device: str | None = None

    def __call__(self, archs: list[Arch]) -> Iterator[tuple[int, float, dict]]:
        return self.run(archs)


def _one_by_one(measure: Callable[[Arch], tuple[float, dict]]):
    def run(archs):
        for i, arch in enumerate(archs):
            value, details = measure(arch)
            yield i, value, details
    return run


def default_workers() -> int:
    """Data-loader workers for ImageNet evaluation when -num_workers is not given: one per core, at most 8."""
    return min(8, os.cpu_count() or 1)


def latency_predictors(family: str, l1_dir: str = L1_DIR) -> dict[str, str]:
    """{device: checkpoint path} of the latency predictors for ``family`` found in ``l1_dir``. A file whose config
    cannot be read (missing, malformed, a refused pickle) is skipped with a warning, never disabling the others."""
    if not os.path.isdir(l1_dir):
        raise UserError(f"-l1_dir {l1_dir}: no such folder; give the folder of the latency predictors (default "
                        f"{L1_DIR})")
    found = {}
    for path in sorted(glob.glob(os.path.join(l1_dir, "*_predictor.pt"))):
        try:
            config = load_config(find_config(path))
            kind = target_kind(config)
        except UserError as err:
            warn(f"-l1_dir: skipping {os.path.basename(path)}: {err}")
            continue
        if config.get("family") != family or kind != "latency" or config.get("format", "custom") != "custom":
            continue
        target = Target(str(config["target"])).names[0]
        published = os.path.basename(path).startswith("minMAE_") and target in PUBLISHED_DEVICES
        device = PUBLISHED_DEVICES[target] if published else str(config.get("device", target[len("latency_"):]))
        found.setdefault(device.lower(), path)
    return found


def latency_tables(family: str, l1_dir: str = L1_DIR) -> dict[str, str]:
    """{device: path} of the latency tables for ``family`` in ``l1_dir`` (``<family>_<device>_latency_table.json``)."""
    prefix, suffix = f"{family}_", "_latency_table.json"
    return {os.path.basename(p)[len(prefix):-len(suffix)].lower(): p
            for p in sorted(glob.glob(os.path.join(l1_dir, prefix + "*" + suffix)))}


def load_latency_table(metric: str, family: str, l1_dir: str = L1_DIR, flag: str = "-m") -> LatencyTable:
    """The table behind ``<device>_table`` for ``family``, found in ``l1_dir``."""
    wanted = metric.strip().lower()[:-len(TABLE_SUFFIX)]
    tables = latency_tables(family, l1_dir)
    if wanted not in tables:
        raise UserError(f"{flag} {metric}: no {wanted} latency table for {family} in {l1_dir}; available: "
                        f"{', '.join(d + TABLE_SUFFIX for d in tables) or 'none'} (make_latency_table.py builds one)")
    try:
        return LatencyTable.load(tables[wanted])
    except LatencyTableError as err:
        raise UserError(f"{flag} {metric}: {err}") from None


def table_evaluator(metric: str, table: LatencyTable) -> Evaluator:
    """Latency from a lookup table; the digest of the table's contents keys its rows in the results store."""
    digest = hashlib.sha256(json.dumps(table.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def run(archs):
        for i, value in enumerate(table.predict(archs).tolist()):
            yield i, value, {"table": table.device}
    return Evaluator(metric, table.unit, False, run, digest)


def predictor_evaluator(metric: str, chkpt: str, family: str, kind: str, flag: str, unit: str = "",
                        higher_is_better: bool = True) -> Evaluator:
    """``metric`` predicted by the checkpoint ``chkpt`` (given as ``flag``), which must be a predictor of
    ``family`` whose target is of ``kind`` ("accuracy" or "latency")."""
    model, config = load_predictor(chkpt)
    check_predictor(config, chkpt, flag, family, kind)
    name = os.path.basename(chkpt)

    def run(archs):
        for start in range(0, len(archs), PREDICT_CHUNK):
            for i, value in enumerate(predict_archs(model, archs[start:start + PREDICT_CHUNK]), start=start):
                yield i, value, {"predictor": name}
    return Evaluator(metric, unit, higher_is_better, run, predictor_digest(model, config))


def make_evaluator(metric: str, family: str, supernet_path: str | None = None, imagenet_dir: str | None = None,
                   l1_dir: str = L1_DIR, threads: int = 1, warmup: int = 10, repeats: int = 50,
                   batch_size: int = 100, device: str | None = None, workers: int | None = None,
                   flag: str = "-m") -> Evaluator:
    """The evaluator of ``metric`` (case-insensitive, given as ``flag``); fails at once (before any work) when what
    it needs is missing. ``device`` (default: cuda when available) and ``workers`` serve ImageNet accuracy;
    ``device`` also picks the GPU of ``gpu`` latency."""
    metric = metric.strip().lower()
    if metric in ("flops", "params"):
        def measure(arch):
            flops, params = ofa.count_flops_params(ofa.build_subnet(arch), arch.resolution)
            return (flops if metric == "flops" else params), {}
        return Evaluator(metric, "M MACs" if metric == "flops" else "M", False, _one_by_one(measure))
    if metric in ("cpu", "gpu"):
        where = "cpu" if metric == "cpu" else (device if device and device.startswith("cuda") else "cuda")
        dev = str(ofa.check_device(where, f"{flag} {metric}"))

        def measure(arch):
            lat = ofa.measure_latency(ofa.build_subnet(arch), arch.resolution, device=dev, warmup=warmup,
                                      repeats=repeats, threads=threads)
            name = ofa.cpu_name() if metric == "cpu" else torch.cuda.get_device_name(dev)
            return lat["median_ms"], {**lat, "device_name": name}
        return Evaluator(metric, "ms", False, _one_by_one(measure), timing_device=dev)
    if metric == "acc":
        if not supernet_path or not imagenet_dir:
            raise UserError(f"{flag} acc needs -supernet_path (OFA's {ofa.checkpoint_name(family)}) and -imagenet_dir "
                            f"(ImageNet in ImageFolder layout with train/ and val/)")
        evaluator = AccuracyEvaluator(family, supernet_path, imagenet_dir, eval_batch_size=batch_size,
                                      device=device or ofa.default_device(),
                                      workers=default_workers() if workers is None else workers)
        return Evaluator(metric, "%", True, _one_by_one(lambda arch: (evaluator.evaluate(arch), {})))
    if metric.endswith(PREDICTED_SUFFIX) and metric != PREDICTED_ACC:
        wanted = metric[:-len(PREDICTED_SUFFIX)]
        available = latency_predictors(family, l1_dir)
        if wanted not in available:
            raise UserError(f"{flag} {metric}: no {wanted} latency predictor for {family} in {l1_dir}; available: "
                            f"{', '.join(d + PREDICTED_SUFFIX for d in available) or 'none'}")
        return predictor_evaluator(metric, available[wanted], family, "latency", f"{flag} {metric}", "ms", False)
    if metric.endswith(TABLE_SUFFIX):
        return table_evaluator(metric, load_latency_table(metric, family, l1_dir, flag))
    raise UserError(f"{flag} {metric}: unknown metric; use {', '.join(MEASURED_METRICS)}, <device>{TABLE_SUFFIX} or "
                    f"<device>{PREDICTED_SUFFIX} "
                    f"(available for {family}: "
                    f"{', '.join(d + PREDICTED_SUFFIX for d in _quiet_latency_predictors(family, l1_dir)) or 'none'})")


def _quiet_latency_predictors(family: str, l1_dir: str) -> dict[str, str]:
    try:
        return latency_predictors(family, l1_dir)
    except UserError:
        return {}


def accuracy_evaluator(family: str, acc_predictor: str | None = None, **measured) -> Evaluator:
    """Accuracy from the predictor ``acc_predictor`` (-acc_predictor), else measured on ImageNet (``measured``:
    make_evaluator's supernet_path, imagenet_dir, device, workers, batch_size)."""
    if acc_predictor:
        return predictor_evaluator(PREDICTED_ACC, acc_predictor, family, "accuracy", "-acc_predictor")
    return make_evaluator("acc", family, **measured)


def evaluate_missing(evaluator: Evaluator, archs: Sequence[Arch], values: list[float | None], store: ResultsStore,
                     on_result: Callable[[], None] | None = None) -> int:
    """Evaluate every arch whose entry in ``values`` is None (``values`` from ``store.values``), store each finite
    result as soon as it is measured and write it into ``values``. Returns how many results were not finite
    (neither stored nor written); an interruption keeps everything stored so far."""
    todo = [i for i, v in enumerate(values) if v is None]
    not_finite = 0
    for j, value, details in evaluator([archs[i] for i in todo]):
        i = todo[j]
        if math.isfinite(value):
            store.put(archs[i], evaluator.metric, value, details, evaluator.predictor)
            values[i] = value
        else:
            not_finite += 1
        if on_result:
            on_result()
    return not_finite

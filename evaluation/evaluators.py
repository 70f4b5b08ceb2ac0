"""Metrics of whole networks, measured or predicted, behind one interface (eval_topk_ofa.py, rm_search).

    acc                ImageNet top-1 (%) of the OFA subnet, supernet weights, BN statistics recalibrated
    cpu, gpu           measured batch-1 latency (ms): fixed threads, warm-up, median of repeated runs
    flops, params      exact M MACs / M parameters of the OFA subnet
    <device>_predicted latency (ms) from a predictor in l1_models/: the toolkit's own (e.g. cpu_predicted, trained
                       on the demo caches) and the published AutoBuild ones when present
                       (2080ti_predicted, 2990wx_predicted, kirin9000_predicted)
    <device>_table     latency (ms) from an additive per-block table l1_models/<family>_<device>_latency_table.json
                       (models/latency_table.py; make_latency_table.py fits or measures one)
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from evaluation import ofa_manager as ofa
from evaluation.ofa_accuracy import AccuracyEvaluator
from iterators.search_space import Arch
from models.checkpoints import find_config, load_config, load_predictor
from models.latency_table import LatencyTable
from models.predictor import predict_archs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L1_DIR = os.path.join(REPO, "l1_models")
# devices of the latency predictors published with the original code, by their target
PUBLISHED_DEVICES = {"latency_gpu": "2080ti", "latency_cpu": "2990wx", "latency_npu": "kirin9000"}
PREDICTED_SUFFIX = "_predicted"
TABLE_SUFFIX = "_table"


@dataclass
class Evaluator:
    metric: str
    unit: str
    higher_is_better: bool
    run: Callable[[list[Arch]], Iterator[tuple[int, float, dict]]]  # yields (index, value, details) per arch

    def __call__(self, archs: list[Arch]) -> Iterator[tuple[int, float, dict]]:
        return self.run(archs)


def _one_by_one(measure: Callable[[Arch], tuple[float, dict]]):
    def run(archs):
        for i, arch in enumerate(archs):
            value, details = measure(arch)
            yield i, value, details
    return run


def latency_predictors(family: str, l1_dir: str = L1_DIR) -> dict[str, str]:
    """{device: checkpoint path} of the latency predictors for ``family`` found in ``l1_dir``."""
    found = {}
    for path in sorted(glob.glob(os.path.join(l1_dir, "*_predictor.pt"))):
        try:
            config = load_config(find_config(path))
        except (FileNotFoundError, ValueError):
            continue
        target = str(config.get("target", ""))
        if config.get("family") != family or not target.startswith("latency_"):
            continue
        published = os.path.basename(path).startswith("minMAE_") and target in PUBLISHED_DEVICES
        device = PUBLISHED_DEVICES[target] if published else config.get("device", target[len("latency_"):])
        found.setdefault(device, path)
    return found


def latency_tables(family: str, l1_dir: str = L1_DIR) -> dict[str, str]:
    """{device: path} of the latency tables for ``family`` in ``l1_dir`` (``<family>_<device>_latency_table.json``)."""
    prefix, suffix = f"{family}_", "_latency_table.json"
    return {os.path.basename(p)[len(prefix):-len(suffix)]: p
            for p in sorted(glob.glob(os.path.join(l1_dir, prefix + "*" + suffix)))}


def table_evaluator(metric: str, table: LatencyTable) -> Evaluator:
    def run(archs):
        for i, value in enumerate(table.predict(archs).tolist()):
            yield i, value, {"table": table.device}
    return Evaluator(metric, table.unit, False, run)


def predictor_evaluator(metric: str, chkpt: str, unit: str, higher_is_better: bool) -> Evaluator:
    model, config = load_predictor(chkpt)

    def run(archs):
        for i, value in enumerate(predict_archs(model, archs)):
            yield i, value, {"predictor": os.path.basename(chkpt)}
    return Evaluator(metric, unit, higher_is_better, run)


def make_evaluator(metric: str, family: str, supernet_path: str | None = None, imagenet_dir: str | None = None,
                   l1_dir: str = L1_DIR, threads: int = 1, warmup: int = 10, repeats: int = 50,
                   batch_size: int = 100) -> Evaluator:
    """The evaluator of ``metric``; fails at once (before any work) when what it needs is missing."""
    if metric in ("flops", "params"):
        def measure(arch):
            flops, params = ofa.count_flops_params(ofa.build_subnet(arch), arch.resolution)
            return (flops if metric == "flops" else params), {}
        return Evaluator(metric, "M MACs" if metric == "flops" else "M", False, _one_by_one(measure))
    if metric in ("cpu", "gpu"):
        device = "cuda" if metric == "gpu" else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("-m gpu measures latency on a CUDA GPU, and none is available here")

        def measure(arch):
            lat = ofa.measure_latency(ofa.build_subnet(arch), arch.resolution, device=device, warmup=warmup,
                                      repeats=repeats, threads=threads)
            name = ofa.cpu_name() if device == "cpu" else torch.cuda.get_device_name()
            return lat["median_ms"], {**lat, "device_name": name}
        return Evaluator(metric, "ms", False, _one_by_one(measure))
    if metric == "acc":
        if not supernet_path or not imagenet_dir:
            raise ValueError(f"-m acc needs -supernet_path (OFA's {ofa.checkpoint_name(family)}) and -imagenet_dir "
                             "(ImageNet in ImageFolder layout with train/ and val/)")
        evaluator = AccuracyEvaluator(family, supernet_path, imagenet_dir, eval_batch_size=batch_size)
        return Evaluator(metric, "%", True, _one_by_one(lambda arch: (evaluator.evaluate(arch), {})))
    if metric.endswith(PREDICTED_SUFFIX):
        device = metric[:-len(PREDICTED_SUFFIX)]
        available = latency_predictors(family, l1_dir)
        if device not in available:
            raise ValueError(f"no {device} latency predictor for {family} in {l1_dir}; available: "
                             f"{', '.join(d + PREDICTED_SUFFIX for d in available) or 'none'}")
        return predictor_evaluator(metric, available[device], "ms", False)
    if metric.endswith(TABLE_SUFFIX):
        device = metric[:-len(TABLE_SUFFIX)]
        tables = latency_tables(family, l1_dir)
        if device not in tables:
            raise ValueError(f"no {device} latency table for {family} in {l1_dir}; available: "
                             f"{', '.join(d + TABLE_SUFFIX for d in tables) or 'none'}")
        return table_evaluator(metric, LatencyTable.load(tables[device]))
    raise ValueError(f"unknown metric {metric!r}: use acc, cpu, gpu, flops, params, <device>{PREDICTED_SUFFIX} or "
                     f"<device>{TABLE_SUFFIX}")

"""OFA supernets and their subnets: construction, FLOPs/parameter counts and latency measurement.

Supernets are OFA's own elastic classes (``OFAMobileNetV3`` w1.2, ``OFAProxylessNASNets`` w1.3, kernels 3/5/7,
expansions 3/4/6, depths 2/3/4). They start with random weights; trained weights come only from a local copy of the
checkpoint published by the OFA authors (``load_supernet``), never from the network.
"""
from __future__ import annotations

import copy
import os
import platform
import time
from functools import lru_cache

import numpy as np
import thop
import torch
from torch import nn
from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3, OFAProxylessNASNets

from iterators.errors import MissingFileError, UserError, reading
from iterators.safe_pickle import load_tensors
from iterators.search_space import EXPANSIONS, KERNELS, Arch, get_family, to_ofa

_SUPERNETS = {  # family -> (class, width multiplier, name of OFA's published checkpoint)
    "ofa_mbv3": (OFAMobileNetV3, 1.2, "ofa_mbv3_d234_e346_k357_w1.2"),
    "ofa_pn": (OFAProxylessNASNets, 1.3, "ofa_proxyless_d234_e346_k357_w1.3"),
}


class NoCudaError(UserError, RuntimeError):
    """A CUDA device was asked for on a machine without one."""


def check_device(device: str | torch.device, flag: str = "-device") -> torch.device:
    """``device`` as a torch.device; a CUDA device where none is available is refused."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"{flag} {device!r} is not a device; use cpu, cuda or cuda:<index>") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"{flag} {device!r}: use cpu, cuda or cuda:<index>")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NoCudaError(f"{flag} {device}: CUDA is not available on this machine; use -device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise NoCudaError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def default_device() -> str:
    """cuda when a GPU is available, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def checkpoint_name(family: str) -> str:
    """The file name under which the OFA authors publish the trained supernet of ``family``."""
    return _SUPERNETS[get_family(family).name][2]


def _new_supernet(family: str) -> nn.Module:
    cls, width, _ = _SUPERNETS[get_family(family).name]
    return cls(ks_list=list(KERNELS), expand_ratio_list=list(EXPANSIONS), depth_list=[2, 3, 4], width_mult=width)


@lru_cache(maxsize=None)
def build_supernet(family: str) -> nn.Module:
    """OFA's elastic supernet for ``family`` with random weights, built once per process and shared."""
    return _new_supernet(family)


def check_supernet_file(family: str, path: str | os.PathLike) -> None:
    """Raise MissingFileError, naming the expected checkpoint of ``family`` and who distributes it, unless ``path``
    is a file."""
    if not os.path.isfile(path):
        raise MissingFileError(
            f"no supernet checkpoint at {os.fspath(path)!r}: expected the file {checkpoint_name(family)!r}, "
            f"distributed by the original OFA authors (mit-han-lab/once-for-all); this toolkit never downloads it")


def load_supernet(family: str, path: str | os.PathLike) -> nn.Module:
    """A new supernet for ``family`` with the weights of the local checkpoint ``path`` (OFA's ``{"state_dict": ...}``
    files or a bare state dict). Not cached: keep the returned module and pass it to ``build_subnet``."""
    check_supernet_file(family, path)
    fix = f"give OFA's {checkpoint_name(family)}"
    checkpoint = load_tensors(path, "supernet checkpoint", fix)
    supernet = _new_supernet(family)
    with reading(path, "supernet checkpoint", fix):
        supernet.load_state_dict(checkpoint.get("state_dict", checkpoint))
    return supernet


def build_subnet(arch: Arch, supernet: nn.Module | None = None) -> nn.Module:
    """The stand-alone subnet of ``arch`` (weights copied from ``supernet``, default: the cached random one), in eval
    mode. The supernet's active-subnet setting is changed as a side effect."""
    cls = _SUPERNETS[arch.family][0]
    supernet = build_supernet(arch.family) if supernet is None else supernet
    if not isinstance(supernet, cls):
        raise TypeError(f"{arch.family} needs a {cls.__name__} supernet, got {type(supernet).__name__}")
    ofa = to_ofa(arch)
    supernet.set_active_subnet(ks=ofa["ks"], e=ofa["e"], d=ofa["d"])
    return supernet.get_active_subnet(preserve_weight=True).eval()


def _no_ops(module: nn.Module, inputs, output) -> None:
    """thop hook that counts nothing (thop's total_ops buffer stays 0)."""


def count_flops_params(model: nn.Module, resolution: int) -> tuple[float, float]:
    """(MACs, parameters), both in millions, for one 1x3xRxR image.

    MACs are those of convolutions and linear layers, as thop counts them, with batch norm counted as free (it folds
    into the convolution at inference): this is OFA's own convention (equal to ``ofa.utils.count_net_flops``) and the
    one behind published figures such as MobileNetV2's 300M. thop alone would add 4 ops per batch-norm element.
    A copy of ``model`` is profiled, so thop's buffers never touch it.
    """
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, resolution, resolution, device=device)
    macs, _ = thop.profile(copy.deepcopy(model), inputs=(x,), custom_ops={nn.BatchNorm2d: _no_ops}, verbose=False)
    params = sum(p.numel() for p in model.parameters())
    return macs / 1e6, params / 1e6


def measure_latency(model: nn.Module, resolution: int, device: str = "cpu", warmup: int = 10, repeats: int = 30,
                    threads: int = 1, reference: tuple[nn.Module, int] | None = None) -> dict:
    """Batch-1 inference latency of ``model`` at ``resolution`` on ``device`` ("cpu", "cuda" or "cuda:<i>").

    A copy of the model is timed in eval mode under ``torch.no_grad()`` with ``torch.set_num_threads(threads)``
    (restored afterwards), after ``warmup`` untimed runs. CPU runs are timed with ``time.perf_counter``; CUDA runs
    with a pair of CUDA events around each inference, the GPU synchronised before and after it.
    Returns median/mean/std/IQR/p10/p90 in milliseconds plus repeats, threads and device.

    With ``reference = (model, resolution)`` the reference network runs right after every timed run, and the result
    adds ``ref_median_ms`` and ``ratio`` (median / reference median): on a shared machine whose speed drifts, the
    ratio is far more repeatable than the raw time, since both halves of each pair see the same conditions.
    """
    if warmup < 0 or repeats < 1 or threads < 1:
        raise ValueError("need warmup >= 0, repeats >= 1 and threads >= 1")
    dev = check_device(device, "latency device")

    runs = [(model, resolution)] + ([reference] if reference is not None else [])
    runs = [(copy.deepcopy(m).eval().to(dev),
             torch.randn(1, 3, r, r, generator=torch.Generator().manual_seed(0)).to(dev)) for m, r in runs]
    timer = _time_cuda if dev.type == "cuda" else _time_cpu
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(warmup):
                for net, x in runs:
                    net(x)
            times = np.array([[timer(net, x) for net, x in runs] for _ in range(repeats)])
    finally:
        torch.set_num_threads(old_threads)

    t = times[:, 0]
    p10, p25, p75, p90 = np.percentile(t, [10, 25, 75, 90])
    out = {"median_ms": float(np.median(t)), "mean_ms": float(t.mean()),
           "std_ms": float(t.std(ddof=1)) if len(t) > 1 else 0.0, "iqr_ms": float(p75 - p25),
           "p10_ms": float(p10), "p90_ms": float(p90), "repeats": repeats, "threads": threads, "device": str(dev)}
    if reference is not None:
        out["ref_median_ms"] = float(np.median(times[:, 1]))
        out["ratio"] = out["median_ms"] / out["ref_median_ms"]
    return out


def _time_cpu(net: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    net(x)
    return (time.perf_counter() - start) * 1e3


def _time_cuda(net: nn.Module, x: torch.Tensor) -> float:
    stream = torch.cuda.current_stream(x.device)  # the stream the model's kernels are launched on
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(x.device)
    start.record(stream)
    net(x)
    end.record(stream)
    end.synchronize()
    return start.elapsed_time(end)


def cpu_name() -> str:
    """The CPU model name ("model name" in /proc/cpuinfo, else platform.processor()), to label latencies."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

"""Inference latency of OFA subnets on this machine, behind one interface for every runtime.

    backend = make_backend("torch-cpu", threads=1, batch_size=1)      # or "torch-cuda", "onnxruntime"
    with backend.session():
        net, ref = backend.prepare(arch), backend.prepare(reference_arch(arch.family))
        stats = measure(backend, net, ref, warmup=2, repeats=9)

A backend turns an architecture into a network ready to run, once (``prepare``: the subnet built with random weights,
which latency does not depend on, then moved to the GPU or exported to ONNX with its inference session created), and
times one inference of it (``time_ms``). ``session()`` holds the settings every measurement of the backend shares
(threads, no autograd) while it is open.

Backends:
    torch-cpu    torch eager on the CPU, ``threads`` intra-op threads, timed with time.perf_counter
    torch-cuda   torch eager on a CUDA GPU, timed with CUDA events on the model's stream, synchronised before and
                 after every run
    onnxruntime  ONNX Runtime's CPU execution provider on the subnet exported once to ONNX, session options fixed:
                 ``threads`` intra-op threads, one inter-op thread, sequential execution, the chosen graph
                 optimisation level

``measure`` runs ``warmup`` untimed passes, then ``repeats`` timed runs. On a machine whose speed drifts (shared,
thermally throttled, frequency-scaled) the raw time of one network measured at two moments differs by more than the
difference between many networks. With a reference network each timed run is followed by a run of the reference, and
the ratio of the pair is kept: both halves of a pair see the same conditions, so the ratio drifts far less. A cache
of such ratios is put on a millisecond scale by multiplying them by the reference's median over the whole cache.
"""
from __future__ import annotations

import io
import platform
import time
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

from evaluation.ofa_manager import build_subnet, cpu_name
from iterators.errors import UserError
from iterators.search_space import FAMILIES, Arch, make_arch

BACKENDS = ("torch-cpu", "torch-cuda", "onnxruntime")
ORT_OPT_LEVELS = ("disable", "basic", "extended", "all")
ONNX_OPSET = 17
Run = Callable[[], object]  # one inference of a prepared network


def reference_arch(family: str) -> Arch:
    """The fixed reference subnet of a family: every stage at depth 3 (PN's last at 1) of e4 k5 blocks, at
    resolution 192, a mid-size network."""
    fam = FAMILIES[family]
    return make_arch([[fam.block_name(4, 5)] * (3 if 3 in d else d[0]) for d in fam.stage_depths], 192, family)


def _input(arch: Arch, batch_size: int) -> torch.Tensor:
    return torch.randn(batch_size, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(0))


class LatencyBackend:
    """What every backend shares: its settings, the CPU timer, the settings a cache of its measurements records."""

    name = ""

    def __init__(self, threads: int = 1, batch_size: int = 1):
        if threads < 1:
            raise UserError(f"-threads {threads}: need at least 1 thread")
        if batch_size < 1:
            raise UserError(f"-batch_size {batch_size}: need a batch of at least 1 image")
        self.threads, self.batch_size = threads, batch_size

    def prepare(self, arch: Arch) -> Run:
        raise NotImplementedError

    def time_ms(self, run: Run) -> float:
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) * 1e3

    @contextmanager
    def session(self) -> Iterator[None]:
        """torch with ``threads`` threads and without autograd while open; the previous settings come back after."""
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                yield
        finally:
            torch.set_num_threads(old)

    def settings(self) -> dict:
        """What a measurement depends on: measurements under other settings must not be mixed in one cache."""
        return {"backend": self.name, "batch_size": self.batch_size, "threads": self.threads}

    def describe(self) -> str:
        return (f"{self.name} on {cpu_name()} ({platform.machine()}), torch {torch.__version__}, "
                f"{self.threads} thread(s), batch {self.batch_size}")


class TorchCPUBackend(LatencyBackend):
    name = "torch-cpu"

    def prepare(self, arch: Arch) -> Run:
        net, x = build_subnet(arch), _input(arch, self.batch_size)
        return lambda: net(x)


class TorchCUDABackend(LatencyBackend):
    """Each run is bracketed by CUDA events recorded on the stream the model's kernels go to; the GPU is
    synchronised before the start event (nothing earlier is counted) and the end event is waited for."""

    name = "torch-cuda"

    def __init__(self, threads: int = 1, batch_size: int = 1, device: str = "cuda"):
        super().__init__(threads, batch_size)
        if not torch.cuda.is_available():
            raise UserError("-backend torch-cuda: CUDA is not available on this machine (torch "
                            f"{torch.__version__}, torch.cuda.is_available() is False); use -backend torch-cpu or "
                            "onnxruntime, or -export_only to measure on another device")
        self.device = torch.device(device)
        if self.device.type != "cuda" or (self.device.index or 0) >= torch.cuda.device_count():
            raise UserError(f"-cuda_device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                            "name one as cuda or cuda:<index>")

    def prepare(self, arch: Arch) -> Run:
        net, x = build_subnet(arch).to(self.device), _input(arch, self.batch_size).to(self.device)
        return lambda: net(x)

    def time_ms(self, run: Run) -> float:
        stream = torch.cuda.current_stream(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(self.device)
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end)

    @contextmanager
    def session(self) -> Iterator[None]:
        """cuDNN's autotuner off, so every network gets the same deterministic choice of kernels."""
        old = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False
        try:
            with torch.cuda.device(self.device), super().session():
                yield
        finally:
            torch.backends.cudnn.benchmark = old

    def settings(self) -> dict:
        return {**super().settings(), "device": torch.cuda.get_device_name(self.device)}

    def describe(self) -> str:
        return (f"torch-cuda on {torch.cuda.get_device_name(self.device)}, torch {torch.__version__}, CUDA "
                f"{torch.version.cuda}, batch {self.batch_size}")


def export_onnx(arch: Arch, batch_size: int = 1) -> bytes:
    """The subnet of ``arch`` (random weights) as an ONNX model with a fixed input (batch_size, 3, R, R) named
    ``input`` and an output named ``logits``, through torch's TorchScript exporter with constant folding."""
    net = build_subnet(arch)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(net, (_input(arch, batch_size),), buffer, opset_version=ONNX_OPSET, dynamo=False,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True)
    return buffer.getvalue()


class OnnxRuntimeBackend(LatencyBackend):
    name = "onnxruntime"

    def __init__(self, threads: int = 1, batch_size: int = 1, opt_level: str = "all"):
        super().__init__(threads, batch_size)
        try:
            import onnxruntime
        except ImportError:
            raise UserError("-backend onnxruntime needs the onnxruntime package: install requirements.txt "
                            "(pip install -r requirements.txt)") from None
        if opt_level not in ORT_OPT_LEVELS:
            raise UserError(f"-ort_opt {opt_level}: choose one of {', '.join(ORT_OPT_LEVELS)}")
        self.ort, self.opt_level = onnxruntime, opt_level
        levels = onnxruntime.GraphOptimizationLevel
        self.options = onnxruntime.SessionOptions()
        self.options.intra_op_num_threads = threads
        self.options.inter_op_num_threads = 1
        self.options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self.options.graph_optimization_level = {"disable": levels.ORT_DISABLE_ALL, "basic": levels.ORT_ENABLE_BASIC,
                                                 "extended": levels.ORT_ENABLE_EXTENDED,
                                                 "all": levels.ORT_ENABLE_ALL}[opt_level]

    def prepare(self, arch: Arch) -> Run:
        session = self.ort.InferenceSession(export_onnx(arch, self.batch_size), self.options,
                                            providers=["CPUExecutionProvider"])
        feed = {"input": _input(arch, self.batch_size).numpy()}
        return lambda: session.run(None, feed)

    def settings(self) -> dict:
        return {**super().settings(), "onnxruntime": self.ort.__version__, "graph_optimization": self.opt_level}

    def describe(self) -> str:
        return (f"onnxruntime {self.ort.__version__} (CPUExecutionProvider, graph optimisation {self.opt_level}, "
                f"{self.threads} intra-op thread(s), sequential) on {cpu_name()}, ONNX opset {ONNX_OPSET}, "
                f"batch {self.batch_size}")


def make_backend(name: str, threads: int = 1, batch_size: int = 1, cuda_device: str = "cuda",
                 ort_opt: str = "all") -> LatencyBackend:
    """The backend called ``name``; fails at once with a UserError when it cannot run here."""
    if name == "torch-cpu":
        return TorchCPUBackend(threads, batch_size)
    if name == "torch-cuda":
        return TorchCUDABackend(threads, batch_size, cuda_device)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(threads, batch_size, ort_opt)
    raise UserError(f"-backend {name}: unknown backend; choose one of {', '.join(BACKENDS)}")


def measure(backend: LatencyBackend, run: Run, reference: Run | None = None, warmup: int = 2,
            repeats: int = 9) -> dict:
    """Latency statistics (ms) of ``repeats`` timed runs after ``warmup`` untimed ones; call inside
    ``backend.session()``.

    Returns median_ms, mean_ms, iqr_ms, p10_ms, p90_ms and repeats; with a ``reference`` network, each timed run is
    followed by a timed run of the reference and ref_median_ms, ratio (median of the per-pair ratios) and ratio_iqr
    are added.
    """
    if warmup < 0 or repeats < 1:
        raise UserError(f"need -warmup >= 0 and -repeats >= 1, got {warmup} and {repeats}")
    runs = [run] if reference is None else [run, reference]
    for _ in range(warmup):
        for r in runs:
            r()
    times = np.array([[backend.time_ms(r) for r in runs] for _ in range(repeats)])
    t = times[:, 0]
    p10, p25, p75, p90 = np.percentile(t, [10, 25, 75, 90])
    stats = {"median_ms": float(np.median(t)), "mean_ms": float(t.mean()), "iqr_ms": float(p75 - p25),
             "p10_ms": float(p10), "p90_ms": float(p90), "repeats": repeats}
    if reference is not None:
        ratios = t / times[:, 1]
        r25, r75 = np.percentile(ratios, [25, 75])
        stats.update(ref_median_ms=float(np.median(times[:, 1])), ratio=float(np.median(ratios)),
                     ratio_iqr=float(r75 - r25))
    return stats

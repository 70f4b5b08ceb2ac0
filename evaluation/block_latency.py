"""Measure a per-block latency table (models/latency_table.py): every OFA block timed alone at its input shape.

For every resolution and each of the nine (e, k) choices, the subnet with every stage at its greatest depth and every
block set to that choice is built (evaluation/ofa_manager.py); one forward pass records each block's input, then each
block runs alone on it. Blocks after the first of a stage share their shapes (stride 1, same channels), so the second
block's time stands for the later ones too. The stem (first convolution and OFA's fixed first block) and the head
(what follows the last block) make the table's base. All modules of a resolution are timed in interleaved rounds, so
a drift of the machine's speed spreads over all of them alike; every entry is the median of its rounds.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from evaluation.ofa_manager import build_subnet, cpu_name
from iterators.block_indicators import CHOICES, layout
from iterators.search_space import FAMILIES, make_arch
from models.latency_table import LatencyTable


def _capture_inputs(net: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The input of every block of ``net`` and the output of its last block, from one forward pass."""
    inputs, hooks = [], [b.register_forward_pre_hook(lambda m, args: inputs.append(args[0])) for b in net.blocks]
    with torch.no_grad():
        h = net.first_conv(x)
        for block in net.blocks:
            h = block(h)
    for hook in hooks:
        hook.remove()
    return inputs, h


def _head(net: nn.Module) -> nn.Module:
    """What the network runs after its last block, as a module of its own (its forward with no stem or blocks)."""
    tail = copy.deepcopy(net)
    tail.first_conv, tail.blocks = nn.Identity(), nn.ModuleList()
    return tail


def _timer(device: torch.device):
    def run(module: nn.Module, x: torch.Tensor) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        module(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1e3
    return run


def block_modules(family: str, resolution: int) -> dict:
    """{key: (module, input)} for the stem, the head and every distinct block of ``family`` at ``resolution``;
    block keys are (stage, position, choice) with position 0 (a stage's first block) or 1 (the others)."""
    fam, lay = FAMILIES[family], layout(family)
    modules = {}
    for c, (e, k) in enumerate(CHOICES):
        arch = make_arch([[fam.block_name(e, k)] * d for d in lay.max_depths], resolution, family)
        net = build_subnet(arch)
        x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
        inputs, last = _capture_inputs(net, x)
        if c == 0:
            modules["stem"] = (nn.Sequential(net.first_conv, net.blocks[0]).eval(), x)
            modules["head"] = (_head(net).eval(), last)
        for (s, b), block, inp in zip(lay.slots, net.blocks[1:], inputs[1:]):
            if b <= 1:
                modules[(s, b, c)] = (block, inp)
    return modules


def measure_block_table(family: str, resolutions: list[int], device: str = "cpu", threads: int = 1,
                        warmup: int = 3, repeats: int = 15, label: str = "cpu_blocks",
                        progress: bool = True) -> LatencyTable:
    """The latency table of ``family`` on ``device`` at ``resolutions``, batch 1, ``threads`` torch threads, named
    ``label`` (its metric is ``<label>_table``)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"block latency on {device!r} was requested but CUDA is not available on this machine")
    if warmup < 0 or repeats < 1 or threads < 1:
        raise ValueError("need warmup >= 0, repeats >= 1 and threads >= 1")
    lay, timer = layout(family), _timer(dev)
    entries, spread = {}, {}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for r in tqdm(resolutions, desc=f"time {family} blocks", unit="resolution", disable=not progress):
            modules = {key: (m.to(dev), x.to(dev)) for key, (m, x) in block_modules(family, r).items()}
            times = {key: [] for key in modules}
            with torch.no_grad():
                for round_ in range(warmup + repeats):
                    for key, (module, x) in modules.items():
                        t = timer(module, x)
                        if round_ >= warmup:
                            times[key].append(t)
            median = {key: float(np.median(v)) for key, v in times.items()}
            blocks = np.array([median[(s, min(b, 1), c)] for s, b in lay.slots for c in range(len(CHOICES))])
            entries[r] = (median["stem"] + median["head"], blocks)
            iqr = [np.subtract(*np.percentile(v, [75, 25])) / np.median(v) for v in times.values()]
            spread[r] = float(np.median(iqr))
    finally:
        torch.set_num_threads(old_threads)
    name = cpu_name() if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    details = {"mode": "measured", "device_name": name, "threads": threads, "warmup": warmup, "repeats": repeats,
               "torch": torch.__version__, "median_relative_iqr": spread}
    return LatencyTable(family, label, entries, "ms", f"every block timed alone at batch 1 on {name}", details)

"""Process-wide settings that make CPU training and inference of many small graph batches fast; every script applies
them first with ``configure(threads)`` and offers ``-threads`` through ``add_threads_flag``.

Threads: a training step of the sequence-graph predictor is some 150 small ops on a few-hundred-KB tensors. Split over
two threads each op waits at its end for the slower thread; when another process holds one of two cores, that thread
is descheduled for whole time slices and an epoch went from 0.4 s to 20-47 s. One thread gains nothing when the
machine is idle and loses nothing when it is busy (bench/bench_train.py measures both), so every script defaults to
1; batched inference over thousands of graphs, whose ops are large, can use more (bench/bench_inference.py).

Every mini-batch of graphs has a new number of nodes, so each layer allocates tensors of a new size, each a few MB.
glibc serves blocks that large with mmap and gives them back with munmap when freed, so the next batch page-faults
(and zeroes) all of its memory again: that made op-graph inference 2.6 times slower on our 2-core machines. Fixing
glibc's mmap threshold at 32 MB (the ceiling of its own dynamic threshold on 64-bit systems) and its trim threshold
at 1 GB keeps freed blocks in the heap for reuse. Memory is kept up to the peak of one batch, which a run needs
anyway.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util

from iterators.errors import UserError

_M_TRIM_THRESHOLD = -1  # mallopt's option numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
_TRIM_THRESHOLD_BYTES = 1 << 30


def reuse_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse; True if it took, False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # no libc found, or not glibc (macOS, musl)
        return False
    took_mmap = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    took_trim = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    return bool(took_mmap and took_trim)


def add_threads_flag(parser: argparse.ArgumentParser, default: int = 1) -> None:
    parser.add_argument("-threads", type=int, default=default,
                        help=f"torch CPU threads (default {default}: see iterators/runtime.py and bench/)")


def configure(threads: int) -> None:
    """What every script does first: an explicit torch thread count, and freed memory kept for reuse."""
    if threads < 1:
        raise UserError(f"-threads {threads}: give at least 1")
    import torch  # here, so that a script's --help needs no torch
    torch.set_num_threads(threads)
    reuse_freed_memory()

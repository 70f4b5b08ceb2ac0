"""Small, fast inputs built on the spot: untrained predictors (checkpoint + config side by side), unit corpora and
caches. Untrained weights predict finite, architecture-dependent values, which is all these tests need."""
from __future__ import annotations

import json
import os
import random

import torch

from iterators.caches import write_cache
from iterators.search_space import random_arch
from models.checkpoints import save_predictor
from models.predictor import build_predictor

TARGET_MOMENTS = {"acc": (0.75, 0.05), "latency": (20.0, 5.0)}


def tiny_predictor(folder, family: str = "ofa_mbv3", target: str = "acc", seed: int = 0, name: str | None = None,
                   gnn_dim: int = 8) -> str:
    """Save an untrained predictor of ``family`` and ``target`` into ``folder``; returns its checkpoint path."""
    name = name or f"{family}_custom_{target.replace('/', '_div_')}_GraphConv_sum_directed_srcc1"
    config = {"families": family, "family": family, "format": "custom", "target": target, "gnn_type": "GraphConv",
              "gnn_dim": gnn_dim, "num_layers": 4, "aggr_method": "sum", "norm": 1, "chkpt": name}
    torch.manual_seed(seed)
    model = build_predictor(config).eval()
    model.target_moments.copy_(torch.tensor(TARGET_MOMENTS["acc" if target == "acc" else "latency"]))
    path, _ = save_predictor(model, config, str(folder), str(folder))
    return path


def tiny_corpus(path, family: str = "ofa_mbv3", per_unit: int = 2) -> str:
    """A unit corpus with ``per_unit`` two-block units per position (PN's last unit adds its one-block stage)."""
    prefix = "mbconv3" if family == "ofa_mbv3" else "mbconv2"
    units = []
    for u in range(1, 6):
        for i, e in enumerate((3, 4, 6)[:per_unit]):
            blocks = [f"{prefix}_e{e}_k3", f"{prefix}_e3_k5"]
            config = [blocks, [f"{prefix}_e6_k7"]] if family == "ofa_pn" and u == 5 else blocks
            units.append({"unit": u, "config": config, "hops": 1, "score": float(e)})
    with open(path, "w") as f:
        json.dump(units, f)
    return str(path)


def tiny_cache(path, family: str = "ofa_mbv3", n: int = 60, seed: int = 0) -> str:
    """A cache of ``n`` random architectures with made-up acc and latency_cpu that depend on the architecture."""
    rng = random.Random(seed)
    archs = [random_arch(family, rng) for _ in range(n)]
    entries = [{"acc": 0.7 + 0.001 * a.n_blocks + 0.0001 * a.resolution, "latency_cpu": 2.0 * a.n_blocks}
               for a in archs]
    write_cache(str(path), family, archs, entries, {"acc": {"unit": "0-1"}, "latency_cpu": {"unit": "ms"}})
    return str(path)


def snapshot(*folders) -> dict:
    """Every file under ``folders`` with its size and modification time: compare two to see what was written."""
    found = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(root, name)
                st = os.stat(path)
                found[path] = (st.st_size if name in files else -1, st.st_mtime_ns)
    return found

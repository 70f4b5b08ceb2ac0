import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.join(os.path.dirname(REPO), "shared")
UPSTREAM = os.path.join(SHARED, "upstream_l1")
HELP_JSON = os.path.join(SHARED, "HELP", "ofa_mbv3_gpu_latency.json")


def upstream_checkpoint(family: str, target: str) -> str:
    stem = f"{family}_custom_acc" if target == "acc" else f"{family}_{target}_custom_{target}"
    return os.path.join(UPSTREAM, "l1_models", f"minMAE_{stem}_GraphConv_sum_directed_srcc1_predictor.pt")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run a script inside a temporary folder so saved_models/, configs/ and plots/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path

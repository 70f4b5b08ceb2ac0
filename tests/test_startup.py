"""Start-up: scripts import matplotlib only when they plot and torch_geometric only where a graph needs it."""
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = ["train_predictor", "predict", "label_units", "save_topk_ofa", "eval_topk_ofa",
           "rm_search.run_unit_pareto_search"]

HEAVY_AFTER_IMPORT = """
import importlib, sys
sys.path.insert(0, "rm_search")
importlib.import_module(sys.argv[1])
print(" ".join(sorted(m for m in ("matplotlib", "torch_geometric") if m in sys.modules)))
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_importing_a_script_loads_neither_matplotlib_nor_torch_geometric(script):
    out = subprocess.run([sys.executable, "-c", HEAVY_AFTER_IMPORT, script], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == ""


def test_predict_help_answers_without_torch():
    code = ("import runpy, sys\nsys.argv = ['predict.py', '--help']\ntry:\n    runpy.run_path('predict.py', "
            "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "-chkpt" in out.stdout and out.stdout.strip().endswith("NO TORCH")


def test_threads_flag_is_validated_and_applied():
    import torch

    from iterators.errors import UserError
    from iterators.runtime import configure

    with pytest.raises(UserError, match="-threads 0"):
        configure(0)
    before = torch.get_num_threads()
    try:
        configure(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

"""The paper's workflow from a fresh clone: train on the demo cache, label units, keep the top-k, evaluate."""
import os

import eval_topk_ofa
import label_units
import save_topk_ofa
import train_predictor
from conftest import REPO
from iterators.units import ReducedSpace, load_unit_corpus


def test_train_label_topk_evaluate(in_tmp, capsys):
    cache = os.path.join(REPO, "cache", "ofa_mbv3_custom_cache.jsonl.gz")
    config = train_predictor.main(["-cache", cache, "-target", "acc", "-epochs_predictor", "2", "-quiet"])
    chkpt = str(in_tmp / "saved_models" / f"{config['chkpt']}_predictor.pt")

    corpus = label_units.main(["-chkpt", chkpt, "-quiet"])
    units = load_unit_corpus(corpus).units
    assert len(units) == 36855 and {u["unit"] for u in units} == {1, 2, 3, 4, 5}
    out = capsys.readouterr().out
    lines = out.splitlines()  # 10 best and 10 worst units for each of the 5 stages
    assert sum(line.startswith("  best ") for line in lines) == 50
    assert sum(line.startswith("  worst ") for line in lines) == 50

    space = save_topk_ofa.main(["-unit_corpus", corpus, "-k", "3"])
    assert ReducedSpace.load(space).sizes == [3] * 5

    results = eval_topk_ofa.main(["-unit_corpus", corpus, "-k", "3", "-m", "cpu", "-n", "2", "-quiet"])
    assert len(results) == 2 and all(v["cpu"] > 0 for _, _, v in results)
    assert results[0][1] >= results[1][1]  # ordered by summed unit score
    out = capsys.readouterr().out
    assert "cpu (ms) over 2 networks" in out and "10 best by cpu" in out
    assert os.path.exists(in_tmp / "evals" / "results.db")

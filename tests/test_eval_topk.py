import json
import random
import subprocess
import sys

import pytest

import eval_topk_ofa
from conftest import REPO
from evaluation.evaluators import Evaluator, latency_predictors, make_evaluator
from evaluation.results_store import ResultsStore
from iterators.errors import UserError
from iterators.search_space import random_arch

# a tiny MBv3 unit corpus: 2 units per position, 2^5 = 32 networks
CORPUS = [{"unit": u, "config": [f"mbconv3_e{e}_k3", "mbconv3_e3_k3"], "hops": 1, "score": float(e)}
          for u in range(1, 6) for e in (3, 6)]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny_labeled_sgs.json"
    path.write_text(json.dumps(CORPUS))
    return str(path)


def _run(corpus, tmp_path, *extra):
    return eval_topk_ofa.main(["-unit_corpus", corpus, "-k", "2", "-db", str(tmp_path / "r.db"), "-quiet",
                               "-res", "128", *extra])


def test_slice_is_ordered_by_summed_score(corpus, tmp_path):
    listed = _run(corpus, tmp_path, "-m", "flops", "-no_eval")
    assert len(listed) == 32 and listed[0][1] == 30.0 and listed[-1][1] == 15.0
    assert [s for _, s, _ in listed] == sorted((s for _, s, _ in listed), reverse=True)
    assert len(_run(corpus, tmp_path, "-m", "flops", "-no_eval", "-start_idx", "30", "-n", "5")) == 2


def test_resume_after_interruption_skips_what_is_done(corpus, tmp_path, monkeypatch, capsys):
    real = make_evaluator("flops", "ofa_mbv3")

    def interrupted_after_two(archs):
        for i, value, details in real(archs):
            if i == 2:
                raise KeyboardInterrupt
            yield i, value, details

    monkeypatch.setattr(eval_topk_ofa, "make_evaluator",
                        lambda *a, **k: Evaluator("flops", "M MACs", False, interrupted_after_two))
    first = _run(corpus, tmp_path, "-m", "flops", "-n", "4")
    assert [v["flops"] is not None for _, _, v in first] == [True, True, False, False]
    assert "interrupted" in capsys.readouterr().out

    monkeypatch.undo()
    second = _run(corpus, tmp_path, "-m", "flops", "-n", "4", "-export", str(tmp_path / "out.csv"))
    assert "2 already in" in capsys.readouterr().out
    assert all(v["flops"] is not None and v["flops"] > 0 for _, _, v in second)
    assert [v for _, _, v in second[:2]] == [v for _, _, v in first[:2]]
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 1 + 4


# run in a fresh interpreter that imports only the store, so two writers really run at the same time
WRITER = """
import random, sys
from evaluation.results_store import ResultsStore
from iterators.errors import UserError
from iterators.search_space import random_arch
path, writer = sys.argv[1], int(sys.argv[2])
archs = [random_arch("ofa_mbv3", random.Random(i)) for i in range(60)]
order = range(60) if writer == 0 else reversed(range(60))
with ResultsStore(path) as store:
    print(sum(store.put(archs[i], "flops", float(i), {"writer": writer}) for i in order))
"""


def test_two_concurrent_writers(tmp_path):
    path = str(tmp_path / "shared.db")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, str(w)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True) for w in (0, 1)]
    written = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(written) == 60  # every row once, whoever came first
    with ResultsStore(path) as store:
        rows = store.rows("flops")
        assert len(rows) == 60 and sorted(r["value"] for r in rows) == [float(i) for i in range(60)]
        assert {r["family"] for r in rows} == {"ofa_mbv3"}


def test_missing_weights_and_data_fail_at_once(corpus, tmp_path):
    with pytest.raises(UserError, match="-supernet_path.*ofa_mbv3_d234_e346_k357_w1.2"):
        _run(corpus, tmp_path, "-m", "acc")
    with pytest.raises(FileNotFoundError, match="ofa_mbv3_d234_e346_k357_w1.2"):
        _run(corpus, tmp_path, "-m", "acc", "-supernet_path", str(tmp_path / "nope"),
             "-imagenet_dir", str(tmp_path))
    with pytest.raises(UserError, match="no 2080ti latency predictor"):
        _run(corpus, tmp_path, "-m", "2080ti_predicted")
    with pytest.raises(UserError, match="unknown metric"):
        _run(corpus, tmp_path, "-m", "energy")


def test_published_latency_predictors_are_recognised(tmp_path):
    import shutil
    from conftest import UPSTREAM
    for target in ("latency_gpu", "latency_npu"):
        for suffix in ("_predictor.pt", "_config.pkl"):
            name = f"minMAE_ofa_pn_{target}_custom_{target}_GraphConv_sum_directed_srcc1{suffix}"
            shutil.copy(f"{UPSTREAM}/l1_models/{name}", tmp_path / name)
    found = latency_predictors("ofa_pn", str(tmp_path))
    assert set(found) == {"2080ti", "kirin9000"} and latency_predictors("ofa_mbv3", str(tmp_path)) == {}
    evaluator = make_evaluator("kirin9000_predicted", "ofa_pn", l1_dir=str(tmp_path))
    values = [v for _, v, _ in evaluator([random_arch("ofa_pn", random.Random(0))])]
    assert len(values) == 1 and 1 < values[0] < 100  # ms on the Kirin 9000 NPU

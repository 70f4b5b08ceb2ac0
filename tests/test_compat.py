"""The original AutoBuild commands run unchanged, or are refused with a line naming this toolkit's flag."""
import json
import os
import pickle

import pytest

import eval_topk_ofa
from evaluation import evaluators
from evaluation.results_store import ResultsStore
from iterators.errors import UserError
from rm_search import run_unit_pareto_search as rm_search
from tiny import tiny_corpus, tiny_predictor

PUBLISHED_GPU = "minMAE_ofa_mbv3_latency_gpu_custom_latency_gpu_GraphConv_sum_directed_srcc1"


@pytest.fixture
def corpus(tmp_path):
    return tiny_corpus(tmp_path / "ofa_mbv3_labeled_sgs.json")  # 2 units per position: 32 networks


def _eval(corpus, tmp_path, *extra):
    return eval_topk_ofa.main(["-unit_corpus", corpus, "-k", "2", "-quiet", "-db", str(tmp_path / "r.db"), *extra])


def test_n_minus_one_is_all_and_seed_minus_one_is_by_score(corpus, tmp_path):
    everything = _eval(corpus, tmp_path, "-no_eval", "-n", "-1")
    assert len(everything) == 32 and everything == _eval(corpus, tmp_path, "-no_eval")
    assert len(_eval(corpus, tmp_path, "-no_eval", "-n", "-1", "-start_idx", "30")) == 2  # the last one included
    assert _eval(corpus, tmp_path, "-no_eval", "-seed", "-1") == everything
    shuffled = _eval(corpus, tmp_path, "-no_eval", "-seed", "0")
    assert shuffled != everything and sorted(a.key() for a, _, _ in shuffled) == sorted(
        a.key() for a, _, _ in everything)


def _published_way(l1, name=PUBLISHED_GPU):
    """A latency_gpu predictor named and configured as the original publishes them: a pickled dict of arguments."""
    chkpt = tiny_predictor(l1, "ofa_mbv3", "latency_gpu", name=name)
    config_json = chkpt.replace("_predictor.pt", "_config.json")
    config = json.load(open(config_json))
    del config["family"]  # the original's configs name only "families"
    pickle.dump(config, open(config_json.replace(".json", ".pkl"), "wb"))
    os.remove(config_json)


def test_metric_names_of_the_original_and_several_metrics_at_once(corpus, tmp_path, monkeypatch):
    l1 = tmp_path / "l1"
    _published_way(l1)                                                       # the original's 2080Ti predictor
    tiny_predictor(l1, "ofa_mbv3", "latency_cpu", seed=1)                    # the toolkit's cpu_predicted
    queries = []
    real_values = ResultsStore.values
    monkeypatch.setattr(ResultsStore, "values", lambda self, *a: queries.append(a[1]) or real_values(self, *a))
    results = _eval(corpus, tmp_path, "-m", "2080Ti_predicted", "CPU_predicted", "-l1_dir", str(l1), "-n", "20")
    assert queries == ["2080ti_predicted", "cpu_predicted"]
    assert all(set(v) == {"2080ti_predicted", "cpu_predicted"} and None not in v.values() for _, _, v in results)
    with ResultsStore(str(tmp_path / "r.db")) as store:
        rows = store.rows()
    assert len(rows) == 40 and {r["metric"] for r in rows} == {"2080ti_predicted", "cpu_predicted"}
    assert all(len(r["predictor"]) == 16 for r in rows)


def test_acc_gets_a_device_and_data_loader_workers(corpus, tmp_path, monkeypatch):
    made = []

    class Recorder:
        def __init__(self, family, supernet_path, imagenet_dir, **kwargs):
            made.append(kwargs)
            raise UserError("recorded")
    monkeypatch.setattr(evaluators, "AccuracyEvaluator", Recorder)
    for extra in ([], ["-device", "cpu", "-num_workers", "3"]):
        with pytest.raises(UserError, match="recorded"):
            _eval(corpus, tmp_path, "-m", "acc", "-supernet_path", "s", "-imagenet_dir", "i", *extra)
    import torch
    assert made[0]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert made[0]["workers"] == evaluators.default_workers() >= 1
    assert (made[1]["device"], made[1]["workers"]) == ("cpu", 3)


def _search_args(*extra):
    return rm_search.parse_args(["-model_name", "x", *extra])


def test_search_flags_of_the_original(tmp_path):
    args = _search_args("-imagenet_data_dir", "~/ImageNet", "-supernet_checkpoint_dir", str(tmp_path),
                        "-supernet_name", "ofa_mbv3_d234_e346_k357_w1.2", "-num_workers", "2", "-device_str", "cpu",
                        "-completed_iter", "0", "-mutate_prob_type", "uniform", "-metric", "2080Ti_predicted")
    assert args.imagenet_dir == os.path.expanduser("~/ImageNet")
    assert args.supernet_path == str(tmp_path / "ofa_mbv3_d234_e346_k357_w1.2")
    assert (args.num_workers, args.device, args.metric) == (2, "cpu", "2080ti_predicted")
    assert _search_args("-family", "ofa_pn", "-supernet_checkpoint_dir", "d").supernet_path == os.path.join(
        "d", "ofa_proxyless_d234_e346_k357_w1.3")


@pytest.mark.parametrize("flags, expected", [
    (["-completed_iter", "3"], "pass -resume"),
    (["-pareto_init_checkpoint", "front.pkl"], "pass -resume"),
    (["-lat_predictor_type", "n10"], "-metric <device>_predicted"),
    (["-evaluator_runs_dir", "runs"], "-out_dir"),
    (["-fast"], "drop -fast"),
    (["-space_id", "npu"], "-unit_corpus"),
    (["-mutate_prob_type", "gpu"], "-stage_mutate_prob"),
    (["-supernet_name", "ofa_mbv3_d234_e346_k357_w1.2"], "-supernet_checkpoint_dir"),
    (["-supernet_path", "p", "-supernet_checkpoint_dir", "d"], "not both"),
])
def test_search_flags_without_a_counterpart_are_refused_with_what_to_use(flags, expected):
    with pytest.raises(UserError, match=expected):
        _search_args(*flags)


def test_search_metric_in_the_original_spelling(tmp_path):
    l1 = tmp_path / "l1"
    _published_way(l1)
    acc = tiny_predictor(tmp_path / "m")
    state = rm_search.main(["-model_name", "orig", "-metric", "2080Ti_predicted", "-l1_dir", str(l1), "-acc_predictor",
                            acc, "-random_init_set_size", "5", "-num_iterations", "0", "-out_dir",
                            str(tmp_path / "o"), "-db", str(tmp_path / "r.db"), "-quiet"])
    assert len(state.points) == 5 and all(c > 0 for _, c in state.points)

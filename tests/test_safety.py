import pickle

import numpy as np
import pytest

from iterators.caches import CacheError, cache_path, load_cache, write_cache
from iterators.safe_pickle import RefusedPickle, restricted_load
from iterators.search_space import make_arch
from iterators.targets import Target, TargetError

METRICS = {"acc": 0.75, "latency_gpu": 5.0, "latency_cpu": 40.0}


@pytest.mark.parametrize("expression, expected", [
    ("acc", 0.75),
    ("(acc*100)/latency_gpu", 15.0),
    ("np.power(100, acc)/(np.log10(latency_gpu+1)+1)", 100 ** 0.75 / (np.log10(6.0) + 1)),
    ("-latency_cpu + 2**3", -32.0),
    ("latency_gpu < 10", 1.0),
])
def test_target_expressions(expression, expected):
    assert Target(expression)(METRICS) == pytest.approx(expected)


@pytest.mark.parametrize("expression", [
    "__import__('os').system('echo hacked')",
    "acc.__class__",
    "np.__dict__",
    "open('/etc/passwd')",
    "np.load('x')",
    "[acc for acc in ()]",
    "lambda: 1",
    "acc if acc else 1",
    "'text'",
    "np.power(100, x=acc)",
])
def test_target_rejects_code(expression):
    with pytest.raises(TargetError):
        Target(expression)


def test_target_skips_missing_and_names_known_metrics():
    entries = [{"acc": 0.7, "latency_gpu": 2.0}, {"acc": 0.8}, {"acc": 0.9, "latency_gpu": 3.0}]
    values, keep = Target("acc/latency_gpu").evaluate(entries, {"acc", "latency_gpu"})
    assert keep.tolist() == [True, False, True] and values.tolist() == pytest.approx([0.35, 0.3])
    with pytest.raises(TargetError, match="unknown metric.*flop.*this cache has: acc, latency_gpu"):
        Target("acc/flop").evaluate(entries, {"acc", "latency_gpu"})


def test_target_file_tag_matches_paper_naming():
    assert Target("acc/latency_gpu").file_tag() == "acc_div_latency_gpu"
    assert Target("(acc*100)/latency_gpu").file_tag() == "acc100_div_latency_gpu"


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_published_cache_pickle_loads_and_unknown_classes_are_refused(tmp_path):
    config = [["mbconv3_e4_k5"] * 2] * 5
    path = tmp_path / "ofa_mbv3_custom_cache.pkl"
    path.write_bytes(pickle.dumps([{"original config": (224, config), "acc": 0.77, "latency_gpu": 9.1},
                                   {"original config": (192, config), "acc": 0.75}]))
    cache = load_cache(str(path))
    assert cache.family == "ofa_mbv3" and len(cache) == 2
    assert cache.archs[1].resolution == 192 and cache.entries[0] == {"acc": 0.77, "latency_gpu": 9.1}
    assert cache_path("ofa_mbv3", "custom", str(tmp_path)) == str(path)

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([{"original config": (224, config), "acc": Evil()}]))
    with pytest.raises(RefusedPickle, match="builtins.print"):
        load_cache(str(evil))
    with pytest.raises(RefusedPickle, match="numpy"):
        restricted_load(pickle.dumps(np.float64(1.0)))


def test_missing_cache_says_where_to_get_it(tmp_path):
    with pytest.raises(CacheError, match="ofa_pn_custom_cache.jsonl.gz.*Ascend-Research/AutoBuild"):
        cache_path("ofa_pn", "custom", str(tmp_path))


def test_own_cache_round_trip(tmp_path):
    archs = [make_arch([["mbconv2_e3_k3"] * 2] * 5 + [["mbconv2_e6_k7"]], 224)]
    path = str(tmp_path / "x.jsonl.gz")
    write_cache(path, "ofa_pn", archs, [{"acc": 0.5, "latency_cpu": 12.0}], {"acc": {"unit": "0-1"}})
    cache = load_cache(path)
    assert cache.archs == archs and cache.entries == [{"acc": 0.5, "latency_cpu": 12.0}]
    assert cache.header["family"] == "ofa_pn" and cache.metrics == {"acc", "latency_cpu"}

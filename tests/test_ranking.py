"""Ranking the networks of a reduced space lazily: only the asked slice is built, in the order a full sort gives."""
import itertools
import json
import random
import time
import tracemalloc

import numpy as np
import pytest

import eval_topk_ofa
from iterators import units
from iterators.units import rank_networks


def _random_scores(rng, sizes):
    return [[round(rng.random(), 1) for _ in range(n)] for n in sizes]  # rounded: many ties


def test_lazy_ranking_equals_the_full_sort_with_ties(monkeypatch):
    rng = random.Random(0)
    for _ in range(40):
        scores = _random_scores(rng, [rng.randint(1, 5) for _ in range(rng.randint(1, 5))])
        full = rank_networks(scores)
        by_hand = sorted(itertools.product(*[range(len(s)) for s in scores]),
                         key=lambda row: -sum(s[i] for s, i in zip(scores, row)))
        assert [sum(s[i] for s, i in zip(scores, r)) for r in full] == pytest.approx(
            [sum(s[i] for s, i in zip(scores, r)) for r in by_hand])
        monkeypatch.setattr(units, "SORT_ALL_UP_TO", 0)  # force the best-first walk
        assert np.array_equal(rank_networks(scores), full)
        assert np.array_equal(rank_networks(scores, start=2, stop=7), full[2:7])
        monkeypatch.undo()


def test_shuffled_slices_make_one_permutation():
    rng = random.Random(1)
    for size in ([1], [2, 3], [3, 3, 3, 3, 3], [7, 1, 5]):
        scores = _random_scores(rng, size)
        whole = rank_networks(scores, seed=5)
        assert sorted(map(tuple, whole.tolist())) == list(itertools.product(*[range(n) for n in size]))
        parts = np.concatenate([rank_networks(scores, seed=5, start=s, stop=s + 4) for s in range(0, len(whole), 4)])
        assert np.array_equal(parts, whole) and np.array_equal(rank_networks(scores, seed=5), whole)
    assert not np.array_equal(rank_networks(_random_scores(rng, [9, 9]), seed=1),
                              rank_networks(_random_scores(rng, [9, 9]), seed=2))


def test_a_huge_space_costs_only_its_slice():
    rng = np.random.RandomState(0)
    scores = [rng.rand(1000).tolist() for _ in range(5)]  # 10^15 networks
    tracemalloc.start()
    start = time.perf_counter()
    best = rank_networks(scores, start=0, stop=50)
    shuffled = rank_networks(scores, seed=3, start=10 ** 14, stop=10 ** 14 + 50)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert best.shape == shuffled.shape == (50, 5) and seconds < 5 and peak < 20e6
    assert best[0].tolist() == [int(np.argmax(s)) for s in scores]
    summed = [sum(s[i] for s, i in zip(scores, row)) for row in best]
    assert summed == sorted(summed, reverse=True)


def test_eval_topk_with_k_30_lists_one_network_at_once(tmp_path):
    rng = random.Random(0)
    corpus = [{"unit": u, "config": [f"mbconv3_e{e}_k{k}" for e, k in blocks], "hops": 3, "score": rng.random()}
              for u in range(1, 6)
              for blocks in rng.sample(list(itertools.product(itertools.product((3, 4, 6), (3, 5, 7)), repeat=4)), 30)]
    path = tmp_path / "k30_labeled_sgs.json"
    path.write_text(json.dumps(corpus))
    start = time.perf_counter()
    (arch, score, _), = eval_topk_ofa.main(["-unit_corpus", str(path), "-k", "30", "-n", "1", "-no_eval"])
    assert time.perf_counter() - start < 10
    assert score == pytest.approx(sum(max(u["score"] for u in corpus if u["unit"] == p) for p in range(1, 6)))

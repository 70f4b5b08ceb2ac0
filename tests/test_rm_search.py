import json
import pickle
import random
import shutil

import numpy as np
import pytest

from conftest import UPSTREAM, upstream_checkpoint
from iterators.errors import UserError
from iterators.search_space import FAMILIES
from iterators.units import split_into_units
from rm_search import run_unit_pareto_search as script
from iterators.units import ReducedSpace
from rm_search.pareto import front_2d, hypervolume_2d, non_dominated_sort
from rm_search.search import ObjectiveCache
from rm_search.space import SearchSpace

MAX_MIN = (1, -1)  # accuracy up, latency down


def test_fronts_of_a_hand_made_set():
    points = [(0.9, 10), (0.8, 5), (0.8, 5), (0.7, 5), (0.85, 8), (0.6, 9), (0.9, 12)]
    assert non_dominated_sort(points, MAX_MIN) == [[0, 1, 2, 4], [3, 6], [5]]
    # minimising both: the reflected set
    assert non_dominated_sort([(-a, c) for a, c in points], (-1, -1)) == [[0, 1, 2, 4], [3, 6], [5]]
    assert non_dominated_sort([], MAX_MIN) == []


def test_hypervolume_by_hand():
    # minimise both, reference (4, 4): boxes of (1, 3) and (2, 1) -> 3 + 6 - 2 = 7
    assert hypervolume_2d([(1, 3), (2, 1)], (4, 4), (-1, -1)) == pytest.approx(7.0)
    # accuracy up, latency down, reference (0.5, 20): 0.3 * 10 + 0.2 * 15 - 0.2 * 10 = 4
    assert hypervolume_2d([(0.8, 10), (0.7, 5)], (0.5, 20), MAX_MIN) == pytest.approx(4.0)
    # dominated points, duplicates and points beyond the reference add nothing
    assert hypervolume_2d([(0.8, 10), (0.7, 5), (0.6, 15), (0.8, 10), (0.4, 1), (0.9, 25)], (0.5, 20),
                          MAX_MIN) == pytest.approx(4.0)
    assert hypervolume_2d([], (0.5, 20), MAX_MIN) == 0.0


def _space_file(tmp_path, family, per_unit):
    """A reduced space written the original's way: a pickled list, per position, of unit configs."""
    rng = random.Random(1)
    space = SearchSpace.full(family, 224)
    listed = [[c.sample(rng) for _ in range(per_unit)] for c in space.candidates]
    path = tmp_path / f"{family}_3_search_space.pkl"
    path.write_bytes(pickle.dumps(listed, protocol=4))
    return str(path), listed


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mutation_stays_in_the_candidate_sets(tmp_path, family):
    path, listed = _space_file(tmp_path, family, 3)
    merged = ReducedSpace.merge([ReducedSpace.load(path), ReducedSpace.load(path)])  # each unit kept once
    space = SearchSpace.reduced(merged, 224)
    assert [len(c) for c in space.candidates] == [len({json.dumps(u) for u in units}) for units in listed]
    rng = random.Random(0)
    arch = space.sample(rng)
    for _ in range(300):
        child = space.mutate(arch, rng, stage_mutate_prob=0.5, depth=2)
        assert child.family == family and child.resolution == 224
        for units, unit in zip(listed, split_into_units(child)):
            assert unit in units
        arch = child
    # widened: a mutation may take any unit of the stage, and (with certainty) leaves the listed ones
    wide = SearchSpace.reduced(merged, 224, widen=1.0)
    outside = sum(unit not in units for _ in range(50)
                  for units, unit in zip(listed, split_into_units(wide.mutate(arch, rng, 1.0))))
    assert outside > 200


def _args(tmp_path, *extra):
    return ["-family", "ofa_pn", "-metric", "2080ti_predicted", "-acc_predictor", upstream_checkpoint("ofa_pn", "acc"),
            "-random_init_set_size", "20", "-num_iterations", "3", "-eval_budget", "15", "-seed", "7",
            "-out_dir", str(tmp_path / "outputs"), "-l1_dir", str(tmp_path / "l1"), "-quiet", *extra]


@pytest.fixture
def l1(tmp_path):
    (tmp_path / "l1").mkdir()
    for suffix in ("_predictor.pt", "_config.pkl"):
        name = f"minMAE_ofa_pn_latency_gpu_custom_latency_gpu_GraphConv_sum_directed_srcc1{suffix}"
        shutil.copy(f"{UPSTREAM}/l1_models/{name}", tmp_path / "l1" / name)


def test_resume_gives_the_uninterrupted_front(tmp_path, l1, monkeypatch):
    whole = script.main(_args(tmp_path, "-model_name", "whole", "-db", str(tmp_path / "a.db")))

    real_call, calls = ObjectiveCache.__call__, {"n": 0}

    def dies_on_third_batch(self, archs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_call(self, archs)

    monkeypatch.setattr(ObjectiveCache, "__call__", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        script.main(_args(tmp_path, "-model_name", "cut", "-db", str(tmp_path / "b.db")))
    monkeypatch.undo()
    with pytest.raises(UserError, match="-resume"):
        script.main(_args(tmp_path, "-model_name", "cut", "-db", str(tmp_path / "b.db")))
    resumed = script.main(_args(tmp_path, "-model_name", "cut", "-db", str(tmp_path / "b.db"), "-resume"))

    def front(state):
        return sorted((state.archs[i].key(), state.points[i]) for i in state.front())
    assert front(resumed) == front(whole) and resumed.hypervolumes == whole.hypervolumes
    assert len(whole.archs) == 20 + 3 * 15 and len({a.key() for a in whole.archs}) == len(whole.archs)
    out = tmp_path / "outputs" / "cut"
    for name in ("search.log", "front_iter3.json", "final_front.txt", "pareto.png"):
        assert (out / name).exists()
    assert whole.hypervolumes == sorted(whole.hypervolumes)  # the front never gets worse


def test_fast_front_matches_the_sort():
    rng = np.random.default_rng(0)
    for n in (1, 5, 300):
        points = np.round(rng.random((n, 2)), 1)  # coarse values: many ties and duplicates
        assert front_2d(points, MAX_MIN) == non_dominated_sort(points, MAX_MIN)[0]
    assert front_2d([(0.8, 5), (0.8, 5), (0.7, 5), (0.9, 9)], MAX_MIN) == [0, 1, 3]

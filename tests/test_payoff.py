"""The payoff, pinned: the recommended recipe finds a better front than Stage-Full search at the same budget.

The recipe, through the paper's scripts: label units with unit predictors of accuracy, latency and three combined
targets (tests/data/payoff: small predictors trained by bench/bench_search.py on 3,000 random MBv3 networks labelled
by the published predictors), keep the top-2 units of each corpus merged per stage (save_topk_ofa.py), search that
space (rm_search/run_unit_pareto_search.py). The oracles are the published accuracy and 2080 Ti latency predictors.
One seed, 100 evaluations (20 random + 4 x 20 mutations), for both the recipe and Stage-Full.
"""
import glob
import os

import pytest

import label_units
import save_topk_ofa
from conftest import REPO, UPSTREAM, upstream_checkpoint
from iterators.units import ReducedSpace
from rm_search import run_unit_pareto_search as search
from rm_search.pareto import hypervolume_2d
from rm_search.search import DIRECTIONS

UNIT_PREDICTORS = sorted(glob.glob(os.path.join(REPO, "tests", "data", "payoff", "*_predictor.pt")))
# worst accuracy and 2080 Ti latency (ms) of 2,000 random MBv3 networks (bench_search.py's reference point), and
# their best: hypervolumes below are fractions of that box
REFERENCE, BEST = (0.74525, 10.6005), (0.78857, 5.5615)


def hypervolume(state) -> float:
    box = (BEST[0] - REFERENCE[0]) * (REFERENCE[1] - BEST[1])
    return hypervolume_2d(state.points, REFERENCE, DIRECTIONS) / box


@pytest.mark.skipif(not os.path.isdir(UPSTREAM), reason="needs ../shared/upstream_l1 (the published oracles)")
def test_recipe_beats_stage_full_at_100_evaluations(tmp_path):
    assert len(UNIT_PREDICTORS) == 5  # acc, latency and 3 combined targets
    corpora = [label_units.main(["-chkpt", p, "-out_dir", str(tmp_path / "units"), "-quiet"])
               for p in UNIT_PREDICTORS]
    space_file = save_topk_ofa.main(["-unit_corpus", *corpora, "-k", "2", "-out", str(tmp_path / "space.json")])
    space = ReducedSpace.load(space_file)
    assert len(space.sources) == 5 and [s["keep"] for s in space.sources].count("lowest") == 1

    common = ["-family", "ofa_mbv3", "-metric", "2080ti_predicted", "-l1_dir", os.path.join(UPSTREAM, "l1_models"),
              "-acc_predictor", upstream_checkpoint("ofa_mbv3", "acc"), "-random_init_set_size", "20",
              "-num_iterations", "4", "-eval_budget", "20", "-seed", "0", "-quiet", "-db", str(tmp_path / "r.db"),
              "-out_dir", str(tmp_path / "outputs"), "-hv_reference", *map(str, REFERENCE)]
    stage_full = hypervolume(search.main([*common, "-model_name", "full"]))
    recipe = hypervolume(search.main([*common, "-model_name", "recipe", "-unit_corpus", space_file]))
    widened = hypervolume(search.main([*common, "-model_name", "widened", "-unit_corpus", space_file,
                                       "-widen", "0.1"]))
    print(f"hypervolume at 100 evaluations: Stage-Full {stage_full:.3f}, recipe {recipe:.3f}, widened {widened:.3f}")
    assert recipe > stage_full + 0.05 and widened > stage_full + 0.05

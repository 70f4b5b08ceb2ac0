import dataclasses
import itertools
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, UPSTREAM
from iterators.block_indicators import layout
from iterators.caches import load_cache
from iterators.errors import UserError
from iterators.search_space import FAMILIES
from iterators.units import ReducedSpace, UnitCorpus, split_into_units
from models.baselines import fit_bilinear
from models.latency_table import LatencyTable
from rm_search import run_budget_search as script
from rm_search.budget import (EvolutionConfig, apply_move, constrained_evolution, fastest_latency, mac_proxy,
                              shrink_moves, solve_exact)
from rm_search.space import SearchSpace, UnitCandidates

RESOLUTIONS = [192, 208, 224]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def models(request):
    """A bilinear accuracy model and an additive latency table fitted on the family's demo cache."""
    family = request.param
    cache = load_cache(os.path.join(REPO, "cache", f"{family}_custom_cache.jsonl.gz"))
    u = layout(family).encode(cache.archs)
    accuracy, _ = fit_bilinear(family, u, np.array([e["acc"] for e in cache.entries]))
    table = LatencyTable.fit(cache.archs, np.array([e["latency_cpu"] for e in cache.entries]), "cpu")
    return family, accuracy, table


def top2_space(family: str) -> SearchSpace:
    """The reduced top-2 space of the published accuracy predictor's unit scores (../shared sample)."""
    with open(os.path.join(UPSTREAM, "unit_scores_sample.json")) as f:
        corpus = json.load(f)["families"][family]
    return SearchSpace.reduced(ReducedSpace.top_k(UnitCorpus(family, corpus, "acc"), [2]), 224)


def in_space(space: SearchSpace, arch) -> bool:
    return all(c.configs is None or unit in c.configs for c, unit in zip(space.candidates, split_into_units(arch)))


def brute_force(space, accuracy, table, resolutions):
    nets = [space.build(list(units)) for units in itertools.product(*(c.configs for c in space.candidates))]
    nets = [dataclasses.replace(n, resolution=r) for n in nets for r in resolutions]
    return nets, accuracy.predict_features(layout(space.family).encode(nets)), table.predict(nets)


def test_exact_optimum_equals_brute_force_on_a_top2_space(models):
    family, accuracy, table = models
    space = top2_space(family)
    nets, acc, lat = brute_force(space, accuracy, table, RESOLUTIONS)
    assert len(nets) == 32 * 3
    assert fastest_latency(table, RESOLUTIONS, space) == pytest.approx(lat.min())
    for budget in [lat.min(), *np.quantile(lat, [0.1, 0.35, 0.6, 0.9]), lat.max() + 1]:
        answer = solve_exact(accuracy, table, float(budget), RESOLUTIONS, space)
        best = acc[lat <= budget].max()
        assert answer.accuracy == pytest.approx(best, abs=1e-9)
        assert answer.latency <= budget and answer.gap <= 1e-9
        assert in_space(space, dataclasses.replace(answer.arch, resolution=224))


def test_slot_and_unit_programs_agree_on_the_full_space(models):
    """The BINAS-style program over block/depth indicators and a program with one binary per unit of every stage
    (36,855 or more units, listed) are two formulations of the same problem: their optima must agree."""
    family, accuracy, table = models
    fam = FAMILIES[family]
    listed = []
    for u, stages in enumerate(fam.units, start=1):
        units = []
        for lengths in itertools.product(*(fam.stage_depths[s] for s in stages)):
            for blocks in itertools.product(itertools.product((3, 4, 6), (3, 5, 7)), repeat=sum(lengths)):
                names = [fam.block_name(e, k) for e, k in blocks]
                parts, start = [], 0
                for n in lengths:
                    parts.append(names[start:start + n])
                    start += n
                units.append(parts[0] if len(parts) == 1 else parts)
        listed.append(UnitCandidates(family, u, units))
    unit_space = SearchSpace(family, listed, 224)
    for budget in (25.0, 40.0):
        slots = solve_exact(accuracy, table, budget, [224])
        units = solve_exact(accuracy, table, budget, [224], unit_space)
        assert slots.accuracy == pytest.approx(units.accuracy, abs=1e-9)
        assert slots.latency <= budget and units.latency <= budget


def test_evolution_respects_the_budget_and_approaches_the_optimum(models):
    family, accuracy, table = models
    space = SearchSpace.full(family, 224)
    acc = lambda archs: accuracy.predict_features(layout(family).encode(archs)).tolist()  # noqa: E731
    lat = lambda archs: table.predict(archs).tolist()  # noqa: E731
    fastest = table.fastest(192)
    for budget in (fastest + 2.0, 35.0):
        exact = solve_exact(accuracy, table, budget, RESOLUTIONS)
        found = constrained_evolution(space, acc, lat, budget, RESOLUTIONS,
                                      EvolutionConfig(population=40, generations=8, seed=1), log=print)
        assert found.arch is not None and found.latency <= budget
        assert found.accuracy <= exact.accuracy + 1e-12
        assert found.accuracy > exact.accuracy - 0.025  # ~300 evaluations: close, rarely optimal
        assert found.evaluations <= 40 + 8 * 30


def test_shrink_moves_make_networks_smaller(models):
    family = models[0]
    rng = random.Random(4)
    size = lambda arch: mac_proxy([b for stage in arch.config for b in stage])  # noqa: E731
    for space in (SearchSpace.full(family, 224), top2_space(family)):
        for _ in range(5):
            arch = dataclasses.replace(space.sample(rng), resolution=208)
            moves = shrink_moves(space, arch, RESOLUTIONS)
            assert ("resolution", 192) in moves
            for move in moves:
                smaller = apply_move(space, arch, move)
                assert in_space(space, dataclasses.replace(smaller, resolution=224))
                assert size(smaller) < size(arch) or smaller.resolution < arch.resolution


def test_budget_search_cli(tmp_path, models, capsys):
    family, accuracy, table = models
    chkpt = tmp_path / "saved_models" / "acc_bilinear_predictor.pt"
    chkpt.parent.mkdir()
    torch.save(accuracy.state_dict(), chkpt)
    (tmp_path / "saved_models" / "acc_bilinear_config.json").write_text(json.dumps(
        {"model": "bilinear", "family": family, "families": family, "target": "acc", "format": "custom"}))
    (tmp_path / "l1").mkdir()
    table.save(str(tmp_path / "l1" / f"{family}_cpu_latency_table.json"))
    front = tmp_path / "front.json"
    front.write_text(json.dumps([top2_space(family).sample(random.Random(i)).to_json() for i in range(5)]))
    args = ["-family", family, "-acc_predictor", str(chkpt), "-metric", "cpu_table", "-l1_dir", str(tmp_path / "l1"),
            "-out_dir", str(tmp_path / "out"), "-db", str(tmp_path / "r.db"), "-resolutions", "192", "224",
            "-rm_front", str(front), "-quiet", "-budget_ms"]
    answers = script.main(args + ["40", "25"])
    assert [a.budget for a in answers] == [25, 40] and all(a.method == "exact" for a in answers)
    assert all(a.latency <= a.budget and a.gap <= 1e-9 for a in answers)
    out = capsys.readouterr().out
    assert "rm front best" in out and "exact" in out
    saved = json.loads((tmp_path / "out" / "budget_search" / "budget_search.json").read_text())
    assert [r["budget_ms"] for r in saved["answers"]] == [25, 40]
    assert (tmp_path / "out" / "budget_search" / "budget_search.png").exists()
    evolved = script.main(args + ["30", "-method", "evolution", "-population", "12", "-generations", "2",
                                  "-model_name", "evo"])
    assert evolved[0].method == "evolution" and evolved[0].latency <= 30
    with pytest.raises(UserError, match="-budget_ms 5: no network of this space is that fast"):
        script.main(args + ["5", "30"])
    # as a script: one line on stderr, exit code 2
    run = subprocess.run([sys.executable, os.path.join(REPO, "rm_search", "run_budget_search.py"), *args, "5"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and run.stderr.startswith("error: -budget_ms 5")

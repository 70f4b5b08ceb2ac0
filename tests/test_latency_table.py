import json
import os
import random

import numpy as np
import pytest
import torch

import make_latency_table
from conftest import HELP_JSON, REPO
from evaluation.block_latency import block_modules, measure_block_table
from evaluation.evaluators import make_evaluator
from evaluation.ofa_manager import build_subnet
from iterators.block_indicators import CHOICES, layout
from iterators.errors import UserError
from iterators.search_space import FAMILIES, RESOLUTIONS, make_arch, random_arch
from models.latency_table import LatencyTable, LatencyTableError


def _random_archs(family, n, seed, resolutions):
    rng = random.Random(seed)
    return [random_arch(family, rng, resolutions) for _ in range(n)]


def _known_table(family, resolutions, seed=0) -> LatencyTable:
    rng = np.random.RandomState(seed)
    lay = layout(family)
    return LatencyTable(family, "known", {r: (3.0 + r / 100, rng.uniform(0.1, 2.0, lay.n_block_columns) * r / 224)
                                          for r in resolutions})


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("mode", ["per_resolution", "scaled", "affine"])
def test_fit_recovers_a_known_table(family, mode):
    resolutions = (192, 224) if mode == "per_resolution" else (160, 192, 224)
    truth = _known_table(family, resolutions)
    if mode != "per_resolution":  # a table that scales with the pixels, as the scaled model assumes
        blocks = truth.entries[224][1]
        truth = LatencyTable(family, "known", {r: (1.0 + 2.0 * (r / 224) ** 2, blocks * (r / 224) ** 2)
                                               for r in resolutions})
    archs = _random_archs(family, 1200, 1, resolutions)
    table = LatencyTable.fit(archs, truth.predict(archs), "fit", mode, lam=0.0)
    fresh = _random_archs(family, 300, 2, resolutions)
    np.testing.assert_allclose(table.predict(fresh), truth.predict(fresh), rtol=0, atol=1e-6)
    assert table.resolutions == (list(resolutions) if mode == "per_resolution" else
                                 [r for r in RESOLUTIONS if 160 <= r <= 224])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_costs_fastest_and_files(family, tmp_path):
    table = _known_table(family, (192, 224))
    lay = layout(family)
    archs = _random_archs(family, 200, 3, (224,))
    base, costs = table.costs(224)
    np.testing.assert_allclose(table.predict(archs), base + lay.encode(archs)[:, :lay.n_indicators] @ costs)
    # the fastest network, by hand: every stage at the depth and choices that cost least
    fam = FAMILIES[family]
    best = []
    for s, depths in enumerate(fam.stage_depths):
        options = []
        for d in depths:
            picks = [min(range(9), key=lambda c: table.block(224, s, b, *CHOICES[c])) for b in range(d)]
            options.append([fam.block_name(*CHOICES[c]) for c in picks])
        best.append(min(options, key=lambda blocks: table.predict([make_arch(
            [blocks if i == s else [fam.block_name(3, 3)] * min(fam.stage_depths[i]) for i in range(fam.n_stages)],
            224, family)])[0]))
    fastest = make_arch(best, 224, family)
    assert table.fastest(224) == pytest.approx(table.predict([fastest])[0])
    assert table.fastest(224) <= table.predict(archs).min()
    path = table.save(str(tmp_path / "t.json"))
    loaded = LatencyTable.load(path)
    np.testing.assert_array_equal(loaded.predict(archs), table.predict(archs))
    with pytest.raises(LatencyTableError, match="no entry for resolution 160; it covers 192, 224"):
        table.predict(_random_archs(family, 1, 0, (160,)))
    (tmp_path / "bad.json").write_text(json.dumps({"latency_table": 1, "family": family}))
    with pytest.raises(LatencyTableError, match="malformed"):
        LatencyTable.load(str(tmp_path / "bad.json"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_timed_pieces_make_up_the_network(family):
    """The stem, every block and the head timed alone are exactly the pieces of the network, at their input shapes."""
    lay = layout(family)
    modules = block_modules(family, 160)
    assert len(modules) == 2 + 9 * sum(min(d, 2) for d in lay.max_depths)
    choice = CHOICES.index((4, 5))
    arch = make_arch([[FAMILIES[family].block_name(4, 5)] * d for d in lay.max_depths], 160, family)
    net = build_subnet(arch)
    x = modules["stem"][1]
    with torch.no_grad():
        h = modules["stem"][0](x)
        for s, b in lay.slots:
            block, inp = modules[(s, min(b, 1), choice)]
            assert inp.shape == h.shape
            h = block(h)
        np.testing.assert_allclose(modules["head"][0](h).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)


def test_measured_table_orders_blocks_by_size():
    table = measure_block_table("ofa_mbv3", [160], warmup=1, repeats=3, progress=False)
    base, blocks = table.entries[160]
    assert base > 0 and (blocks > 0).all()
    grid = blocks.reshape(-1, 9)  # slots x choices
    # e6 k7 blocks do several times the work of e3 k3 ones: slower in most slots despite timing noise
    assert np.mean(grid[:, CHOICES.index((6, 7))] > grid[:, CHOICES.index((3, 3))]) > 0.7


def test_make_latency_table_fits_a_cache_and_serves_the_table_metric(tmp_path, capsys):
    table = make_latency_table.main(["-cache", HELP_JSON, "-target", "latency_v100_64", "-out_dir", str(tmp_path)])
    assert table.device == "v100_64" and table.resolutions == list(RESOLUTIONS)
    assert table.details["test"]["Spearman"] > 0.98 and table.details["test"]["MAPE"] < 4
    assert "test (500 networks): MAE" in capsys.readouterr().out
    evaluator = make_evaluator("v100_64_table", "ofa_mbv3", l1_dir=str(tmp_path))
    archs = _random_archs("ofa_mbv3", 4, 0, (224,))
    assert [v for _, v, _ in evaluator(archs)] == pytest.approx(table.predict(archs).tolist())
    with pytest.raises(UserError, match="available: v100_64_table"):
        make_evaluator("tpu_table", "ofa_mbv3", l1_dir=str(tmp_path))


def test_shipped_tables_predict_the_demo_caches():
    from iterators.caches import load_cache
    from scipy import stats
    for family in FAMILIES:
        table = LatencyTable.load(os.path.join(REPO, "l1_models", f"{family}_cpu_latency_table.json"))
        cache = load_cache(os.path.join(REPO, "cache", f"{family}_custom_cache.jsonl.gz"))
        y = np.array([e["latency_cpu"] for e in cache.entries])
        assert stats.spearmanr(y, table.predict(cache.archs)).statistic > 0.88

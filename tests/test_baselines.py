import json
import os
import random

import numpy as np
import pytest
import torch

import predict
import train_predictor
from conftest import REPO
from iterators.block_indicators import N_CHOICES, layout, rho
from iterators.caches import load_cache
from iterators.encoding import encode_archs
from iterators.errors import UserError
from iterators.search_space import FAMILIES, PAPER_RESOLUTIONS, RESOLUTIONS, random_arch
from models.baselines import (BilinearPredictor, build_baseline, fit_baseline, fit_bilinear, partial_dependence,
                              quadratic_ridge, readout)
from models.checkpoints import load_predictor
from models.predictor import predict_archs
from models.ridge import ridge_primal

MBV3_CACHE = os.path.join(REPO, "cache", "ofa_mbv3_custom_cache.jsonl.gz")


def _random_archs(family, n, seed, resolutions=PAPER_RESOLUTIONS):
    rng = random.Random(seed)
    return [random_arch(family, rng, resolutions) for _ in range(n)]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_indicators_encode_blocks_depths_and_resolution(family):
    lay = layout(family)
    archs = _random_archs(family, 300, 0, RESOLUTIONS)
    u = lay.encode(archs)
    a, b = lay.structure()
    np.testing.assert_array_equal(u[:, :lay.n_indicators] @ a.T, np.tile(b, (len(u), 1)))
    for arch, row in zip(archs, u):
        assert lay.decode(row, arch.resolution) == arch
        # one block column per block, one depth column per elastic stage, by hand
        assert row[:lay.n_block_columns].sum() == arch.n_blocks
        s, (e, k) = 1, arch.stages[1][-1]
        assert row[lay.block_column(s, len(arch.stages[1]) - 1, [3, 4, 6].index(e) * 3 + [3, 5, 7].index(k))] == 1
        assert row[lay.depth_column(1, len(arch.stages[1]))] == 1
        assert row[-2:].tolist() == [rho(arch.resolution), rho(arch.resolution) ** 2]


def _canonical(model: BilinearPredictor) -> dict:
    """The bilinear coefficients in the gauge where each slot's choices and each stage's depths sum to zero,
    computed by hand from the raw coefficients (independently of the partial-dependence code)."""
    lay, w = model.layout, model.coef.numpy()
    blocks, depth, slot_mean = {}, {}, {}
    for s, b in lay.slots:
        values = w[lay.block_column(s, b, 0):lay.block_column(s, b, 0) + N_CHOICES]
        slot_mean[(s, b)] = values.mean()
        blocks[(s, b)] = values - values.mean()
    for s, options in enumerate(lay.depth_options):
        if len(options) > 1:
            v = np.array([w[lay.depth_column(s, d)] + sum(slot_mean[(s, b)] for b in range(lay.min_depths[s], d))
                          for d in options])
            depth[s] = v - v.mean()
    a1, a2 = w[-2:]
    base = a1 * rho(192) + a2 * rho(192) ** 2  # the read-out's resolutions are relative to the smallest seen
    return {"blocks": blocks, "depth": depth,
            "resolution": {r: a1 * rho(r) + a2 * rho(r) ** 2 - base for r in (208, 224)}}


def _pd_as_canonical(pd: dict, lay) -> dict:
    return {"blocks": {(s, b): np.array(list(pd["blocks"][f"S{s + 1}"][f"L{b + 1}"].values())) for s, b in lay.slots},
            "depth": {int(k[1:]) - 1: np.array(list(v.values())) for k, v in pd["depth"].items()},
            "resolution": {r: pd["resolution"][f"r{r}"] for r in (208, 224)}}


def _assert_canonical_close(a: dict, b: dict, atol: float) -> None:
    for part in ("blocks", "depth", "resolution"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            np.testing.assert_allclose(a[part][key], b[part][key], rtol=0, atol=atol)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bilinear_fit_recovers_known_coefficients(family):
    lay = layout(family)
    truth = BilinearPredictor(family)
    gen = torch.Generator().manual_seed(3)
    truth.coef.copy_(torch.randn(lay.n_features, generator=gen, dtype=torch.float64) * 0.01)
    truth.intercept.fill_(0.75)
    archs = _random_archs(family, 1500, 1)
    u = lay.encode(archs)
    model, info = fit_bilinear(family, u, truth.predict_features(u), lam=0.0)
    assert info["ridge_lambda"] == 0.0
    # the read-out is the coefficients in the sum-to-zero gauge, exactly, for the truth and the fit alike
    expected = _canonical(truth)
    _assert_canonical_close(_pd_as_canonical(partial_dependence(truth, u[:50]), lay), expected, 1e-12)
    _assert_canonical_close(_pd_as_canonical(partial_dependence(model, u[:50]), lay), expected, 1e-6)
    fresh = lay.encode(_random_archs(family, 200, 2))
    np.testing.assert_allclose(model.predict_features(fresh), truth.predict_features(fresh), rtol=0, atol=1e-6)


def test_quadratic_ridge_recovers_known_coefficients():
    rng = np.random.RandomState(0)
    n, p = 300, 6
    u = rng.randn(n, p)
    w = rng.randn(p)
    pair = np.triu(rng.randn(p, p), 1)
    pair = pair + pair.T
    y = 0.3 + u @ w + 0.5 * np.einsum("ip,pq,iq->i", u, pair, u)
    intercept, coef, fitted_pair, info = quadratic_ridge(u, y, lam=0.0, gamma=1.0)
    assert intercept == pytest.approx(0.3, abs=1e-6)
    np.testing.assert_allclose(coef, w, atol=1e-6)
    np.testing.assert_allclose(fitted_pair, pair, atol=1e-6)
    # with the penalty chosen by leave-one-out error on a noisy target, it still finds the structure
    noisy = y + rng.randn(n) * 0.01
    _, coef, fitted_pair, info = quadratic_ridge(u, noisy)
    assert info["ridge_lambda"] > 0 and np.abs(fitted_pair - pair).max() < 0.05


def test_ridge_leave_one_out_matches_refitting():
    rng = np.random.RandomState(1)
    x, y = rng.randn(40, 5), rng.randn(40)
    solution = ridge_primal(x, y, None)
    lam = solution.lam
    errors = []
    for i in range(len(y)):  # refit without sample i, by hand
        keep = np.arange(len(y)) != i
        s = ridge_primal(x[keep], y[keep], lam)
        errors.append(y[i] - (s.intercept + x[i] @ s.coef))
    assert solution.loo_rmse[lam] == pytest.approx(np.sqrt(np.mean(np.square(errors))), rel=1e-9)


@pytest.fixture(scope="module")
def mbv3_acc():
    cache = load_cache(MBV3_CACHE)
    return cache.archs, np.array([e["acc"] for e in cache.entries])


@pytest.mark.parametrize("kind,least_spearman", [("bilinear", 0.98), ("quadratic", 0.98), ("mlp", 0.95)])
def test_baselines_rank_the_demo_accuracy(mbv3_acc, kind, least_spearman):
    from scipy import stats
    archs, y = mbv3_acc
    lay = layout("ofa_mbv3")
    u = lay.encode(archs)
    model, info = fit_baseline(kind, "ofa_mbv3", u[:1000], y[:1000], epochs=40, progress=False)
    assert stats.spearmanr(y[1000:1400], model.predict_features(u[1000:1400])).statistic > least_spearman
    # predictions from graph batches (what every evaluator uses) equal those from the features
    np.testing.assert_allclose(predict_archs(model, archs[1000:1100]), model.predict_features(u[1000:1100]),
                               rtol=1e-5)
    copy = build_baseline({"model": kind, "family": "ofa_mbv3"})  # what load_predictor does with a checkpoint
    copy.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(copy.predict_features(u[:20]), model.predict_features(u[:20]))
    ro = readout(model, u[:1000])
    assert set(ro["marginal"]) == {"stage", "layer", "expansion", "kernel", "depth", "resolution"}
    # deeper stages and larger resolutions raise the accuracy pseudo-label: every model must learn that
    assert ro["marginal"]["depth"]["D4"] > ro["marginal"]["depth"]["D2"]
    assert ro["resolution"]["r224"] > ro["resolution"]["r208"] > ro["resolution"]["r192"] == 0  # trained on these


def test_train_predictor_bilinear_saves_a_checkpoint_every_tool_loads(in_tmp, capsys):
    config = train_predictor.main(["-cache", MBV3_CACHE, "-model", "bilinear", "-target", "acc", "-quiet", "-plots"])
    assert config["chkpt"] == "ofa_mbv3_custom_acc_bilinear"
    assert config["results"]["test"]["Spearman"] > 0.98
    out = capsys.readouterr().out
    for expected in ("fitted bilinear", "Test set (acc): MAE", "KendallTau", "S3  depth: D2", "L1 e3k3=",
                     "Summary in the FE-MLP read-out's categories", "expansion"):
        assert expected in out
    chkpt = in_tmp / "saved_models" / "ofa_mbv3_custom_acc_bilinear_predictor.pt"
    assert (in_tmp / "plots" / "ofa_mbv3_custom_acc_bilinear_readout.png").exists()
    state = torch.load(chkpt, weights_only=True)
    assert set(state) == {"coef", "intercept", "test_metrics"}
    model, loaded_config = load_predictor(str(chkpt))
    assert isinstance(model, BilinearPredictor) and loaded_config["model"] == "bilinear"
    assert model.test_metrics[2].item() == pytest.approx(config["results"]["test"]["Spearman"])
    archs = _random_archs("ofa_mbv3", 7, 5)
    path = in_tmp / "archs.json"
    path.write_text(json.dumps([a.to_json() for a in archs]))
    got = predict.main(["-chkpt", str(chkpt), "-archs", str(path), "-out", str(in_tmp / "p.json")])
    expected = model.intercept.item() + layout("ofa_mbv3").encode(archs) @ model.coef.numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_a_baseline_latency_model_serves_as_device_predicted(in_tmp):
    from evaluation.evaluators import make_evaluator
    train_predictor.main(["-cache", MBV3_CACHE, "-model", "bilinear", "-target", "latency_cpu", "-quiet",
                          "-out_dir", "l1"])
    os.replace("l1/configs/ofa_mbv3_custom_latency_cpu_bilinear_config.json",
               "l1/saved_models/ofa_mbv3_custom_latency_cpu_bilinear_config.json")
    evaluator = make_evaluator("cpu_predicted", "ofa_mbv3", l1_dir=str(in_tmp / "l1" / "saved_models"))
    archs = _random_archs("ofa_mbv3", 5, 9)
    values = [v for _, v, _ in evaluator(archs)]
    model, _ = load_predictor(str(in_tmp / "l1" / "saved_models" / "ofa_mbv3_custom_latency_cpu_bilinear_predictor.pt"))
    np.testing.assert_allclose(values, model.predict(encode_archs(archs).batch()).numpy(), rtol=1e-6)
    assert all(10 < v < 80 for v in values)


def test_baselines_refuse_the_onnx_ir_format(in_tmp):
    with pytest.raises(UserError, match="-model bilinear reads the custom format"):
        train_predictor.main(["-model", "bilinear", "-format", "onnx_ir", "-families", "ofa_mbv3", "-quiet"])

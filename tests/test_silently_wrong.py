"""The answers that used to be silently wrong: each of these ran to the end with a wrong result before."""
import json
import os

import numpy as np
import pytest

import eval_topk_ofa
import make_demo_caches
import train_predictor
from iterators.errors import UserError
from iterators.measurement_log import MeasurementLog
from iterators.search_space import arch_from_json
from models.checkpoints import load_predictor, predictor_digest
from models.predictor import predict_archs
from rm_search import run_unit_pareto_search as rm_search
from tiny import snapshot, tiny_cache, tiny_corpus, tiny_predictor


def _search(tmp_path, name, acc_predictor, *extra):
    return rm_search.main(["-family", "ofa_mbv3", "-model_name", name, "-acc_predictor", acc_predictor,
                           "-metric", "cpu_predicted", "-l1_dir", str(tmp_path / "l1"), "-random_init_set_size", "8",
                           "-num_iterations", "1", "-eval_budget", "4", "-out_dir", str(tmp_path / "outputs"),
                           "-db", str(tmp_path / "shared.db"), "-quiet", *extra])


@pytest.fixture
def l1(tmp_path):
    tiny_predictor(tmp_path / "l1", "ofa_mbv3", "latency_cpu")
    return str(tmp_path / "l1")


def test_predictors_sharing_a_file_name_never_share_stored_values(tmp_path, l1):
    # same tag and name, other seed and width, in two -out_dirs: the case that gave identical fronts before
    first = tiny_predictor(tmp_path / "a", seed=1, gnn_dim=8)
    second = tiny_predictor(tmp_path / "b", seed=2, gnn_dim=16)
    assert os.path.basename(first) == os.path.basename(second)
    for name, chkpt in (("first", first), ("second", second)):
        state = _search(tmp_path, name, chkpt)
        model, config = load_predictor(chkpt)
        own = predict_archs(model, state.archs)
        np.testing.assert_allclose([p[0] for p in state.points], own, rtol=1e-6)
    digests = {predictor_digest(*load_predictor(c)) for c in (first, second)}
    assert len(digests) == 2


def test_latency_predictors_sharing_a_file_name_in_two_l1_dirs(tmp_path):
    corpus = tiny_corpus(tmp_path / "c_labeled_sgs.json")
    values = []
    for seed in (1, 2):
        l1_dir = tiny_predictor(tmp_path / f"l1_{seed}", "ofa_mbv3", "latency_cpu", seed=seed)
        results = eval_topk_ofa.main(["-unit_corpus", corpus, "-k", "2", "-n", "4", "-m", "cpu_predicted", "-quiet",
                                      "-l1_dir", os.path.dirname(l1_dir), "-db", str(tmp_path / "r.db")])
        model, _ = load_predictor(l1_dir)
        stored = [r[2]["cpu_predicted"] for r in results]
        np.testing.assert_allclose(stored, predict_archs(model, [r[0] for r in results]), rtol=1e-6)
        values.append(stored)
    assert values[0] != values[1]


@pytest.mark.parametrize("family, target, expected", [
    ("ofa_pn", "latency_cpu", "a predictor of ofa_pn"),     # reported its milliseconds as "accuracy" 78.5
    ("ofa_mbv3", "latency_cpu", "not accuracy"),
    ("ofa_mbv3", "acc/latency_cpu", "not accuracy"),
])
def test_acc_predictor_must_predict_accuracy_of_the_family(tmp_path, l1, family, target, expected):
    chkpt = tiny_predictor(tmp_path / "m", family, target)
    with pytest.raises(UserError, match=f"-acc_predictor .*{expected}"):
        _search(tmp_path, "wrong", chkpt)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("flags, expected", [(["-n", "-5"], "-n -5"), (["-start_idx", "-3"], "-start_idx -3")])
def test_negative_slices_are_refused(tmp_path, flags, expected):
    corpus = tiny_corpus(tmp_path / "c_labeled_sgs.json")
    with pytest.raises(UserError, match=expected):
        eval_topk_ofa.main(["-unit_corpus", corpus, "-k", "2", "-m", "flops", "-no_eval", *flags])


def test_resume_with_other_settings_is_refused_and_changes_nothing(tmp_path, l1):
    chkpt = tiny_predictor(tmp_path / "m")
    _search(tmp_path, "run", chkpt, "-seed", "3")
    before = snapshot(tmp_path / "outputs")
    with pytest.raises(UserError, match=r"-metric .*-seed \(was 3, now 4\)"):
        _search(tmp_path, "run", chkpt, "-resume", "-seed", "4", "-metric", "params")
    assert snapshot(tmp_path / "outputs") == before
    resumed = _search(tmp_path, "run", chkpt, "-resume", "-seed", "3", "-num_iterations", "2")  # grows: allowed
    assert max(resumed.iteration) == 2
    settings = json.loads((tmp_path / "outputs" / "run" / "settings.json").read_text())
    assert settings["seed"] == 3 and settings["num_iterations"] == 2


def test_an_unusable_db_leaves_nothing_that_blocks_the_next_run(tmp_path, l1):
    chkpt = tiny_predictor(tmp_path / "m")
    (tmp_path / "a_folder.db").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        _search(tmp_path, "run", chkpt, "-db", str(tmp_path / "a_folder.db"))
    assert not (tmp_path / "outputs").exists()
    assert len(_search(tmp_path, "run", chkpt).archs) == 12  # a fresh run, no -resume asked for


def test_cache_header_must_match_families(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pn = tiny_cache(tmp_path / "pn.jsonl.gz", "ofa_pn")
    with pytest.raises(UserError, match="is a cache of ofa_pn, not ofa_mbv3: pass -families ofa_pn"):
        train_predictor.main(["-cache", pn, "-families", "ofa_mbv3", "-epochs_predictor", "1", "-quiet"])
    # a file named for one family in the cache folder, holding another
    (tmp_path / "cache").mkdir()
    os.replace(pn, tmp_path / "cache" / "ofa_mbv3_custom_cache.jsonl.gz")
    with pytest.raises(UserError, match="is a cache of ofa_pn"):
        train_predictor.main(["-cache_dir", str(tmp_path / "cache"), "-epochs_predictor", "1", "-quiet"])
    assert not (tmp_path / "saved_models").exists()
    # without -families, the cache names the checkpoint
    config = train_predictor.main(["-cache", str(tmp_path / "cache" / "ofa_mbv3_custom_cache.jsonl.gz"),
                                   "-epochs_predictor", "1", "-quiet", "-batch_size", "16"])
    assert config["chkpt"].startswith("ofa_pn_custom_acc") and config["family"] == "ofa_pn"


def test_demo_caches_are_not_replaced_by_smaller_ones(tmp_path):
    shipped = tiny_cache(tmp_path / "ofa_mbv3_custom_cache.jsonl.gz", n=60)
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match="holds 60 architectures, more than -n 3: pass -force"):
        make_demo_caches.main(["-families", "ofa_mbv3", "-n", "3", "-out_dir", str(tmp_path)])
    assert snapshot(tmp_path) == before and os.path.getsize(shipped) > 0


def test_a_torn_last_line_of_the_partial_file_is_measured_again(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    rows = [{"resolution": 224, "config": [[f"mbconv3_e{e}_k5"] * 2] * 5, "flops": 1.0} for e in (3, 4)]
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:40])
    done = MeasurementLog(str(path), "ofa_mbv3").rows  # make_demo_caches.py's and profile_device.py's log
    assert list(done) == [arch_from_json(rows[0]).key()]
    assert path.read_text() == json.dumps(rows[0]) + "\n"  # appending starts on a fresh line
    assert "cut off by an interruption" in capsys.readouterr().err

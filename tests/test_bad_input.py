"""Every script on every bad input: exit code 2, one line on stderr naming the file or flag, no traceback, nothing
written or changed. Scripts run in-process (run_cli(main, argv)) on small inputs built once for the module."""
import gzip
import json
import os
import pickle
import shutil

import pytest
import torch

import eval_topk_ofa
import label_units
import make_demo_caches
import make_onnx_ir_caches
import predict
import save_topk_ofa
import train_predictor
from iterators.errors import run_cli
from rm_search import run_unit_pareto_search as rm_search
from tiny import snapshot, tiny_cache, tiny_corpus, tiny_predictor

SCRIPTS = {"train": train_predictor, "predict": predict, "label": label_units, "topk": save_topk_ofa,
           "eval": eval_topk_ofa, "search": rm_search, "demo": make_demo_caches, "onnx": make_onnx_ir_caches}


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def _gz(path, lines):
    with gzip.open(path, "wt") as f:
        f.write("".join(line + "\n" for line in lines))
    return str(path)


def _copy_with_config(src_chkpt, folder, name, config_text=None):
    """Copy a checkpoint under another name, with its config (or ``config_text``) beside it."""
    dst = os.path.join(folder, f"{name}_predictor.pt")
    shutil.copy(src_chkpt, dst)
    config = src_chkpt.replace("_predictor.pt", "_config.json")
    with open(os.path.join(folder, f"{name}_config.json"), "w") as f:
        f.write(config_text if config_text is not None else open(config).read())
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def build_world(root):
    """Valid and broken inputs of every kind, under ``root``; returns their paths by name."""
    d = {"root": str(root)}
    for sub in ("models", "pn", "l1", "bad"):
        (root / sub).mkdir()
    d["acc"] = tiny_predictor(root / "models", "ofa_mbv3", "acc")
    d["pn_lat"] = tiny_predictor(root / "pn", "ofa_pn", "latency_cpu")
    d["mbv3_lat"] = tiny_predictor(root / "models", "ofa_mbv3", "latency_cpu")
    tiny_predictor(root / "l1", "ofa_mbv3", "latency_cpu")  # cpu_predicted
    d["l1"] = str(root / "l1")
    (root / "upstream").mkdir()
    tiny_predictor(root / "upstream", name="minMAE_ofa_mbv3_custom_acc_GraphConv_sum_directed_srcc1")
    d["upstream"] = str(root / "upstream")
    d["corpus"] = tiny_corpus(root / "mbv3_labeled_sgs.json")
    d["pn_corpus"] = tiny_corpus(root / "pn_labeled_sgs.json", "ofa_pn")
    units = json.load(open(d["corpus"]))
    d["space"] = str(root / "mbv3_2_search_space.json")
    json.dump([[u["config"] for u in units if u["unit"] == p] for p in range(1, 6)], open(d["space"], "w"))
    d["cache"] = tiny_cache(root / "mbv3.jsonl.gz")
    d["pn_cache"] = tiny_cache(root / "pn.jsonl.gz", "ofa_pn")
    header = json.dumps({"autobuild_cache": 1, "family": "ofa_mbv3", "format": "custom", "metrics": {}})
    row = json.dumps({"resolution": 224, "config": [["mbconv3_e4_k5"] * 2] * 5, "acc": 0.7})
    bad = root / "bad"
    d["truncated"] = str(bad / "truncated.jsonl.gz")
    open(d["truncated"], "wb").write(open(d["cache"], "rb").read()[:300])
    d["garbage"] = str(bad / "garbage.jsonl.gz")
    open(d["garbage"], "wb").write(os.urandom(500))
    d["empty"] = str(bad / "empty.jsonl.gz")
    open(d["empty"], "wb").close()
    d["empty_gz"] = _gz(bad / "empty_gz.jsonl.gz", [])
    d["misheaded"] = _gz(bad / "misheaded.jsonl.gz", [json.dumps({"family": "ofa_mbv3"}), row])
    d["unknown_family"] = _gz(bad / "unknown_family.jsonl.gz", [header.replace("ofa_mbv3", "ofa_resnet"), row])
    d["bad_row"] = _gz(bad / "bad_row.jsonl.gz", [header, row, "{not json"])
    d["bad_arch"] = _gz(bad / "bad_arch.jsonl.gz", [header, row.replace("e4_k5", "e5_k5")])
    d["string_metric"] = _gz(bad / "string_metric.jsonl.gz", [header, row.replace("0.7", '"high"')])
    d["header_only"] = _gz(bad / "header_only.jsonl.gz", [header])
    d["evil_pkl"] = str(bad / "evil_cache.pkl")
    pickle.dump([{"original config": (224, [["mbconv3_e4_k5"] * 2] * 5), "acc": Evil()}], open(d["evil_pkl"], "wb"))
    d["text"] = str(bad / "text.json")
    open(d["text"], "w").write("this is not JSON")
    d["afile"] = str(bad / "afile")
    open(d["afile"], "w").write("x")
    arch = {"resolution": 224, "config": [["mbconv3_e4_k5"] * 2] * 5}
    d["archs"] = str(root / "archs.json")
    json.dump([arch], open(d["archs"], "w"))
    d["archs_nan"] = str(bad / "archs_nan.json")
    open(d["archs_nan"], "w").write('[{"resolution": NaN, "config": %s}]' % json.dumps(arch["config"]))
    d["archs_pn"] = str(bad / "archs_pn.json")
    json.dump([{"resolution": 224, "config": [["mbconv2_e4_k5"] * 2] * 5 + [["mbconv2_e4_k5"]]}],
              open(d["archs_pn"], "w"))
    d["archs_dict"] = str(bad / "archs_dict.json")
    json.dump(arch, open(d["archs_dict"], "w"))
    chkpt_bytes = open(d["acc"], "rb").read()
    d["garbage_chkpt"] = _copy_with_config(d["acc"], str(bad), "garbage")
    open(d["garbage_chkpt"], "wb").write(os.urandom(2000))
    d["truncated_chkpt"] = _copy_with_config(d["acc"], str(bad), "truncated")
    open(d["truncated_chkpt"], "wb").write(chkpt_bytes[:len(chkpt_bytes) // 2])
    d["empty_chkpt"] = _copy_with_config(d["acc"], str(bad), "empty")
    open(d["empty_chkpt"], "wb").close()
    d["mixed_chkpt"] = _copy_with_config(d["pn_lat"], str(bad), "mixed",
                                         open(d["acc"].replace("_predictor.pt", "_config.json")).read())
    d["bad_config"] = _copy_with_config(d["acc"], str(bad), "badconfig", "{not json")
    d["config_list"] = _copy_with_config(d["acc"], str(bad), "configlist", "[1, 2]")
    d["no_config"] = str(bad / "noconfig_predictor.pt")
    shutil.copy(d["acc"], d["no_config"])
    d["evil_config"] = str(bad / "evilconfig_predictor.pt")
    shutil.copy(d["acc"], d["evil_config"])
    pickle.dump(Evil(), open(bad / "evilconfig_config.pkl", "wb"))
    d["notadb"] = d["text"]
    d["partial_dir"] = str(root / "partial")
    os.makedirs(d["partial_dir"])
    good = json.dumps({**arch, "flops": 1.0})
    open(os.path.join(d["partial_dir"], ".ofa_mbv3_measurements.partial.jsonl"), "w").write(
        good + "\n{torn in the middle\n" + good + "\n")
    d["big_cache_dir"] = str(root / "bigcache")
    os.makedirs(d["big_cache_dir"])
    tiny_cache(os.path.join(d["big_cache_dir"], "ofa_mbv3_custom_cache.jsonl.gz"), n=60)
    # an earlier search, to resume
    d["outputs"] = str(root / "outputs")
    rm_search.main(_search_args(d, "-model_name", "prior", "-db", str(root / "search.db")))
    return d


def _search_args(d, *extra):
    return ["-family", "ofa_mbv3", "-acc_predictor", d["acc"], "-metric", "cpu_predicted", "-l1_dir", d["l1"],
            "-random_init_set_size", "6", "-num_iterations", "1", "-eval_budget", "4", "-out_dir", d["outputs"],
            "-quiet", *extra]


def _search(*extra):
    return lambda d: _search_args(d, "-model_name", "new", "-db", os.path.join(d["root"], "search.db"), *extra)


def _train(cache_key, *extra):
    return lambda d: ["-cache", d[cache_key], "-epochs_predictor", "1", "-quiet", "-out_dir", d["root"], *extra]


def _predict(chkpt_key, archs_key="archs", *extra):
    return lambda d: ["-chkpt", d[chkpt_key], "-archs", d[archs_key], *extra]


def _eval(*extra, corpus="corpus"):
    return lambda d: ["-unit_corpus", d[corpus], "-k", "2", "-l1_dir", d["l1"], "-quiet",
                      "-db", os.path.join(d["root"], "evals", "r.db"), *extra]


# (script, argv builder, text the error line must contain)
CASES = [
    # caches
    ("train", _train("truncated"), "truncated.jsonl.gz"),
    ("train", _train("garbage"), "garbage.jsonl.gz"),
    ("train", _train("empty"), "empty.jsonl.gz"),
    ("train", _train("empty_gz"), "empty_gz.jsonl.gz is empty"),
    ("train", _train("misheaded"), "not the header of an AutoBuild cache"),
    ("train", _train("unknown_family"), "ofa_resnet"),
    ("train", _train("bad_row"), "bad_row.jsonl.gz:3"),
    ("train", _train("bad_arch"), "bad_arch.jsonl.gz:2"),
    ("train", _train("string_metric"), "metric 'acc' is 'high', not a number"),
    ("train", _train("header_only"), "no architectures"),
    ("train", _train("evil_pkl"), "builtins.print"),
    ("train", lambda d: ["-cache", os.path.join(d["root"], "nowhere.jsonl.gz")], "nowhere.jsonl.gz: no such"),
    ("train", lambda d: ["-families", "ofa_pn", "-cache_dir", d["partial_dir"]], "no cache for family 'ofa_pn'"),
    ("train", _train("pn_cache", "-families", "ofa_mbv3"), "is a cache of ofa_pn, not ofa_mbv3"),
    ("train", _train("cache", "-families", "ofa_pn"), "is a cache of ofa_mbv3, not ofa_pn"),
    # targets
    ("train", _train("cache", "-target", "__import__('os').system('echo hacked')"), "-target"),
    ("train", _train("cache", "-target", "acc.__class__"), "-target"),
    ("train", _train("cache", "-target", "acc/0"), "only 0 networks"),
    ("train", _train("cache", "-target", "10**10**10"), "-target"),
    ("train", _train("cache", "-target", "acc*0"), "is 0 on all 60 networks"),
    ("train", _train("cache", "-target", "flop"), "unknown metric(s) flop"),
    ("train", _train("cache", "-target", "np.clip(acc, 1, 2, 3, 4)"), "cannot evaluate -target"),
    ("train", _train("cache", "-target", "(" * 300 + "acc" + ")" * 300), "-target"),
    # flags and output paths
    ("train", _train("cache", "-epochs_predictor", "0"), "-epochs_predictor"),
    ("train", _train("cache", "-gnn_type", "Transformer"), "-gnn_type"),
    ("train", lambda d: ["-cache", d["cache"], "-out_dir", os.path.join(d["afile"], "out")], "-out_dir"),
    # predict: architectures and checkpoints
    ("predict", _predict("acc", "text"), "text.json: not a valid architecture list"),
    ("predict", _predict("acc", "archs_nan"), "resolution must be an integer, got nan"),
    ("predict", _predict("acc", "archs_dict"), "expected a JSON list"),
    ("predict", _predict("acc", "archs_pn"), "architecture 0"),
    ("predict", lambda d: ["-chkpt", d["acc"], "-archs", os.path.join(d["root"], "none.json")], "none.json: no such"),
    ("predict", _predict("garbage_chkpt"), "garbage_predictor.pt: not a valid predictor checkpoint"),
    ("predict", _predict("truncated_chkpt"), "truncated_predictor.pt: not a valid predictor checkpoint"),
    ("predict", _predict("empty_chkpt"), "empty_predictor.pt: not a valid predictor checkpoint"),
    ("predict", _predict("mixed_chkpt"), "mixed_predictor.pt: the weights do not fit the config"),
    ("predict", _predict("no_config"), "no config for"),
    ("predict", _predict("bad_config"), "badconfig_config.json: not a valid predictor config"),
    ("predict", _predict("config_list"), "expected a dict of training arguments"),
    ("predict", _predict("evil_config"), "builtins.print"),
    ("predict", lambda d: ["-chkpt", d["root"], "-archs", d["archs"]], "no such checkpoint"),
    ("predict", lambda d: ["-chkpt", os.path.join(d["root"], "x.pt"), "-archs", d["archs"]], "x.pt"),
    ("predict", lambda d: _predict("acc")(d) + ["-out", d["root"]], "is a folder"),
    ("predict", lambda d: _predict("acc")(d) + ["-out", os.path.join(d["afile"], "p.json")], "-out"),
    ("predict", lambda d: ["-chkpt", d["acc"]], "give either -archs or -onnx"),
    # label_units, save_topk_ofa
    ("label", lambda d: ["-chkpt", d["garbage_chkpt"], "-out_dir", d["root"]], "garbage_predictor.pt"),
    ("label", lambda d: ["-chkpt", d["acc"], "-out_dir", os.path.join(d["afile"], "u")], "-out_dir"),
    ("label", lambda d: ["-chkpt", d["acc"], "-resolution", "100", "-out_dir", d["root"]], "resolution 100"),
    ("topk", lambda d: ["-unit_corpus", d["text"], "-k", "2", "-out_dir", d["root"]], "text.json"),
    ("topk", lambda d: ["-unit_corpus", d["cache"], "-k", "2", "-out_dir", d["root"]], "mbv3.jsonl.gz"),
    ("topk", lambda d: ["-unit_corpus", d["corpus"], "-k", "0", "-out_dir", d["root"]], "k"),
    ("topk", lambda d: ["-unit_corpus", d["corpus"], "-k", "2", "-out_dir", os.path.join(d["afile"], "e")],
     "-out_dir"),
    # eval_topk_ofa
    ("eval", _eval("-m", "cpu_predicted", "-n", "-5"), "-n -5"),
    ("eval", _eval("-m", "cpu_predicted", "-n", "0"), "-n 0"),
    ("eval", _eval("-m", "cpu_predicted", "-start_idx", "-3"), "-start_idx -3"),
    ("eval", _eval("-m", "cpu_predicted", "-start_idx", "32"), "-start_idx 32"),
    ("eval", _eval("-m", "energy"), "-m energy: unknown metric"),
    ("eval", _eval("-m", "2080ti_predicted"), "no 2080ti latency predictor"),
    ("eval", _eval("-m", "acc"), "-m acc needs -supernet_path"),
    *([] if torch.cuda.is_available() else [("eval", _eval("-m", "gpu"), "-m gpu cuda: CUDA is not available")]),
    ("eval", lambda d: _eval("-m", "acc", "-supernet_path", d["afile"], "-imagenet_dir", d["root"])(d), "train/"),
    ("eval", lambda d: _eval("-m", "acc", "-supernet_path", os.path.join(d["root"], "none"),
                             "-imagenet_dir", d["root"])(d), "ofa_mbv3_d234_e346_k357_w1.2"),
    ("eval", lambda d: _eval("-m", "cpu_predicted")(d) + ["-db", d["root"]], "is a folder"),
    ("eval", lambda d: _eval("-m", "cpu_predicted")(d) + ["-db", d["notadb"]], "cannot use it as a results database"),
    ("eval", lambda d: _eval("-m", "cpu_predicted")(d) + ["-export", os.path.join(d["root"], "out.xlsx")],
     "-export"),
    ("eval", lambda d: _eval("-m", "cpu_predicted")(d) + ["-l1_dir", os.path.join(d["root"], "none")], "-l1_dir"),
    ("eval", _eval("-m", "cpu_predicted", "-k", "1", "1"), "-k 1 1"),
    ("eval", _eval("-m", "cpu_predicted", corpus="text"), "text.json"),
    ("eval", _eval("-m", "cpu_predicted", corpus="cache"), "mbv3.jsonl.gz"),
    ("eval", _eval("-m", "cpu_predicted", "-res", "500"), "resolution 500"),
    # rm_search
    ("search", lambda d: _search()(d) + ["-acc_predictor", d["pn_lat"]], "a predictor of ofa_pn"),
    ("search", lambda d: _search()(d) + ["-acc_predictor", d["mbv3_lat"]], "not accuracy"),
    ("search", lambda d: _search()(d) + ["-acc_predictor", d["garbage_chkpt"]], "garbage_predictor.pt"),
    ("search", lambda d: _search()(d) + ["-db", d["root"]], "is a folder"),
    ("search", lambda d: _search()(d) + ["-db", d["notadb"]], "cannot use it as a results database"),
    ("search", lambda d: _search()(d) + ["-metric", "2080ti_predicted"], "no 2080ti latency predictor"),
    ("search", lambda d: _search()(d) + ["-metric", "acc"], "-metric"),
    ("search", lambda d: _search()(d) + ["-unit_corpus", d["text"]], "text.json"),
    ("search", lambda d: _search("-family", "ofa_pn")(d) + ["-unit_corpus", d["space"], "-acc_predictor",
                                                            d["acc"]], "pass -family ofa_mbv3"),
    ("search", lambda d: _search_args(d, "-model_name", "prior", "-db", os.path.join(d["root"], "search.db")),
     "pass -resume"),
    ("search", lambda d: _search_args(d, "-model_name", "prior", "-db", os.path.join(d["root"], "search.db"),
                                      "-resume", "-seed", "1"), "-seed (was 0, now 1)"),
    ("search", lambda d: _search_args(d, "-model_name", "prior", "-db", os.path.join(d["root"], "search.db"),
                                      "-resume", "-acc_predictor", d["pn_lat"]), "-acc_predictor"),
    ("search", _search("-completed_iter", "2"), "-resume"),
    ("search", _search("-pareto_init_checkpoint", "x.pkl"), "-resume"),
    ("search", _search("-lat_predictor_checkpoint", "x.pt"), "-metric <device>_predicted"),
    ("search", _search("-mutate_prob_type", "npu"), "-unit_corpus"),
    ("search", _search("-supernet_name", "ofa_proxyless_d234_e346_k357_w1.3"), "ofa_mbv3_d234_e346_k357_w1.2"),
    ("search", _search("-supernet_name", "ofa_mbv3_d234_e346_k357_w1.2"), "-supernet_checkpoint_dir"),
    ("search", _search("-stage_mutate_prob", "2"), "-stage_mutate_prob"),
    ("search", lambda d: _search()(d) + ["-out_dir", os.path.join(d["afile"], "o")], "-out_dir"),
    # the demo-cache builders
    ("demo", lambda d: ["-families", "ofa_mbv3", "-n", "3", "-out_dir", d["big_cache_dir"]], "pass -force"),
    ("demo", lambda d: ["-families", "ofa_mbv3", "-n", "3", "-out_dir", d["partial_dir"],
                        "-upstream_dir", d["upstream"]], ".partial.jsonl:2"),
    ("demo", lambda d: ["-families", "ofa_resnet", "-out_dir", d["root"]], "ofa_resnet"),
    ("demo", lambda d: ["-n", "-3", "-out_dir", d["root"]], "-n"),
    ("demo", lambda d: ["-families", "ofa_mbv3", "-n", "3", "-out_dir", os.path.join(d["root"], "new"),
                        "-upstream_dir", os.path.join(d["root"], "none")], "no such checkpoint"),
    ("onnx", lambda d: ["-n", "0", "-out_dir", d["root"]], "-n 0"),
    ("onnx", lambda d: ["-families", "ofa_resnet", "-out_dir", d["root"]], "ofa_resnet"),
    ("onnx", lambda d: ["-families", "ofa_mbv3", "-n", "3", "-out_dir", os.path.join(d["afile"], "c")], "-out_dir"),
]


@pytest.mark.parametrize("script, argv, expected", CASES,
                         ids=[f"{i:02d}-{c[0]}-{c[2][:30]}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_changes_nothing(world, script, argv, expected, capsys, monkeypatch):
    monkeypatch.chdir(world["root"])
    args = argv(world)
    before = snapshot(world["root"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(SCRIPTS[script].main, args)
    out = capsys.readouterr()
    assert exit_info.value.code == 2
    assert out.err.count("\n") == 1 and out.err.startswith("error: "), out.err
    assert "Traceback" not in out.err + out.out
    assert expected in out.err, out.err
    assert snapshot(world["root"]) == before


def test_a_refused_pickle_in_l1_dir_is_skipped_with_a_warning(tmp_path, capsys):
    from evaluation.evaluators import latency_predictors, make_evaluator
    l1 = tmp_path / "l1"
    tiny_predictor(l1, "ofa_mbv3", "latency_cpu")
    shutil.copy(next(l1.glob("*_predictor.pt")), l1 / "evil_predictor.pt")
    pickle.dump(Evil(), open(l1 / "evil_config.pkl", "wb"))
    assert list(latency_predictors("ofa_mbv3", str(l1))) == ["cpu"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: -l1_dir: skipping evil_predictor.pt" in err and "builtins.print" in err
    assert make_evaluator("CPU_predicted", "ofa_mbv3", l1_dir=str(l1)).predictor

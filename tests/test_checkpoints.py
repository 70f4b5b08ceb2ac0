import json
import os
import shutil

import numpy as np
import pytest
import torch

import predict
from conftest import UPSTREAM, upstream_checkpoint
from iterators.encoding import encode_archs
from iterators.errors import run_cli
from iterators.safe_pickle import RefusedPickle
from iterators.search_space import arch_from_json
from models.checkpoints import find_config, load_predictor, save_predictor
from models.predictor import build_predictor

REFERENCE = os.path.join(UPSTREAM, "reference_sample.json")
TARGETS = ("acc", "latency_gpu", "latency_cpu", "latency_npu")


@pytest.fixture(scope="module")
def reference():
    with open(REFERENCE) as f:
        return json.load(f)["families"]


@pytest.mark.parametrize("family", ["ofa_mbv3", "ofa_pn"])
@pytest.mark.parametrize("target", TARGETS)
def test_published_checkpoints_reproduce_the_original_code(reference, family, target):
    entries = reference[family]
    model, config = load_predictor(upstream_checkpoint(family, target))
    assert config["family"] == family and config["gnn_type"] == "GraphConv"
    with torch.no_grad():
        pred = model.predict(encode_archs([arch_from_json(e) for e in entries]).batch()).numpy()
    expected = np.array([e[target] for e in entries])
    np.testing.assert_allclose(pred, expected, rtol=1e-6)


def test_predict_cli_writes_predictions_in_order(reference, tmp_path):
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps([{"resolution": e["resolution"], "config": e["config"]}
                                 for e in reference["ofa_mbv3"][:7]]))
    out = tmp_path / "pred.json"
    predict.main(["-chkpt", upstream_checkpoint("ofa_mbv3", "latency_gpu"), "-archs", str(archs), "-out", str(out)])
    got = json.loads(out.read_text())
    np.testing.assert_allclose(got, [e["latency_gpu"] for e in reference["ofa_mbv3"][:7]], rtol=1e-6)


def test_predict_cli_rejects_an_arch_of_another_family(reference, tmp_path, capsys):
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps([reference["ofa_pn"][0]]))
    with pytest.raises(SystemExit):
        run_cli(predict.main, ["-chkpt", upstream_checkpoint("ofa_mbv3", "acc"), "-archs", str(archs)])
    assert "architecture 0: OFA-MobileNetV3 (w1.2) has 5 stages, the config has 6" in capsys.readouterr().err


def test_own_checkpoint_round_trip_and_config_lookup(tmp_path):
    config = {"families": "ofa_pn", "family": "ofa_pn", "format": "custom", "target": "acc", "gnn_type": "SAGEConv",
              "gnn_dim": 8, "num_layers": 2, "aggr_method": "max", "chkpt": "demo_ofa_pn"}
    model = build_predictor(config).eval()
    model.target_moments.copy_(torch.tensor([0.7, 0.1]))
    model_path, _ = save_predictor(model, config, str(tmp_path / "saved_models"), str(tmp_path / "configs"))
    loaded, loaded_config = load_predictor(model_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all()), k
    assert loaded_config["gnn_type"] == "SAGEConv"
    # a config beside the checkpoint is found too
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(model_path, flat)
    shutil.copy(tmp_path / "configs" / "demo_ofa_pn_config.json", flat)
    assert find_config(str(flat / "demo_ofa_pn_predictor.pt")) == str(flat / "demo_ofa_pn_config.json")


def test_a_config_pickle_naming_other_classes_is_refused(tmp_path):
    import argparse
    import pickle

    shutil.copy(upstream_checkpoint("ofa_pn", "acc"), tmp_path / "x_predictor.pt")
    (tmp_path / "x_config.pkl").write_bytes(pickle.dumps(argparse.Namespace(gnn_dim=8)))
    with pytest.raises(RefusedPickle):
        load_predictor(str(tmp_path / "x_predictor.pt"))

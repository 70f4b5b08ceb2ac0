import json
import os

import numpy as np
import pytest
import torch

import train_predictor
from conftest import HELP_JSON, REPO
from iterators.caches import load_cache, write_cache
from iterators.encoding import encode_archs
from models.plots import layered_layout
from models.predictor import build_predictor
from models.training import FlatAdamW, fit


def _spearman(config):
    return config["results"]["test"]["Spearman"]


def test_demo_cache_latency_cpu(in_tmp):
    cache = os.path.join(REPO, "cache", "ofa_mbv3_custom_cache.jsonl.gz")
    config = train_predictor.main(["-cache", cache, "-target", "latency_cpu", "-epochs_predictor", "60", "-quiet"])
    assert _spearman(config) > 0.8
    saved = in_tmp / "saved_models" / f"{config['chkpt']}_predictor.pt"
    assert saved.exists() and (in_tmp / "configs" / f"{config['chkpt']}_config.json").exists()
    assert config["chkpt"] == "ofa_mbv3_custom_latency_cpu_GATv2Conv_mean_directed_srcc1"


def test_real_gpu_latency_of_help(in_tmp, capsys):
    config = train_predictor.main(["-cache", HELP_JSON, "-target", "latency_2080ti_64", "-epochs_predictor", "15",
                                   "-quiet", "-tag", "help"])
    assert _spearman(config) > 0.9
    out = capsys.readouterr().out
    for expected in ("Test set (latency_2080ti_64): MAE", "KendallTau", "hop 4:", "FE-MLP read-out", "kernel",
                     "Hop moments"):
        assert expected in out
    readout = config["results"]["fe_readout"]
    assert set(readout) == {"stage", "layer", "block_type", "expansion", "kernel", "resolution"}
    assert all(v >= 0 for scores in readout.values() for v in scores.values())


@pytest.fixture
def small_cache(tmp_path):
    """200 HELP architectures with their measured latency, in the toolkit's own format, one missing a metric."""
    help_cache = load_cache(HELP_JSON)
    entries = [dict(e) for e in help_cache.entries[:200]]
    del entries[7]["latency_v100_64"]
    path = str(tmp_path / "small.jsonl.gz")
    write_cache(path, "ofa_mbv3", help_cache.archs[:200], entries, {})
    return path


def test_plots_and_skipped_entries(in_tmp, small_cache, capsys):
    config = train_predictor.main(["-cache", small_cache, "-target", "latency_v100_64", "-epochs_predictor", "2",
                                   "-quiet", "-plots", "-gnn_type", "GraphConv", "-aggr_method", "sum",
                                   "-num_layers", "3"])
    out = capsys.readouterr().out
    assert "199 on" not in out and "1 skipped for a missing or non-finite metric" in out
    plots = in_tmp / "plots"
    assert (plots / f"{config['chkpt']}_training.png").exists()
    # one drawing of the best network per hop level: hop 0 (the FE-MLP output) and one per GNN layer
    assert sorted(p.name for p in plots.glob("*_best_hop*.png")) == [f"{config['chkpt']}_best_hop{h}.png"
                                                                    for h in range(4)]
    saved = json.loads((in_tmp / "configs" / f"{config['chkpt']}_config.json").read_text())
    assert saved["results"]["n_train"] + saved["results"]["n_test"] == 199


def test_layered_layout_by_hand():
    # 0 -> 1 -> 2 -> 4 and a skip 0 -> 3 -> 4: layers are longest paths from the source
    xy = layered_layout(5, [(0, 1), (1, 2), (2, 4), (0, 3), (3, 4)])
    np.testing.assert_array_equal(xy[:, 0], [0, 1, 2, 1, 3])
    np.testing.assert_array_equal(xy[:, 1], [0, 0, 0, -1, 0])  # node 3 shares layer 1 with node 1: second slot
    # a 7-node chain wrapped after 3 layers: rows 1 (width 1) + 1 apart
    chain = layered_layout(7, [(i, i + 1) for i in range(6)], row_length=3)
    np.testing.assert_array_equal(chain, [[0, 0], [1, 0], [2, 0], [0, -2], [1, -2], [2, -2], [0, -4]])
    with pytest.raises(ValueError, match="acyclic"):
        layered_layout(2, [(0, 1), (1, 0)])


def test_interrupted_training_keeps_the_model():
    archs = load_cache(HELP_JSON).archs[:64]
    graphs = encode_archs(archs)
    model = build_predictor({"families": "ofa_mbv3", "gnn_type": "GCNConv", "gnn_dim": 8, "num_layers": 2,
                             "aggr_method": "mean"})
    calls = {"n": 0}

    def loss_fn(pred, target, embeds):
        calls["n"] += 1
        if calls["n"] == 5:  # during the third epoch of two batches each
            raise KeyboardInterrupt
        return ((pred - target) ** 2).mean()

    history = fit(model, graphs, torch.randn(64), np.arange(64), epochs=10, batch_size=32, loss_fn=loss_fn, seed=0,
                  progress=False)
    assert len(history) == 2 and not model.training


def test_flat_adamw_is_torch_adamw_with_gradient_clipping():
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    model.load_state_dict(reference.state_dict())
    torch_optim = torch.optim.AdamW(reference.parameters(), lr=0.05, weight_decay=0.1)
    flat_optim = FlatAdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        x = torch.randn(16, 5, generator=gen) * (20 if step % 3 == 0 else 1)  # every third step needs clipping
        torch_optim.zero_grad()
        reference(x).pow(2).mean().backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 5.0)
        torch_optim.step()
        flat_optim.zero_grad()
        model(x).pow(2).mean().backward()
        flat_optim.step(5.0)
    flat_optim.release()
    for (name, a), b in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
        assert b.grad is None and b.data_ptr() != flat_optim.flat.data_ptr()  # its own memory again

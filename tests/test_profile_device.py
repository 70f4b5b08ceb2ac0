"""profile_device.py: sampling over the latency range, resumable measurement, import/export, training and install.

Most tests time a fake backend whose latency is a known function of the architecture, so they are fast and their
answers are known; the real backends are checked on two small subnets.
"""
import csv
import gzip
import json
import os
import random
import time

import numpy as np
import onnxruntime
import pytest
import torch

import eval_topk_ofa
import predict
import profile_device
from conftest import REPO
from evaluation import profiling
from evaluation.evaluators import latency_predictors, latency_tables
from evaluation.latency import LatencyBackend, export_onnx, make_backend, measure, reference_arch
from evaluation.ofa_manager import build_subnet
from iterators.errors import UserError, run_cli
from iterators.measurement_log import MeasurementLog
from iterators.sampling import spread_archs
from iterators.search_space import RESOLUTIONS, make_arch, random_arch, to_ofa


def fake_latency(arch) -> float:
    """A latency that grows with every block's e * k and with the image area, known exactly."""
    return (arch.resolution / 224) ** 2 * sum(e * k for stage in arch.stages for e, k in stage) / 10


class FakeBackend(LatencyBackend):
    """Times nothing: a network's 'time' is fake_latency; the reference's is 10 ms. Can interrupt like Ctrl-C."""

    name = "fake"

    def __init__(self, interrupt_at: int | None = None):
        super().__init__(threads=1, batch_size=1)
        self.interrupt_at, self.prepared = interrupt_at, []

    def prepare(self, arch):
        if arch == reference_arch(arch.family):
            return lambda: 10.0
        if len(self.prepared) == self.interrupt_at:
            raise KeyboardInterrupt
        self.prepared.append(arch.key())
        return lambda: fake_latency(arch)

    def time_ms(self, run) -> float:
        return run()


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Every output in tmp dirs; FLOPs counting (thop, slow) replaced by a stub."""
    monkeypatch.setattr(profiling, "count_flops_params", lambda model, resolution: (1.0, 1.0))
    monkeypatch.setattr(profiling, "build_subnet", lambda arch: None)
    monkeypatch.chdir(tmp_path)
    return ["-cache_dir", str(tmp_path / "cache"), "-l1_dir", str(tmp_path / "l1"), "-out_dir", str(tmp_path),
            "-quiet", "-epochs_predictor", "2"]


def use_backend(monkeypatch, backend):
    monkeypatch.setattr(profile_device, "make_backend", lambda *args, **kwargs: backend)


def test_spread_archs_is_prefix_stable_distinct_and_wider_than_uniform():
    archs = spread_archs("ofa_mbv3", 300, seed=1)
    assert archs[:40] == spread_archs("ofa_mbv3", 40, seed=1)
    assert len({a.key() for a in archs}) == 300
    rng = random.Random(1)
    uniform = [random_arch("ofa_mbv3", rng, RESOLUTIONS) for _ in range(300)]

    def size(a):  # grows with every choice, like FLOPs
        return a.resolution ** 2 * sum(e * k * k for stage in a.stages for e, k in stage)
    spread, flat = np.array([size(a) for a in archs]), np.array([size(a) for a in uniform])
    assert spread.min() < 0.7 * flat.min() and spread.max() > 1.3 * flat.max()
    # even a short prefix (a run stopped by its time budget) reaches both ends of the range
    prefix = np.array([size(a) for a in archs[:16]])
    assert prefix.min() < np.percentile(flat, 5) and prefix.max() > np.percentile(flat, 95)


def test_measurement_log_drops_a_torn_line_and_refuses_other_settings(tmp_path):
    path = str(tmp_path / "log.jsonl")
    archs = spread_archs("ofa_mbv3", 3)
    with MeasurementLog(path, "ofa_mbv3", {"backend": "a"}) as log:
        log.append(archs[0], {"latency_ms": 1.0})
        log.append(archs[1], {"latency_ms": 2.0})
    with open(path, "a") as f:
        f.write('{"resolution": 160, "config": [["mbconv3_e')  # killed while writing
    log = MeasurementLog(path, "ofa_mbv3", {"backend": "a"})
    assert len(log) == 2 and archs[1] in log
    log.append(archs[2], {"latency_ms": 3.0})
    log.close()
    assert [r["latency_ms"] for r in MeasurementLog(path, "ofa_mbv3").rows.values()] == [1.0, 2.0, 3.0]
    with pytest.raises(UserError, match="made with"):
        MeasurementLog(path, "ofa_mbv3", {"backend": "b"})


def test_paired_latency_is_the_ratio_times_the_reference_median(tmp_path):
    cache = profiling.DeviceCache(str(tmp_path), "ofa_mbv3", "dev", {"backend": "x", "paired": True})
    for arch, ratio, ref in zip(spread_archs("ofa_mbv3", 3), (0.5, 1.0, 2.0), (10.0, 30.0, 20.0)):
        cache.append(arch, {"latency_ratio": ratio, "ref_median_ms": ref, "latency_raw_ms": ratio * ref})
    path = cache.fold({}, {})
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f][1:]
    assert [r["latency_ms"] for r in rows] == [10.0, 20.0, 40.0]  # scale: median reference 20 ms
    assert not os.path.exists(profiling.cache_paths(str(tmp_path), "ofa_mbv3", "dev")[1])


def test_resume_after_interruption_measures_nothing_twice(dirs, monkeypatch, capsys, tmp_path):
    first = FakeBackend(interrupt_at=7)
    use_backend(monkeypatch, first)
    argv = ["-name", "dev", "-n", "24", *dirs]
    with pytest.raises(KeyboardInterrupt):  # run_cli turns it into "interrupted" and exit code 130
        profile_device.main(argv)
    assert "run the same command again" in capsys.readouterr().out
    assert len(first.prepared) == 7

    # a kill (not Ctrl-C) during the next network leaves a torn line; the resumed run must cope with it too
    partial = profiling.cache_paths(str(tmp_path / "cache"), "ofa_mbv3", "dev")[1]
    with open(partial, "a") as f:
        f.write('{"resolution": 2')
    second = FakeBackend()
    use_backend(monkeypatch, second)
    report = profile_device.main(argv)
    assert len(second.prepared) == 24 - 7
    assert not set(first.prepared) & set(second.prepared)
    cache_path = profiling.cache_paths(str(tmp_path / "cache"), "ofa_mbv3", "dev")[0]
    rows = [json.loads(line) for line in gzip.open(cache_path, "rt")][1:]
    assert len(rows) == 24
    measured = {make_arch(r["config"], r["resolution"]): r["latency_ms"] for r in rows}
    # the fake reference takes 10 ms, so every paired latency comes back to its fake latency exactly
    assert all(np.isclose(ms, fake_latency(a)) for a, ms in measured.items())
    assert report["n_networks"] == 24 and report["measured"] == 17

    # nothing is left to measure: a third run times no network
    third = FakeBackend()
    use_backend(monkeypatch, third)
    profile_device.main(argv)
    assert third.prepared == []


class SlowBackend(FakeBackend):
    def prepare(self, arch):
        time.sleep(0.2)
        return super().prepare(arch)


def test_ofa_pn_is_profiled_like_mbv3(dirs, monkeypatch, tmp_path):
    use_backend(monkeypatch, FakeBackend())
    report = profile_device.main(["-family", "ofa_pn", "-name", "dev", "-n", "20", *dirs])
    assert report["n_networks"] == 20 and latency_predictors("ofa_pn", str(tmp_path / "l1")) == {
        "dev": report["installed"]}
    assert latency_predictors("ofa_mbv3", str(tmp_path / "l1")) == {}


def test_budget_stops_measuring(tmp_path, monkeypatch):
    monkeypatch.setattr(profiling, "count_flops_params", lambda model, resolution: (1.0, 1.0))
    monkeypatch.setattr(profiling, "build_subnet", lambda arch: None)
    cache = profiling.DeviceCache(str(tmp_path), "ofa_mbv3", "dev", {"backend": "fake", "paired": True})
    done = profiling.measure_archs(SlowBackend(), spread_archs("ofa_mbv3", 10), cache, True, 0, 1, budget_s=0.5,
                                   progress=False)
    # the reference and every network take at least 0.2 s to prepare: at most 2 networks fit in 0.5 s
    assert done["stopped"] == "budget" and 1 <= done["measured"] <= 2 and len(cache) == done["measured"]


def write_csv(path, rows, columns):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def test_import_of_a_hand_made_csv_trains_and_installs(tmp_path, dirs, capsys):
    archs = spread_archs("ofa_mbv3", 30, seed=3, resolutions=(160, 192, 224))
    rows = [{"resolution": a.resolution, "config": json.dumps(a.config), "latency_ms": fake_latency(a)}
            for a in archs]
    rows.append(dict(rows[0], latency_ms=fake_latency(archs[0]) * 3))  # a repeat: the median of the two is kept
    rows.append(dict(rows[0], latency_ms=fake_latency(archs[0]) * 0.5))
    csv_path = str(tmp_path / "phone.csv")
    write_csv(csv_path, rows, ["resolution", "config", "latency_ms"])
    report = profile_device.main(["-name", "phone", "-import", csv_path, *dirs])
    assert report["n_networks"] == 30 and report["imported"] == 30
    installed = report["installed"]
    assert os.path.dirname(installed) == str(tmp_path / "l1")
    assert latency_predictors("ofa_mbv3", str(tmp_path / "l1")) == {"phone": installed}
    config = json.load(open(installed.replace("_predictor.pt", "_config.json")))
    assert config["device"] == "phone" and config["target"] == "latency_ms"
    assert config["profile"]["held_out"]["GNN"]["Spearman"] == pytest.approx(config["results"]["test"]["Spearman"])
    assert set(config["profile"]["held_out"]) == {"GNN", "lookup table"}  # both on the same held-out networks
    assert latency_tables("ofa_mbv3", str(tmp_path / "l1")) == {"phone": report["table"]}
    assert "phone_predicted" in capsys.readouterr().out

    # usable at once: eval_topk_ofa -m phone_predicted, predict.py on the installed checkpoint
    corpus = tmp_path / "tiny_labeled_sgs.json"
    corpus.write_text(json.dumps([{"unit": u, "config": [f"mbconv3_e{e}_k3", "mbconv3_e3_k3"], "hops": 1,
                                   "score": float(e)} for u in range(1, 6) for e in (3, 6)]))
    results = eval_topk_ofa.main(["-unit_corpus", str(corpus), "-k", "2", "-n", "3", "-m", "phone_predicted",
                                  "-l1_dir", str(tmp_path / "l1"), "-db", str(tmp_path / "r.db"), "-quiet"])
    assert len(results) == 3 and all(v is not None for _, _, v in results)
    from_table = eval_topk_ofa.main(["-unit_corpus", str(corpus), "-k", "2", "-n", "3", "-m", "phone_table",
                                     "-l1_dir", str(tmp_path / "l1"), "-db", str(tmp_path / "r.db"), "-quiet"])
    assert all(v is not None for _, _, v in from_table)
    archs_json = tmp_path / "archs.json"
    archs_json.write_text(json.dumps([a.to_json() for a in archs[:2]]))
    preds = predict.main(["-chkpt", installed, "-archs", str(archs_json)])
    assert len(preds) == 2

    # a second import under the same name extends the cache and replaces the installed predictor
    more = spread_archs("ofa_mbv3", 34, seed=3, resolutions=(160, 192, 224))[30:]
    json_path = tmp_path / "more.json"
    json_path.write_text(json.dumps([{**to_ofa(a), "latency_ms": fake_latency(a)} for a in more]))
    report = profile_device.main(["-name", "phone", "-import", str(json_path), *dirs])
    assert report["n_networks"] == 34
    assert latency_predictors("ofa_mbv3", str(tmp_path / "l1")) == {"phone": installed}


def test_export_only_writes_onnx_and_a_manifest_that_import_reads_back(tmp_path):
    out = tmp_path / "phone_nets"
    profile_device.main(["-name", "phone", "-n", "2", "-resolution", "128", "-export_only", str(out), "-quiet"])
    manifest = json.load(open(out / "manifest.json"))
    assert len(manifest["networks"]) == 2
    archs = spread_archs("ofa_mbv3", 2, resolutions=(128,))
    for entry, arch in zip(manifest["networks"], archs):
        assert make_arch(entry["config"], entry["resolution"]) == arch
        session = onnxruntime.InferenceSession(str(out / entry["file"]), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"input": np.zeros(entry["input_shape"], np.float32)})
        assert logits.shape == (1, 1000)
    template = list(csv.DictReader(open(out / "latencies.csv")))
    assert [r["file"] for r in template] == [e["file"] for e in manifest["networks"]]
    for r, ms in zip(template, (3.5, 7.25)):
        r["latency_ms"] = ms
    write_csv(out / "latencies.csv", template, ["file", "latency_ms"])
    read = profiling.read_latency_file(str(out / "latencies.csv"), "ofa_mbv3")
    assert read == [(archs[0], 3.5), (archs[1], 7.25)]


def test_onnx_export_computes_what_the_torch_subnet_computes():
    arch = spread_archs("ofa_mbv3", 1, resolutions=(128,))[0]
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = build_subnet(arch)(x).numpy()
    session = onnxruntime.InferenceSession(export_onnx(arch), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["torch-cpu", "onnxruntime"])
def test_real_backends_time_a_small_and_a_large_subnet(name):
    backend = make_backend(name, threads=1, batch_size=1)
    small = make_arch([["mbconv3_e3_k3"] * 2] * 5, 128)
    large = make_arch([["mbconv3_e6_k7"] * 4] * 5, 224)  # ~13x the MACs
    with backend.session():
        ref = backend.prepare(reference_arch("ofa_mbv3"))
        stats = {a: measure(backend, backend.prepare(a), ref, warmup=1, repeats=3) for a in (small, large)}
    for s in stats.values():
        assert s["repeats"] == 3 and 0 < s["p10_ms"] <= s["median_ms"] <= s["p90_ms"]
        assert s["ref_median_ms"] > 0 and s["ratio"] > 0
    assert stats[large]["ratio"] > 2 * stats[small]["ratio"]


def one_line_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: profile_device.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_bad_input_gives_one_clear_line(tmp_path, dirs, capsys):
    assert "unknown backend; choose one of torch-cpu, torch-cuda, onnxruntime" in one_line_error(
        ["-name", "dev", "-backend", "tflite", *dirs], capsys)
    if not torch.cuda.is_available():
        assert "CUDA is not available" in one_line_error(["-name", "dev", "-backend", "torch-cuda", *dirs], capsys)

    good = {"resolution": 224, "config": json.dumps([["mbconv3_e4_k5"] * 2] * 5), "latency_ms": 5.0}
    bad_arch = dict(good, config=json.dumps([["mbconv3_e4_k5"] * 5] + [["mbconv3_e4_k5"] * 2] * 4))
    path = str(tmp_path / "bad.csv")
    write_csv(path, [good, bad_arch], ["resolution", "config", "latency_ms"])
    err = one_line_error(["-name", "dev", "-import", path, *dirs], capsys)
    assert "bad.csv: row 2: stage 1 has 5 blocks" in err
    write_csv(path, [good, dict(good, resolution=100)], ["resolution", "config", "latency_ms"])
    assert "row 2: resolution 100 is outside" in one_line_error(["-name", "dev", "-import", path, *dirs], capsys)
    write_csv(path, [good, dict(good, config=json.dumps([["mbconv2_e4_k5"] * 2] * 5))],
              ["resolution", "config", "latency_ms"])
    assert "is not a mbconv3 block of ofa_mbv3" in one_line_error(["-name", "dev", "-import", path, *dirs], capsys)
    write_csv(path, [good, dict(good, latency_ms="")], ["resolution", "config", "latency_ms"])
    assert "row 2: latency_ms is empty" in one_line_error(["-name", "dev", "-import", path, *dirs], capsys)
    write_csv(path, [good], ["resolution", "config", "latency_ms"])
    assert "too few to train" in one_line_error(["-name", "dev", "-import", path, *dirs], capsys)
    write_csv(path, [{"resolution": 224, "config": good["config"]}], ["resolution", "config"])
    assert "needs a latency_ms column" in one_line_error(["-name", "dev", "-import", path, *dirs], capsys)
    assert "no such file" in one_line_error(["-name", "dev", "-import", str(tmp_path / "nope.csv"), *dirs], capsys)

    # the shipped cpu_predicted is not overwritten by a device called cpu (the repo's l1_models/ is only read)
    err = one_line_error(["-name", "cpu", "-import", path, *dirs, "-l1_dir", os.path.join(REPO, "l1_models")], capsys)
    assert "already provides cpu_predicted" in err
    assert "-name" in one_line_error(["-name", "my laptop", *dirs], capsys)

"""The Ray evaluation backend on a local Ray, started once for the whole module (2 workers on the 2 cores).

The fake evaluators below are module-level functions: Ray workers import this module by name to rebuild them.
"""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import ray

import eval_topk_ofa
from conftest import REPO, UPSTREAM, upstream_checkpoint
from evaluation.backends import InProcessBackend, make_backend
from evaluation.evaluators import Evaluator, make_evaluator
from evaluation.ray_backend import quiet_ray
from evaluation.results_store import ResultsStore
from iterators.errors import UserError
from iterators.search_space import random_arch
from rm_search import run_unit_pareto_search as search_script


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for every test here; the backends find it running and reuse it (and leave it running)."""
    quiet_ray()
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))  # workers import the fakes from here
    # 3 CPUs: the 2-worker pool the tests share, and 1 worker for a script that joins this Ray from outside; one
    # GPU declared, none needed: Ray hands it to a worker that asks for one, which is what is tested here
    ray.init(address="local", num_cpus=3, num_gpus=1, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    yield
    ray.shutdown()
    if old_path is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old_path


def _archs(n, resolution=128):
    return [random_arch("ofa_mbv3", random.Random(i), resolutions=(resolution,)) for i in range(n)]


def blocks_evaluator(delay: float = 0.0, timing: bool = False, fail_on: int | None = None,
                     metric: str = "blocks", log: str | None = None) -> Evaluator:
    """A fake metric: the number of blocks (or with ``metric="resolution"`` the resolution), after ``delay`` seconds
    per network. Details (and a line in the file ``log``) say which process measured it and when. A network of
    ``fail_on`` blocks raises ValueError."""
    def run(archs):
        for i, arch in enumerate(archs):
            start = time.time()
            if arch.n_blocks == fail_on:
                raise ValueError(f"cannot measure a network of {fail_on} blocks")
            time.sleep(delay)
            value = arch.resolution if metric == "resolution" else arch.n_blocks
            details = {"pid": os.getpid(), "start": start, "end": time.time(), "timing": timing}
            if log:
                with open(log, "a") as f:
                    f.write(json.dumps(details) + "\n")
            yield i, float(value), details
    return Evaluator(metric, "", False, run, timing_device="cpu" if timing else None)


def test_both_backends_give_every_result_once():
    archs = [random_arch("ofa_mbv3", random.Random(i)) for i in range(12)]
    results = {}
    for name, backend in (("in-process", InProcessBackend()), ("ray", make_backend(workers=2))):
        with backend:
            evaluators = [backend.evaluator(blocks_evaluator, 0.01, metric=m) for m in ("blocks", "resolution")]
            results[name] = sorted((i, m, v) for i, m, v, _ in backend.evaluate(archs, evaluators))
            summary = backend.summary()
    assert results["ray"] == results["in-process"] == sorted(
        [(i, "blocks", float(a.n_blocks)) for i, a in enumerate(archs)]
        + [(i, "resolution", float(a.resolution)) for i, a in enumerate(archs)])
    # both workers took part, and the summary gives each worker's rate per metric
    assert {line.split()[0] for line in summary.splitlines() if re.match(r"w\d", line)} == {"w1", "w2"}
    assert "networks/s" in summary and "start-up" in summary


def test_a_timing_runs_alone_on_one_worker_per_node(tmp_path):
    archs, log = _archs(8), str(tmp_path / "spans.jsonl")
    with make_backend(workers=2) as backend:
        stopped = backend.evaluator(blocks_evaluator, 0.3, log=log)(archs)
        next(stopped)
        stopped.close()  # a run stopped early leaves chunks running on both workers
        timed = list(backend.evaluator(blocks_evaluator, 0.05, True, log=log)(archs[:4]))
    spans = [json.loads(line) for line in open(log)]
    pool = [s for s in spans if not s["timing"]]
    timing = sorted((s["start"], s["end"], s["pid"]) for s in spans if s["timing"])
    assert len(timing) == 4 and len({pid for _, _, pid in timing}) == 1  # one timing worker on the one node
    assert len({s["pid"] for s in pool}) == 2 and timing[0][2] not in {s["pid"] for s in pool}
    assert max(s["end"] for s in pool) <= timing[0][0]  # the timing waited for the stopped run's chunks
    assert all(end <= start for (_, end, _), (start, _, _) in zip(timing, timing[1:]))  # one network at a time
    assert sorted(i for i, _, _ in timed) == [0, 1, 2, 3]


def test_an_evaluator_error_reaches_the_driver_as_itself():
    archs = _archs(8)
    bad = archs[5].n_blocks
    with make_backend(workers=2) as backend:
        with pytest.raises(ValueError, match=f"network of {bad} blocks"):
            list(backend.evaluator(blocks_evaluator, 0.0, False, bad)(archs))
        # the backend is usable afterwards: the stopped run's workers were replaced
        assert len(list(backend.evaluator(blocks_evaluator)(archs))) == 8
        with pytest.raises(RuntimeError, match="one metric at a time"):
            first, second = backend.evaluator(blocks_evaluator), backend.evaluator(blocks_evaluator)
            it = first(archs)
            next(it)
            next(second(archs))


def test_bad_backend_flags_are_user_errors():
    with pytest.raises(UserError, match="-workers 0"):
        make_backend(workers=0)
    with pytest.raises(UserError, match="-gpus_per_worker.*-workers N"):
        make_backend(gpus_per_worker=1)
    with pytest.raises(UserError, match="only 3 CPUs"):
        make_backend(workers=4).connect()
    with pytest.raises(UserError, match="only 1 GPUs"):
        make_backend(workers=1, gpus_per_worker=2).connect()


def test_in_process_runs_never_import_ray():
    code = ("import sys, eval_topk_ofa, rm_search.run_unit_pareto_search as s; from evaluation.backends import "
            "make_backend; make_backend(); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# --- the scripts with -workers ----------------------------------------------------------------------------------

CORPUS = [{"unit": u, "config": [f"mbconv3_e{e}_k3", "mbconv3_e3_k3"], "hops": 1, "score": float(e)}
          for u in range(1, 6) for e in (3, 6)]  # 2 units per position: 32 networks


def _eval_topk(tmp_path, db, *extra):
    corpus = tmp_path / "tiny_labeled_sgs.json"
    corpus.write_text(json.dumps(CORPUS))
    return eval_topk_ofa.main(["-unit_corpus", str(corpus), "-k", "2", "-db", str(tmp_path / db), "-quiet",
                               "-res", "128", *extra])


def _rows(path):
    with ResultsStore(str(path)) as store:
        return sorted((r["config"], r["resolution"], r["metric"], r["predictor"], r["value"], r["details"])
                      for r in store.rows())


def test_eval_topk_on_two_workers_stores_the_in_process_rows(tmp_path, capsys):
    _eval_topk(tmp_path, "local.db", "-m", "flops", "params", "-n", "4")
    _eval_topk(tmp_path, "ray.db", "-m", "flops", "params", "-n", "4", "-workers", "2")
    assert "networks/s" in capsys.readouterr().out
    rows = _rows(tmp_path / "ray.db")
    assert len(rows) == 8 and rows == _rows(tmp_path / "local.db")


def test_eval_topk_joins_a_running_cluster(tmp_path):
    """-ray_address: a second driver (the script, in its own process) joins the module's Ray and leaves it running."""
    corpus = tmp_path / "tiny_labeled_sgs.json"
    corpus.write_text(json.dumps(CORPUS))
    out = subprocess.run([sys.executable, "eval_topk_ofa.py", "-unit_corpus", str(corpus), "-k", "2", "-m", "params",
                          "-n", "2", "-res", "128", "-db", str(tmp_path / "r.db"), "-quiet", "-workers", "1",
                          "-ray_address", ray.get_runtime_context().gcs_address],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "evaluation on Ray: 1 workers" in out.stdout and len(_rows(tmp_path / "r.db")) == 2
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 3


def test_eval_topk_survives_a_killed_worker(tmp_path, monkeypatch):
    backends, puts, killed = [], [], []
    make = eval_topk_ofa.backend_from_args
    monkeypatch.setattr(eval_topk_ofa, "backend_from_args", lambda args: backends.append(make(args)) or backends[-1])
    real_put = ResultsStore.put

    def put_and_kill(store, arch, *args, **kwargs):
        puts.append(arch.key())
        if len(puts) == 3:  # mid-run: every worker has chunks in flight
            killed.append(next(iter(backends[0].pids().values())))
            os.kill(killed[0], signal.SIGKILL)
        return real_put(store, arch, *args, **kwargs)

    monkeypatch.setattr(ResultsStore, "put", put_and_kill)
    results = _eval_topk(tmp_path, "r.db", "-m", "flops", "-workers", "2", "-n", "10")
    assert len(puts) == 10 and len(set(puts)) == 10  # every network stored once
    assert all(values["flops"] is not None for _, _, values in results)
    assert backends[0].deaths and backends[0].resent >= 1 and killed[0] not in backends[0].pids().values()
    monkeypatch.undo()
    assert len(_rows(tmp_path / "r.db")) == 10


def test_search_on_two_workers_finds_the_in_process_front(tmp_path):
    (tmp_path / "l1").mkdir()
    for suffix in ("_predictor.pt", "_config.pkl"):
        name = f"minMAE_ofa_pn_latency_gpu_custom_latency_gpu_GraphConv_sum_directed_srcc1{suffix}"
        shutil.copy(f"{UPSTREAM}/l1_models/{name}", tmp_path / "l1" / name)

    def search(name, *extra):
        return search_script.main(
            ["-family", "ofa_pn", "-metric", "2080ti_predicted", "-acc_predictor",
             upstream_checkpoint("ofa_pn", "acc"), "-random_init_set_size", "16", "-num_iterations", "2",
             "-eval_budget", "12", "-seed", "3", "-out_dir", str(tmp_path / "out"), "-l1_dir", str(tmp_path / "l1"),
             "-quiet", "-model_name", name, "-db", str(tmp_path / f"{name}.db"), *extra])

    def front(state):
        return sorted((state.archs[i].key(), state.points[i]) for i in state.front())

    local, on_ray = search("local"), search("ray", "-workers", "2")
    assert [key for key, _ in front(on_ray)] == [key for key, _ in front(local)]
    assert [x for _, p in front(on_ray) for x in p] == pytest.approx([x for _, p in front(local) for x in p], rel=1e-5)
    assert on_ray.hypervolumes == pytest.approx(local.hypervolumes, rel=1e-5)
    assert "networks/s" in (tmp_path / "out" / "ray" / "search.log").read_text()


# last: it needs a pool of its own, which retires the 2-worker pool the tests above share
def device_evaluator(device: str = "cpu") -> Evaluator:
    """A fake metric that tells the device it was built for and the GPUs its process sees."""
    def run(archs):
        for i, _ in enumerate(archs):
            yield i, 0.0, {"device": device, "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    return Evaluator("device", "", True, run)


def test_a_worker_holding_a_gpu_builds_its_evaluators_for_it():
    with make_backend(workers=1, gpus_per_worker=1) as backend:
        details = [d for _, _, d in backend.evaluator(device_evaluator)(_archs(2))]
    assert details == [{"device": "cuda", "visible": "0"}] * 2

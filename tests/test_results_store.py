import json
import random
import sqlite3

import pytest

from evaluation.results_store import UNVERIFIED, ResultsStore
from iterators.errors import UserError
from iterators.search_space import random_arch

ARCHS = [random_arch("ofa_mbv3", random.Random(i)) for i in range(5)]


def test_predictions_are_keyed_by_predictor(tmp_path):
    with ResultsStore(str(tmp_path / "r.db")) as store:
        store.put(ARCHS[0], "cpu_predicted", 1.0, predictor="aaaa")
        store.put(ARCHS[0], "cpu_predicted", 2.0, predictor="bbbb")
        store.put(ARCHS[1], "flops", 300.0)
        assert store.values(ARCHS[:3], "cpu_predicted", "aaaa") == [1.0, None, None]
        assert store.values(ARCHS[:3], "cpu_predicted", "bbbb") == [2.0, None, None]
        assert store.values(ARCHS[:3], "cpu_predicted") == [None, None, None]
        assert store.values(ARCHS[:3], "flops") == [None, 300.0, None]
        assert not store.put(ARCHS[1], "flops", 301.0)  # the first writer wins
        with pytest.raises(ValueError, match="non-finite"):
            store.put(ARCHS[2], "flops", float("nan"))
        assert {(r["metric"], r["predictor"]) for r in store.rows()} == {
            ("cpu_predicted", "aaaa"), ("cpu_predicted", "bbbb"), ("flops", "")}


def test_a_database_of_the_first_schema_is_migrated(tmp_path):
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE results (family TEXT NOT NULL, config TEXT NOT NULL, resolution INTEGER NOT NULL, "
               "metric TEXT NOT NULL, value REAL NOT NULL, details TEXT, measured_at TEXT NOT NULL, "
               "host TEXT NOT NULL, PRIMARY KEY (family, config, resolution, metric))")
    for metric, value in (("flops", 300.0), ("cpu_predicted", 5.0), ("acc_pred:x_predictor.pt", 0.7)):
        db.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, '{}', 't', 'h')",
                   ("ofa_mbv3", json.dumps(ARCHS[0].config, separators=(",", ":")), ARCHS[0].resolution, metric,
                    value))
    db.commit()
    db.close()
    with ResultsStore(path) as store:
        assert store.values(ARCHS[:1], "flops") == [300.0]  # measured rows are kept and reused
        assert store.values(ARCHS[:1], "cpu_predicted") == [None]  # predictions of an unknown predictor are not
        assert sorted((r["metric"], r["predictor"]) for r in store.rows()) == [
            ("acc_pred:x_predictor.pt", UNVERIFIED), ("cpu_predicted", UNVERIFIED), ("flops", "")]
    with ResultsStore(path) as store:  # opening it again changes nothing
        assert len(store.rows()) == 3


def test_export_checks_its_suffix_before_writing(tmp_path):
    with ResultsStore(str(tmp_path / "r.db")) as store:
        store.put(ARCHS[0], "flops", 300.0)
        with pytest.raises(UserError, match="-export .*must end in .csv or .json"):
            store.export(str(tmp_path / "out.txt"))
        assert store.export(str(tmp_path / "out.json"), ["flops"]) == 1
        assert json.loads((tmp_path / "out.json").read_text())[0]["config"] == ARCHS[0].config

"""Evaluation results in SQLite: one row per (architecture, metric, resolution), safe for concurrent writers.

WAL mode lets several processes evaluate disjoint slices of one space at once; every result is committed as soon
as it is measured, so Ctrl-C or a crash loses nothing already measured, and a re-run skips what is done.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import sqlite3
import time

from iterators.search_space import Arch, arch_from_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    family      TEXT NOT NULL,
    config      TEXT NOT NULL,   -- JSON list of stages of block strings
    resolution  INTEGER NOT NULL,
    metric      TEXT NOT NULL,
    value       REAL NOT NULL,
    details     TEXT,            -- JSON: spread of repeated measurements, predictor used, ...
    measured_at TEXT NOT NULL,
    host        TEXT NOT NULL,
    PRIMARY KEY (family, config, resolution, metric)
)"""
COLUMNS = ("family", "config", "resolution", "metric", "value", "details", "measured_at", "host")


class ResultsStore:
    def __init__(self, path: str, timeout: float = 60.0):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)  # autocommit: one write, one commit
        self._set_up(timeout)
        self.host = socket.gethostname()

    def _set_up(self, timeout: float) -> None:
        # Two processes opening a new database at once can get "database is locked" from the switch to WAL without
        # SQLite's busy handler ever waiting (the WAL file is being created), so the set-up retries on its own.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.execute(_SCHEMA)
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _config(arch: Arch) -> str:
        return json.dumps(arch.config, separators=(",", ":"))

    def get(self, arch: Arch, metric: str) -> float | None:
        row = self.db.execute("SELECT value FROM results WHERE family=? AND config=? AND resolution=? AND metric=?",
                              (arch.family, self._config(arch), arch.resolution, metric)).fetchone()
        return None if row is None else row[0]

    def done(self, archs: list[Arch], metric: str) -> set[int]:
        """Indices of ``archs`` that already have a value for ``metric``."""
        return {i for i, a in enumerate(archs) if self.get(a, metric) is not None}

    def put(self, arch: Arch, metric: str, value: float, details: dict | None = None) -> bool:
        """Store one result; False (and nothing written) if another writer stored it first."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (arch.family, self._config(arch), arch.resolution, metric, float(value),
             json.dumps(details or {}), time.strftime("%Y-%m-%dT%H:%M:%S%z"), self.host))
        return cur.rowcount == 1

    def rows(self, metric: str | None = None) -> list[dict]:
        query, args = "SELECT * FROM results", ()
        if metric is not None:
            query, args = query + " WHERE metric=?", (metric,)
        return [dict(zip(COLUMNS, r)) for r in self.db.execute(query + " ORDER BY rowid", args)]

    def arch(self, row: dict) -> Arch:
        return arch_from_json({"resolution": row["resolution"], "config": json.loads(row["config"])}, row["family"])

    def export(self, path: str, metric: str | None = None) -> int:
        """Write the rows (of one metric or all) to .csv or .json; returns the row count."""
        rows = self.rows(metric)
        if path.endswith(".json"):
            with open(path, "w") as f:
                json.dump([{**r, "config": json.loads(r["config"]), "details": json.loads(r["details"] or "{}")}
                           for r in rows], f, indent=1)
        elif path.endswith(".csv"):
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        else:
            raise ValueError(f"{path}: export to .csv or .json")
        return len(rows)

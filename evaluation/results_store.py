"""Evaluation results in SQLite: one row per (architecture, metric, predictor), safe for concurrent writers.

A row is keyed by the architecture (family, config, resolution), the metric and, for predicted metrics, the digest
of the predictor that made it (``models.checkpoints.predictor_digest``; empty for measured metrics): predictions of
two different checkpoints that share a file name never mix. WAL mode lets several processes evaluate disjoint slices
of one space at once; every result is committed as soon as it is measured, so Ctrl-C or a crash loses nothing already
measured, and a re-run skips what is done.
"""
from __future__ import annotations

import csv
import json
import math
import os
import socket
import sqlite3
import time
from typing import Sequence

from iterators.errors import UserError, check_output_file
from iterators.search_space import Arch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    family      TEXT NOT NULL,
    config      TEXT NOT NULL,   -- JSON list of stages of block strings
    resolution  INTEGER NOT NULL,
    metric      TEXT NOT NULL,
    predictor   TEXT NOT NULL DEFAULT '',  -- digest of the predictor of a predicted metric, '' if measured
    value       REAL NOT NULL,
    details     TEXT,            -- JSON: spread of repeated measurements, predictor file, ...
    measured_at TEXT NOT NULL,
    host        TEXT NOT NULL,
    PRIMARY KEY (family, config, resolution, metric, predictor)
)"""
COLUMNS = ("family", "config", "resolution", "metric", "predictor", "value", "details", "measured_at", "host")
# rows of a database written before predictions were keyed by predictor: kept, but never taken for anyone's
UNVERIFIED = "unverified"
EXPORT_SUFFIXES = (".csv", ".json")


class ResultsStore:
    def __init__(self, path: str, timeout: float = 60.0):
        self.path = path
        if os.path.isdir(path):
            raise UserError(f"-db {path} is a folder; give a database file, e.g. {os.path.join(path, 'results.db')}")
        check_output_file(path, "-db")
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)  # autocommit: one write, one commit
            self._set_up(timeout)
        except sqlite3.DatabaseError as err:  # not a database, read-only, disk full, ...
            raise UserError(f"-db {path}: cannot use it as a results database ({err}); give another -db file "
                            f"(a new one is created)") from None
        self.host = socket.gethostname()

    def _set_up(self, timeout: float) -> None:
        # Two processes opening a new database at once can get "database is locked" from the switch to WAL without
        # SQLite's busy handler ever waiting (the WAL file is being created), so the set-up retries on its own.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._create_or_migrate()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _create_or_migrate(self) -> None:
        """Create the table; a table of the first schema (no predictor column) is converted in one transaction,
        its predicted rows marked UNVERIFIED (their predictor is unknown, so they are never reused)."""
        columns = [r[1] for r in self.db.execute("PRAGMA table_info(results)")]
        if not columns or "predictor" in columns:
            self.db.execute(_SCHEMA)
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if "predictor" not in [r[1] for r in self.db.execute("PRAGMA table_info(results)")]:
                self.db.execute("ALTER TABLE results RENAME TO results_v0")
                self.db.execute(_SCHEMA)
                self.db.execute(
                    f"INSERT INTO results ({', '.join(COLUMNS)}) SELECT family, config, resolution, metric, "
                    f"CASE WHEN metric LIKE '%\\_predicted' ESCAPE '\\' OR metric LIKE 'acc\\_pred%' ESCAPE '\\' "
                    f"THEN '{UNVERIFIED}' ELSE '' END, value, details, measured_at, host FROM results_v0")
                self.db.execute("DROP TABLE results_v0")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _config(arch: Arch) -> str:
        return json.dumps(arch.config, separators=(",", ":"))

    def values(self, archs: Sequence[Arch], metric: str, predictor: str = "") -> list[float | None]:
        """The stored value of ``metric`` (by ``predictor``) for every arch, None where there is none: one query for
        the whole list (the archs go into a temporary table joined with the results)."""
        if not archs:
            return []
        keys = [(a.family, self._config(a), a.resolution) for a in archs]
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (family TEXT, config TEXT, resolution INTEGER)")
        self.db.execute("BEGIN")
        try:
            self.db.execute("DELETE FROM wanted")
            self.db.executemany("INSERT INTO wanted VALUES (?, ?, ?)", keys)
            found = dict(((f, c, r), v) for f, c, r, v in self.db.execute(
                "SELECT w.family, w.config, w.resolution, r.value FROM wanted w JOIN results r ON r.family = w.family "
                "AND r.config = w.config AND r.resolution = w.resolution AND r.metric = ? AND r.predictor = ?",
                (metric, predictor)))
        finally:
            self.db.execute("COMMIT")
        return [found.get(k) for k in keys]

    def put(self, arch: Arch, metric: str, value: float, details: dict | None = None, predictor: str = "") -> bool:
        """Store one finite result; False (and nothing written) if another writer stored it first."""
        if not math.isfinite(value):
            raise ValueError(f"refusing to store the non-finite value {value} of {metric}")
        cur = self.db.execute(
            f"INSERT OR IGNORE INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            (arch.family, self._config(arch), arch.resolution, metric, predictor, float(value),
             json.dumps(details or {}), time.strftime("%Y-%m-%dT%H:%M:%S%z"), self.host))
        return cur.rowcount == 1

    def rows(self, metrics: str | Sequence[str] | None = None) -> list[dict]:
        """Stored rows as dicts (of one metric, some, or all), in the order they were stored."""
        query, args = "SELECT " + ", ".join(COLUMNS) + " FROM results", ()
        metrics = [metrics] if isinstance(metrics, str) else metrics
        if metrics is not None:
            query, args = query + f" WHERE metric IN ({', '.join('?' * len(metrics))})", tuple(metrics)
        return [dict(zip(COLUMNS, r)) for r in self.db.execute(query + " ORDER BY rowid", args)]

    def export(self, path: str, metrics: str | Sequence[str] | None = None) -> int:
        """Write the rows (of some metrics, or all) to .csv or .json; returns the row count."""
        check_output_file(path, "-export", EXPORT_SUFFIXES)
        rows = self.rows(metrics)
        with open(path, "w", newline="") as f:
            if path.endswith(".json"):
                json.dump([{**r, "config": json.loads(r["config"]), "details": json.loads(r["details"] or "{}")}
                           for r in rows], f, indent=1)
            else:
                writer = csv.DictWriter(f, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        return len(rows)

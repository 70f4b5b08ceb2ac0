"""A measurement log: one JSON line per measured architecture, appended and flushed the moment it is measured.

A run killed at any moment loses at most the architecture being measured (a torn last line is dropped when the log is
read back); the next run reads what is there and measures only the rest. A log may start with a line naming the
settings its measurements depend on (backend, threads, batch size, ...): reopening it under other settings is
refused rather than mixing two kinds of measurement.
"""
from __future__ import annotations

import json
import os

from iterators.errors import UserError, reading, warn
from iterators.search_space import Arch, ArchError, arch_from_json


class MeasurementLog:
    """``rows`` maps ``arch.key()`` to the row measured for it (the arch's JSON fields plus its measurements)."""

    def __init__(self, path: str, family: str, settings: dict | None = None):
        self.path, self.family, self.settings = path, family, settings
        self.rows: dict[str, dict] = {}
        self._file = None
        if os.path.exists(path):
            self._read()

    def _read(self) -> None:
        fix = "delete it to measure everything again"
        with reading(self.path, "measurement log", fix):
            with open(self.path, "rb") as f:
                data = f.read()
            lines = data.split(b"\n")
            if lines[-1]:  # no newline at the end: written in part when the run was killed; measured again
                warn(f"{self.path}: its last line was cut off by an interruption; it is measured again")
                os.truncate(self.path, len(data) - len(lines[-1]))
            for line_no, line in enumerate(lines[:-1], start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{self.path}:{line_no}: not a JSON line; {fix}") from None
                if "settings" in row and "config" not in row:
                    if self.settings is not None and row["settings"] != self.settings:
                        raise UserError(f"{self.path}: its measurements were made with {row['settings']}, this run "
                                        f"uses {self.settings}; finish it with the same settings or delete the file")
                    continue
                try:
                    arch = arch_from_json(row, self.family)
                except ArchError as err:
                    raise UserError(f"{self.path}:{line_no}: {err}; {fix}") from None
                self.rows[arch.key()] = row

    def __contains__(self, arch: Arch) -> bool:
        return arch.key() in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, arch: Arch) -> dict | None:
        return self.rows.get(arch.key())

    def append(self, arch: Arch, measurements: dict) -> dict:
        """Record ``arch``'s measurements on disk at once (flushed); returns the row."""
        if self._file is None:
            new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
            self._file = open(self.path, "a")
            if new and self.settings is not None:
                self._file.write(json.dumps({"settings": self.settings}) + "\n")
        row = {**arch.to_json(), **measurements}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self.rows[arch.key()] = row
        return row

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """Delete the log (once its rows are safely elsewhere)."""
        self.close()
        if os.path.exists(self.path):
            os.remove(self.path)

    def __enter__(self) -> MeasurementLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

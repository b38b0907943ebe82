"""TraceRecorder: write a trace row by row so that a killed run leaves a readable file.

JSONL (default) or CSV, appended line by line and fsync'ed every `flush_every` rows and on
close. A SIGKILL loses at most the rows since the last flush; a torn last line is skipped
by the readers. Re-opening an existing file appends (a resumed run continues the trace).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lbw_sim.errors import TraceError
from lbw_sim.traces.schema import TELEMETRY_COLUMNS


def _plain(value: Any) -> Any:
    """A JSON-able scalar: numbers (numpy, 0-d tensors) become float/int, else str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return int(f) if f.is_integer() and "int" in type(value).__name__.lower() else f


class TraceRecorder:
    """Append trace rows to `path` (.jsonl/.ndjson or .csv), crash-safely.

    >>> with TraceRecorder("run/trace.jsonl") as rec:
    ...     rec.record(step=0, loss=2.3, grad_norm=1.1, lr=3e-4)
    """

    def __init__(self, path: str | Path, flush_every: int = 50,
                 columns: Iterable[str] | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".ndjson", ".csv"):
            raise TraceError(f"{self.path.name}: recorder writes .jsonl or .csv, not {suffix!r}")
        if flush_every < 1:
            raise TraceError(f"flush_every must be >= 1, got {flush_every}")
        self.csv = suffix == ".csv"
        self.flush_every = flush_every
        self.columns = list(columns) if columns is not None else None
        self.rows: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if self.csv:
                with open(self.path, newline="", encoding="utf-8") as f:
                    self.columns = next(csv.reader(f), None) or self.columns
        self.file = open(self.path, "a", buffering=1, encoding="utf-8", newline="")  # noqa: SIM115
        if existing and torn:
            self.file.write("\n")  # isolate a torn line left by a crash
        self.header_written = existing and self.csv

    def record(self, **row: Any) -> None:
        """Buffer one row (keyword columns); flushed to disk every `flush_every` rows."""
        if self.file.closed:
            raise TraceError(f"{self.path.name}: recorder is closed")
        if self.csv and self.columns is not None and not set(row) <= set(self.columns):
            extra = sorted(set(row) - set(self.columns))
            raise TraceError(f"{self.path.name}: column(s) {extra} not in the CSV header; "
                             "pass columns= or use .jsonl")
        self.rows.append({k: _plain(v) for k, v in row.items()})
        if len(self.rows) >= self.flush_every:
            self.flush()

    def record_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.record(**row)

    def flush(self) -> None:
        """Write buffered rows, then flush and fsync so they survive a crash."""
        if not self.rows or self.file.closed:
            return
        text = self._csv_text() if self.csv else "".join(
            json.dumps(r, allow_nan=True) + "\n" for r in self.rows)
        self.file.write(text)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.rows.clear()

    def _csv_text(self) -> str:
        if self.columns is None:
            seen = dict.fromkeys(k for r in self.rows for k in r)
            self.columns = [c for c in TELEMETRY_COLUMNS if c in seen] + [
                c for c in seen if c not in TELEMETRY_COLUMNS]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, lineterminator="\n")
        if not self.header_written:
            writer.writeheader()
            self.header_written = True
        writer.writerows({k: ("nan" if isinstance(v, float) and math.isnan(v) else v)
                          for k, v in r.items()} for r in self.rows)
        return buf.getvalue()

    def close(self) -> None:
        if not self.file.closed:
            self.flush()
            self.file.close()

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

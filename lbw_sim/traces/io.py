"""Plain table I/O for canonical traces: CSV, JSONL and Parquet chosen by file suffix."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lbw_sim.errors import TraceError

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}


def table_format(path: str | Path) -> str:
    """The table format a path's suffix names, or a TraceError naming the suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise TraceError(f"{path}: unknown table suffix {suffix!r} (use .csv, .jsonl, .parquet)")
    return SUFFIXES[suffix]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/JSONL/Parquet table; any parse failure becomes a one-line TraceError."""
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True)
        return pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{path}: cannot read as {fmt}: {first}") from None


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table in the format its suffix names (categoricals become plain strings)."""
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(str)
    if fmt == "csv":
        out.to_csv(path, index=False, na_rep="nan")  # an empty cell would read as "not logged"
    elif fmt == "jsonl":
        out.to_json(path, orient="records", lines=True)
    else:
        out.to_parquet(path, index=False)
    return path

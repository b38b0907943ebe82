"""Read a trace from uploaded bytes (a browser upload): size limit, detection, column mapping.

An upload is written into a private temporary directory under a sanitised name (only its
suffix is kept, so a hostile file name cannot point anywhere), read with `load_trace`, and
deleted. Failures are TraceErrors with one-line messages. When the format is unknown or no
loss column is found, `UploadResult.needs_mapping` is set and `columns` lists what the
file holds, so the caller can ask the user which column is which.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lbw_sim.errors import TraceError
from lbw_sim.guard.analysis import shadow_note
from lbw_sim.traces.readers import FORMATS, detect_format, load_trace

MAX_UPLOAD_BYTES = 50 * 1024**2
#: Formats whose columns can be listed for a mapping.
TABULAR = ("csv", "lightning_csv", "wandb_csv", "jsonl", "wandb_jsonl", "llamafactory_jsonl",
           "parquet")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


@dataclass
class UploadResult:
    """What came of an upload: a trace, or the file's columns and why a mapping is needed."""

    name: str
    format: str | None
    trace: pd.DataFrame | None = None
    columns: list[str] = field(default_factory=list)
    needs_mapping: bool = False
    note: str = ""


def read_upload(name: str, data: bytes, mapping: dict[str, str] | None = None,
                format: str = "auto", max_bytes: int = MAX_UPLOAD_BYTES,
                run: str | None = None) -> UploadResult:
    """Parse uploaded bytes into a canonical trace; unreadable input raises TraceError.

    `run` picks one run of a multi-run file (a W&B export); the trace's `attrs["runs"]`
    lists them all."""
    shown = Path(str(name)).name[:80] or "upload"
    if len(data) > max_bytes:
        raise TraceError(f"{shown}: {len(data) / 1024**2:.1f} MB is over the upload limit of "
                         f"{max_bytes / 1024**2:.0f} MB")
    if not data.strip():
        raise TraceError(f"{shown}: the file is empty")
    if format != "auto" and format not in FORMATS:
        raise TraceError(f"unknown format {format!r}")
    mapping = {k: v for k, v in (mapping or {}).items() if v}
    with tempfile.TemporaryDirectory(prefix="lbw-upload-") as tmp:
        path = Path(tmp) / f"upload{_safe_suffix(shown)}"
        path.write_bytes(data)
        try:
            fmt = detect_format(path) if format == "auto" else format
        except TraceError as exc:
            return _unsure(shown, path, str(exc))
        columns = source_columns(path, fmt)
        try:
            trace = load_trace(path, fmt, run=run, **mapping)
        except TraceError as exc:
            if columns and ("mapping" in str(exc) or "column" in str(exc)):
                return UploadResult(shown, fmt, None, columns, True, _rename(exc, shown))
            raise TraceError(_rename(exc, shown)) from None
        if "shadow" in columns:       # a shadowed run: say so, and what it would have done
            recorded = recorded_decisions(path, fmt, columns)
            trace.attrs["shadow"] = shadow_note(recorded) if recorded is not None else ""
    result = UploadResult(shown, fmt, trace, columns)
    if "loss" not in trace.columns:
        result.needs_mapping = bool(columns)
        result.note = "no loss column was recognised; map one below"
    return result


#: what a guard trace recorded per step that says how a run was guarded (or shadowed)
RECORDED = ("step", "shadow", "spec_hash", "regime", "lr_scale", "skipped", "safety_skip",
            "momentum_scale", "rollback")


def recorded_decisions(path: Path, fmt: str, columns: list[str]) -> pd.DataFrame | None:
    """The decisions a guarded (or shadowed) run recorded in its own trace file, beside the
    telemetry the readers keep; None where they cannot be read."""
    wanted = [c for c in RECORDED if c in columns]
    try:
        if fmt == "csv":
            df = pd.read_csv(path, usecols=wanted, dtype={"spec_hash": str, "regime": str})
        elif fmt == "parquet":
            df = pd.read_parquet(path, columns=wanted)
        else:
            return None
    except (OSError, ValueError, TypeError):
        return None
    for flag in ("shadow", "skipped", "safety_skip", "rollback"):
        if flag in df:
            df[flag] = df[flag].astype(str).str.lower().isin(("true", "1", "1.0"))
    return df


def source_columns(path: Path, fmt: str) -> list[str]:
    """Column names of a tabular file (empty for formats without a fixed set of columns)."""
    try:
        if fmt in ("csv", "lightning_csv", "wandb_csv"):
            with open(path, encoding="utf-8", errors="replace", newline="") as f:
                first = f.readline(1 << 20).lstrip("\ufeff")
            delim = max(",;\t", key=first.count)
            return [c.strip() for c in next(csv.reader([first], delimiter=delim)) if c.strip()]
        if fmt in ("jsonl", "wandb_jsonl", "llamafactory_jsonl"):
            keys: dict[str, None] = {}
            with open(path, encoding="utf-8", errors="replace") as f:
                for _, line in zip(range(200), f):
                    rec = json.loads(line) if line.strip().startswith("{") else None
                    if isinstance(rec, dict):
                        keys.update(dict.fromkeys(map(str, rec)))
            return list(keys)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
    except (OSError, ValueError, StopIteration, csv.Error, RecursionError):
        return []
    except Exception:  # pyarrow's errors are not ValueErrors on every version
        return []
    return []


def _unsure(shown: str, path: Path, message: str) -> UploadResult:
    """Detection failed: if the bytes still look like a table, offer a mapping as CSV."""
    columns = source_columns(path, "csv")
    if len(columns) >= 2 and _looks_tabular(path):
        return UploadResult(shown, "csv", None, columns, True,
                            "the format was not recognised; read as CSV — map the columns")
    raise TraceError(_rename(TraceError(message), shown))


def _looks_tabular(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(64 * 1024)
    try:
        csv.Sniffer().sniff(head.splitlines()[0] if head else "", delimiters=",;\t")
    except csv.Error:
        return False
    return "\x00" not in head


def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix == ".gz" or not _SUFFIX.match(suffix or "."):
        return ".dat" if suffix != ".gz" else ".gz"
    return suffix


def _rename(exc: Exception, shown: str) -> str:
    """The reader names the temporary file; the user knows the file by its own name."""
    msg = " ".join(str(exc).split())
    return re.sub(r"\bupload(\.[A-Za-z0-9]+)?\b", shown, msg, count=1)


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    """An annotated trace as CSV bytes for a download button."""
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()

"""Guess a trace file's format from its content, and read files defensively.

Everything here reads a bounded amount: a head sample for detection, lines capped in
length for text formats. Failures are TraceErrors that name the file.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

from lbw_sim.errors import TraceError

HEAD_BYTES = 256 * 1024
MAX_LINE_BYTES = 1 << 20            # longer lines are skipped, not read whole
MAX_JSON_DOC_BYTES = 256 * 1024**2  # whole-file JSON (trainer_state.json) above this is refused

#: Line shapes of the text formats (used for detection and by textlogs).
HF_DICT_LINE = re.compile(r"^\s*\{\s*'[A-Za-z_/][^']*'\s*:.*\}\s*$")
KV_LOG_LINE = re.compile(r"^\s*(?:iter|step)\s+(\d+)(?:\s*/\s*\d+)?\s*[:|]\s*(.*)$")
BUILD_NANOGPT_LINE = re.compile(r"^\s*(\d+)\s+(train|val|hella)\s+(\S+)\s*$")

TEXT_FORMATS = ("hf_console", "nanogpt", "build_nanogpt")
DIR_FILES = (("trainer_state.json", "hf_trainer_state"), ("metrics.csv", "lightning_csv"),
             ("trainer_log.jsonl", "llamafactory_jsonl"))


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise TraceError(f"{path.name}: cannot open: {exc.strerror or exc}") from None


def head_text(path: Path, head: bytes) -> str:
    """Decode a head sample as UTF-8 (a cut multi-byte char at its end is fine)."""
    if b"\0" in head:
        raise TraceError(f"{path.name}: binary data (or UTF-16 text), not a text log")
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path.name}: not UTF-8 text (bad byte at offset {exc.start})") from None


def iter_lines(path: Path, max_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Yield decoded lines; over-long lines are skipped without being held in memory."""
    with open(path, "rb") as f:
        while True:
            line = f.readline(max_bytes + 1)
            if not line:
                return
            if len(line) > max_bytes and not line.endswith(b"\n"):
                while (rest := f.readline(max_bytes)) and not rest.endswith(b"\n"):
                    pass
                continue
            yield line.decode("utf-8", errors="replace").rstrip("\r\n")


def check_file(path: Path) -> Path:
    if not path.exists():
        raise TraceError(f"{path}: no such file or directory")
    if path.is_file() and path.stat().st_size == 0:
        raise TraceError(f"{path.name}: file is empty")
    return path


def detect_dir(path: Path) -> tuple[str, Path]:
    """The format of a run/checkpoint directory and the file (or dir) to read."""
    for name, fmt in DIR_FILES:
        if (path / name).is_file():
            return fmt, path / name
    ckpts = sorted(path.glob("checkpoint-*/trainer_state.json"),
                   key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    if ckpts:
        return "hf_trainer_state", ckpts[-1]
    if next(iter(path.rglob("*tfevents*")), None) is not None:
        return "tensorboard", path
    versions = sorted(path.glob("*/metrics.csv"))
    if versions:
        return "lightning_csv", versions[-1]
    raise TraceError(f"{path.name}/: no trace found (looked for trainer_state.json, "
                     "TensorBoard event files, metrics.csv, trainer_log.jsonl)")


def detect_file(path: Path) -> str:
    """The format of one file, from its name where that is certain, else from its content."""
    name = path.name.lower()
    if "tfevents" in name:
        return "tensorboard"
    head = read_head(path)
    if head.startswith(b"PAR1") or name.endswith((".parquet", ".pq")):
        return "parquet"
    if b"brain.Event" in head[:256]:
        return "tensorboard"
    text = head_text(path, head)
    lines = [ln for ln in text.splitlines()[:400] if ln.strip()]
    if len(head) == HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the sample may cut the last line
    if not lines:
        raise TraceError(f"{path.name}: no content (only blank lines)")
    return (_detect_json(path, lines) or _detect_text(lines) or _detect_csv(path, lines)
            or _fallback(path, lines))


def _detect_json(path: Path, lines: list[str]) -> str | None:
    first = lines[0].lstrip("\ufeff ")
    if first.startswith("[") and path.suffix.lower() == ".json":
        return "hf_trainer_state"  # a JSON document; the reader says what is wrong with it
    if not first.startswith("{"):
        return None
    record = _json_object(first)
    if record is not None and "log_history" not in record:
        if "current_steps" in record:
            return "llamafactory_jsonl"
        return "wandb_jsonl" if "_step" in record else "jsonl"
    if record is not None or first.rstrip() == "{" or path.suffix.lower() == ".json":
        return "hf_trainer_state"
    return None


def _json_object(line: str) -> dict | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _detect_text(lines: list[str]) -> str | None:
    score = {
        "hf_console": sum(bool(HF_DICT_LINE.match(ln)) for ln in lines),
        "nanogpt": sum(bool(KV_LOG_LINE.match(ln)) for ln in lines),
        "build_nanogpt": sum(bool(BUILD_NANOGPT_LINE.match(ln)) for ln in lines),
    }
    best = max(score, key=score.get)
    return best if score[best] > 0 else None


def _detect_csv(path: Path, lines: list[str]) -> str | None:
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t")
        header = next(csv.reader([lines[0]], dialect))
    except (csv.Error, StopIteration):
        if "," not in lines[0]:
            return None
        header = next(csv.reader([lines[0]]))
    if len(header) < 2 and path.suffix.lower() not in (".csv", ".tsv"):
        return None
    cols = [h.strip() for h in header]
    low = {c.lower() for c in cols}
    if any(" - " in c for c in cols) and "step" in low:
        return "wandb_csv"
    lightning = any(c.endswith(("_step", "_epoch")) or c.startswith("lr-") for c in low)
    if path.name.lower() == "metrics.csv" or ({"step", "epoch"} <= low and lightning):
        return "lightning_csv"
    return "csv"


def _fallback(path: Path, lines: list[str]) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".log", ".txt", ".out"):
        raise TraceError(f"{path.name}: no known log lines (nanoGPT, HF console, …); "
                         "pass pattern= with named groups like (?P<step>\\d+)")
    raise TraceError(f"{path.name}: unrecognised trace format; pass format= explicitly")

"""Review a spec change before it is used: replay the old and the new spec over a folder of
logs and report where they decide differently, what each costs a healthy run, how each
detects labelled incidents, and (optionally) which fault scenarios each survives.

    report = review(new, old, logs_dir)            # or review(..., faults="quick")
    Path("review.md").write_text(report.markdown())
    Path("review.html").write_text(report.html())

A log's labels are read from a CSV beside it named `<log stem>_labels.csv` (`start,end[,kind]`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.errors import TraceError
from lbw_sim.guard.engine import replay_many
from lbw_sim.guard.scoring import Labels, read_labels, score_replayed
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.traces import load_trace

#: What a step's decision is: the regime and the controls it applied.
DECISION = ("regime", "lr_scale", "skipped", "momentum_scale", "rollback", "stop")
LABELS_SUFFIX = "_labels"
FAULT_LEVELS = ("quick",)
MAX_SPANS = 20                 # differing spans listed per log in the report
DETECTION = ("spec", "incidents", "detected", "recall", "precision", "lead_time",
             "false_alarms_per_1k")


@dataclass
class LogReview:
    """One log replayed under both specs."""

    name: str
    steps: int
    spans: pd.DataFrame          # start, end, steps, old (regime/cause), new (regime/cause)
    differing: int               # steps where the decisions differ
    healthy_old: float           # share of steps in the initial regime
    healthy_new: float
    detection: pd.DataFrame | None = None   # spec, recall, precision, lead time, false alarms
    error: str = ""


@dataclass
class Review:
    """The whole review: both specs, their diff, one LogReview per log, fault survival."""

    new: GuardSpec
    old: GuardSpec
    logs: list[LogReview] = field(default_factory=list)
    faults: pd.DataFrame | None = None       # fault, severity, survived_old, survived_new

    def diff(self) -> pd.DataFrame:
        rows = [(p, str(a), str(b)) for p, a, b in self.old.diff(self.new)
                if p not in ("name", "description")]
        return pd.DataFrame(rows, columns=["setting", "old", "new"])

    def summary(self) -> pd.DataFrame:
        """One row per log: steps, steps decided differently, healthy share old/new."""
        return pd.DataFrame([{
            "log": r.name, "steps": r.steps, "steps decided differently": r.differing,
            "healthy (old)": r.healthy_old, "healthy (new)": r.healthy_new,
            "note": r.error} for r in self.logs])

    def markdown(self) -> str:
        return "\n".join(_markdown(self))

    def html(self) -> str:
        return _html(self)


def decisions_differ(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """Per step: whether the two annotated traces decide differently (regime or control)."""
    out = np.zeros(len(a), dtype=bool)
    for col in DECISION:
        if col in a and col in b:
            x, y = a[col].to_numpy(), b[col].to_numpy()
            if x.dtype.kind == "f" or y.dtype.kind == "f":
                x, y = x.astype(float), y.astype(float)
                out |= ~((x == y) | (np.isnan(x) & np.isnan(y)))
            else:
                out |= x.astype(str) != y.astype(str)
    return out


def differing_spans(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Runs of consecutive steps decided differently: start, end, steps, and what each spec
    did at the span's first step (regime, and the cause of the last transition so far)."""
    diff = decisions_differ(old, new)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], diff.astype(np.int8), [0]])))
    step = old["step"].to_numpy()
    rows = []
    for a, b in zip(edges[::2], edges[1::2]):
        rows.append({"start": int(step[a]), "end": int(step[b - 1]), "steps": int(b - a),
                     "old": _doing(old, a), "new": _doing(new, a)})
    return pd.DataFrame(rows, columns=["start", "end", "steps", "old", "new"])


def _doing(out: pd.DataFrame, i: int) -> str:
    """`regime (lr×0.5, skip) by outlier: grad_z=103 > 100` at row i."""
    r = out.iloc[i]
    ctl = [f"lr×{float(r['lr_scale']):g}"] if float(r.get("lr_scale", 1.0)) != 1 else []
    ctl += ["skip"] if bool(r.get("skipped", False)) else []
    ctl += ["rollback"] if bool(r.get("rollback", False)) else []
    ctl += ["STOP"] if bool(r.get("stop", False)) else []
    text = str(r["regime"]) + (f" ({', '.join(ctl)})" if ctl else "")
    fired = np.flatnonzero(out["transition"].astype(str).to_numpy()[: i + 1] != "")
    if len(fired):
        j = int(fired[-1])
        cause = str(out["cause"].iloc[j]) if "cause" in out else ""
        text += f" by {out['transition'].iloc[j]}" + (f": {cause}" if cause else "")
    return text


def healthy_share(out: pd.DataFrame, spec: GuardSpec) -> float:
    """Share of steps the spec spent in its initial regime (nominal)."""
    return float((out["regime"].astype(str) == spec.initial).mean()) if len(out) else math.nan


def labels_for(log: Path) -> Labels | None:
    """The label table beside a log (`<stem>_labels.csv`), or None."""
    path = log.with_name(log.stem + LABELS_SUFFIX + ".csv")
    return read_labels(path) if path.is_file() else None


def log_files(folder: str | Path) -> list[Path]:
    """The logs of a folder: every file but label tables and notes (README, .md, .txt
    notes are kept only when they parse as a log)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TraceError(f"{folder}: not a folder of logs")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and not p.stem.endswith(LABELS_SUFFIX) and p.suffix.lower() != ".md"
                  and p.suffix.lower() != ".py")


def review_log(path: Path, new: GuardSpec, old: GuardSpec, horizon: int = 20) -> LogReview:
    """Both specs over one log file; an unreadable log is a row with its error."""
    try:
        trace, labels = load_trace(path), labels_for(path)
    except TraceError as exc:
        empty = pd.DataFrame(columns=["start", "end", "steps", "old", "new"])
        return LogReview(path.name, 0, empty, 0, math.nan, math.nan, error=str(exc))
    return review_trace(path.name, trace, new, old, labels, horizon)


def review_trace(name: str, trace: pd.DataFrame, new: GuardSpec, old: GuardSpec,
                 labels: Labels | None = None, horizon: int = 20) -> LogReview:
    """Both specs over one trace in memory (the studio's uploaded log, an example)."""
    try:
        out_old, out_new = replay_many(trace, [old, new])
    except TraceError as exc:
        empty = pd.DataFrame(columns=["start", "end", "steps", "old", "new"])
        return LogReview(name, 0, empty, 0, math.nan, math.nan, error=str(exc))
    spans = differing_spans(out_old, out_new)
    detection = None
    if labels is not None and len(labels.start):
        detection = pd.DataFrame([
            {"spec": f"{which}: {s.name}", **score_replayed(o, labels, horizon, s.initial)}
            for which, s, o in (("old", old, out_old), ("new", new, out_new))])
        detection = detection[[c for c in DETECTION if c in detection]]
    return LogReview(name, len(trace), spans, int(spans["steps"].sum()),
                     healthy_share(out_old, old), healthy_share(out_new, new), detection)


def fault_survival(new: GuardSpec, old: GuardSpec, level: str = "quick",
                   workdir: str | Path | None = None) -> pd.DataFrame:
    """The studio's miniature fault grid (guard arm only) under each spec: per fault and
    severity, whether the guarded run ended within the recovery bound of its fault-free run.
    Trains small models: about half a minute per spec on one CPU core."""
    import tempfile

    from lbw_sim.bench.fault_grid import MINI, build_fault_grid, run_fault_grid
    from lbw_sim.bench.fault_report import RECOVERY

    if level not in FAULT_LEVELS:
        raise TraceError(f"--faults {level!r}: expected one of {', '.join(FAULT_LEVELS)}")
    rows: dict[tuple[str, float], dict] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for which, spec in (("old", old), ("new", new)):
            path = Path(tmp) / f"{which}.yaml"
            path.write_text(spec.to_yaml(), encoding="utf-8")
            grid = build_fault_grid(mini=True, arms=["guard"], guard=str(path.resolve()),
                                    severities=MINI["severities"])
            summary = run_fault_grid(grid, Path(tmp) / which, progress=False)
            for r in summary[summary["fault"] != "none"].itertuples():
                row = rows.setdefault((r.fault, float(r.severity)),
                                      {"fault": r.fault, "severity": float(r.severity)})
                row[f"ratio ({which})"] = float(r.ratio)
                row[f"survived ({which})"] = bool(r.ratio <= RECOVERY)
    return pd.DataFrame(list(rows.values()))


def review(new: GuardSpec, old: GuardSpec, logs: str | Path, faults: str | None = None,
           horizon: int = 20) -> Review:
    """The review of `new` against `old` over every log in the folder `logs`."""
    files = log_files(logs)
    if not files:
        raise TraceError(f"{logs}: no log files in this folder")
    result = Review(new, old, [review_log(p, new, old, horizon) for p in files])
    if faults:
        result.faults = fault_survival(new, old, faults)
    return result


# --- the report ---------------------------------------------------------------------------

def _share(x: float) -> str:
    return "–" if x != x else f"{x:.1%}"


def _table(df: pd.DataFrame) -> list[str]:
    """A markdown table (cells with | escaped)."""
    if df.empty:
        return ["(none)"]
    fmt = lambda v: (f"{v:.4g}" if isinstance(v, float) else str(v)).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(str, df.columns)) + " |",
            "|" + "---|" * len(df.columns),
            *("| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False))]


def _markdown(r: Review) -> list[str]:
    out = [f"# Spec review: {r.new.name} against {r.old.name}", "",
           f"- new: **{r.new.name}** (hash `{r.new.hash}`)",
           f"- old: **{r.old.name}** (hash `{r.old.hash}`)",
           f"- {len(r.logs)} log(s); a step is *decided differently* when the regime or a "
           "control (LR scale, skip, momentum, rollback, stop) differs.", "",
           "## What changed", "", *_table(r.diff()), "",
           "## Per log", "",
           *_table(r.summary().assign(**{
               "healthy (old)": lambda d: d["healthy (old)"].map(_share),
               "healthy (new)": lambda d: d["healthy (new)"].map(_share)})), ""]
    for log in r.logs:
        if log.error:
            continue
        out += [f"### {log.name}", "",
                f"{log.differing:,} of {log.steps:,} steps decided differently; healthy "
                f"(in `{r.old.initial}`/`{r.new.initial}`): old {_share(log.healthy_old)}, "
                f"new {_share(log.healthy_new)}.", ""]
        if len(log.spans):
            shown = log.spans.head(MAX_SPANS)
            out += _table(shown)
            if len(log.spans) > MAX_SPANS:
                out.append(f"\n… and {len(log.spans) - MAX_SPANS} more span(s).")
            out.append("")
        if log.detection is not None:
            out += ["Detection on the labelled incidents:", "", *_table(log.detection), ""]
    if r.faults is not None:
        out += ["## Fault scenarios (the studio's miniature grid, guard arm)", "",
                *_table(r.faults), ""]
    return out


def _html(r: Review) -> str:
    """The report as one self-contained HTML page (the markdown's content, as tables)."""
    def table(df: pd.DataFrame) -> str:
        if df.empty:
            return "<p>(none)</p>"
        return df.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}",
                          border=0, classes="t")

    esc = html.escape
    parts = [f"<h1>Spec review: {esc(r.new.name)} against {esc(r.old.name)}</h1>",
             f"<p>new: <b>{esc(r.new.name)}</b> (hash <code>{r.new.hash}</code>)<br>"
             f"old: <b>{esc(r.old.name)}</b> (hash <code>{r.old.hash}</code>)<br>"
             f"{len(r.logs)} log(s); a step is decided differently when the regime or a "
             "control differs.</p>",
             "<h2>What changed</h2>", table(r.diff()), "<h2>Per log</h2>",
             table(r.summary().assign(**{
                 "healthy (old)": lambda d: d["healthy (old)"].map(_share),
                 "healthy (new)": lambda d: d["healthy (new)"].map(_share)}))]
    for log in r.logs:
        if log.error:
            continue
        parts += [f"<h3>{esc(log.name)}</h3>",
                  f"<p>{log.differing:,} of {log.steps:,} steps decided differently; "
                  f"healthy: old {_share(log.healthy_old)}, new {_share(log.healthy_new)}.</p>",
                  table(log.spans.head(MAX_SPANS))]
        if log.detection is not None:
            parts += ["<p>Detection on the labelled incidents:</p>", table(log.detection)]
    if r.faults is not None:
        parts += ["<h2>Fault scenarios (miniature grid, guard arm)</h2>", table(r.faults)]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table.t{border-collapse:collapse;margin:.5em 0}"
             "table.t td,table.t th{border:1px solid #ccc;padding:3px 8px;text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Spec review: "
            f"{esc(r.new.name)}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>")

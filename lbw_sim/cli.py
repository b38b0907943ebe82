"""Command line: `python -m lbw_sim spec|validate|replay|score|sweep|run|stress|claim|review …`.

Bad input exits with status 2 and one line on stderr saying what is wrong — never a
traceback. Only `run` and `stress` import torch (lazily): replaying a trace starts in well
under a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lbw_sim.errors import LbwError, SpecError


def _load_spec(path: str | None):
    from lbw_sim.guard.spec import GuardSpec

    return GuardSpec.default() if path is None else GuardSpec.resolve(path)


def _load_trace(args: argparse.Namespace):
    """Read TRACE through the importers; note on stdout which run of a multi-run file it is."""
    from lbw_sim.errors import TraceError
    from lbw_sim.guard.spec import TELEMETRY
    from lbw_sim.traces import load_trace

    mapping = dict(_mapping_arg(m) for m in args.map or [])
    trace = load_trace(args.trace, args.format, run=args.run, pattern=args.pattern, **mapping)
    if not any(c in trace.columns for c in TELEMETRY):
        names = ", ".join(map(str, trace.columns))
        raise TraceError(f"{args.trace}: no telemetry the guard reads (columns: {names}); "
                         "map one with --map loss=COLUMN")
    runs = trace.attrs.get("runs") or []
    if len(runs) > 1 and args.run is None:
        print(f"{len(runs)} runs in {trace.attrs.get('source', args.trace)}: "
              f"{', '.join(map(repr, runs))}; replaying {trace.attrs['run']!r} "
              f"(pick one with --run NAME)")
    return trace


def _mapping_arg(text: str) -> tuple[str, str]:
    from lbw_sim.errors import TraceError

    key, sep, src = text.partition("=")
    if not sep or not key.strip() or not src.strip():
        raise TraceError(f"--map {text!r}: expected CANONICAL=SOURCE, e.g. loss=train/loss")
    return key.strip(), src.strip()


def cmd_spec(args: argparse.Namespace) -> int:
    spec = _load_spec(args.spec)
    sys.stdout.write(spec.to_json() + "\n" if args.json else spec.to_yaml())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _load_spec(args.spec)
    print(f"ok: {spec.name} (hash {spec.hash}): {len(spec.signals)} signals, "
          f"{len(spec.regimes)} regimes, {len(spec.transitions)} transitions")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from lbw_sim.guard.engine import replay
    from lbw_sim.traces import write_table

    spec = _load_spec(args.spec)
    trace = _load_trace(args)
    out = replay(trace, spec, signals=args.signals)
    if args.out:
        write_table(out, args.out)
    print(summary_text(out))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import numpy as np

    from lbw_sim.guard.engine import compile_spec, decide, trace_columns
    from lbw_sim.guard.scoring import incident_report, read_labels, score_walk

    spec = _load_spec(args.spec)
    labels = read_labels(args.labels)
    trace = _load_trace(args)
    steps, columns = trace_columns(trace)
    compiled = compile_spec(spec)
    walk, _, _ = decide(spec, steps, columns, compiled)
    m = score_walk(steps, walk.regime, walk.skipped, walk.lr_scale, compiled.initial,
                   labels, args.horizon)
    print(f"spec {spec.name} ({spec.hash}): {len(steps)} rows, steps [{steps[0]}..{steps[-1]}]; "
          f"{len(labels)} incidents; horizon {args.horizon}")
    print(score_text(m, spec.initial))
    report = incident_report(steps, walk.regime, compiled.initial, labels, args.horizon)
    for row in report.head(20).itertuples():
        found = ("missed" if np.isnan(row.alarm)
                 else f"alarm at {row.alarm:.0f} (lead {row.lead:+.0f})")
        print(f"  incident {row.start}..{row.end} {row.kind}: {found}")
    if len(report) > 20:
        print(f"  … {len(report) - 20} more")
    return 0


def score_text(m: dict, initial: str) -> str:
    """Detection quality and intervention cost, one topic per line."""
    def f(x: float, fmt: str) -> str:
        return "n/a" if x != x else format(x, fmt)

    return "\n".join([
        f"alarms: {m['alarms']:.0f} ({m['false_alarms']:.0f} false); precision "
        f"{f(m['precision'], '.3f')}; recall {f(m['recall'], '.3f')} "
        f"({m['detected']:.0f}/{m['incidents']:.0f}); mean lead time "
        f"{f(m['lead_time'], '+.1f')} steps",
        f"false alarms per 1,000 steps: {f(m['false_alarms_per_1k'], '.3f')}",
        f"intervention cost: {m['out_share']:.2%} of rows out of {initial!r}; "
        f"{m['skipped']:.0f} skipped steps; mean lr_scale {m['mean_lr_scale']:.4f}"])


def cmd_sweep(args: argparse.Namespace) -> int:
    from lbw_sim.guard.sweep import load_ranges, parse_grid_arg, random_points, sweep
    from lbw_sim.traces import write_table
    from lbw_sim.traces.io import table_format

    table_format(args.out)  # a bad suffix fails now, not after the sweep
    grid = load_ranges(args.ranges) if args.ranges else {}
    for text in args.grid or []:
        path, values = parse_grid_arg(text)
        grid[path] = values
    if not grid:
        raise SpecError("grid", "nothing to sweep: give --grid PATH=lo:hi:step or --ranges FILE")
    spec = _load_spec(args.spec)
    points = random_points(grid, args.random, args.seed) if args.random else None
    trace = _load_trace(args)
    table = sweep(trace, spec, grid, args.labels, horizon=args.horizon, points=points,
                  progress=True)
    write_table(table, args.out)
    skipped = table.attrs["skipped"]
    print(f"{len(table)} specs swept over {len(trace)} rows "
          f"({len(skipped)} invalid combinations skipped); "
          f"{int(table['pareto'].sum())} on the Pareto front "
          f"({', '.join(table.attrs['objectives'])}); wrote {args.out}")
    for bad in skipped[:5]:
        print(f"  skipped {_point_text(bad)}: {bad['error']}")
    if len(skipped) > 5:
        print(f"  … {len(skipped) - 5} more skipped")
    return 0


def _point_text(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items() if k != "error")


def cmd_run(args: argparse.Namespace) -> int:
    """Run a scenario; torch is imported here only, so the other commands stay light."""
    from pathlib import Path

    import pandas as pd

    from lbw_sim.bench.scenario import run_scenario
    from lbw_sim.errors import SpecError
    from lbw_sim.sim.scenarios import ArmSpec, load_scenario

    for flag in ("steps", "seeds"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise SpecError(f"--{flag}", f"must be >= 1, got {getattr(args, flag)}")
    sc = load_scenario(args.scenario)
    arms = [ArmSpec.parse(a, "--arms") for a in args.arms.split(",")] if args.arms else None
    out = Path(args.out or Path("runs") / sc.name)
    summary = run_scenario(sc, out_dir=out, device=args.device, steps=args.steps,
                           seeds=args.seeds, arms=arms, progress=not args.quiet)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {len(summary)} trace(s) and {out / 'summary.csv'}")
    return 0


def cmd_stress(args: argparse.Namespace) -> int:
    """The LR stress grid; resumes in --out, then writes the table and figures."""
    import os
    import time
    from pathlib import Path

    import torch

    from lbw_sim.bench.stress import build_grid, run_stress
    from lbw_sim.viz.stress import write_report

    workers = args.workers or min(2, os.cpu_count() or 1)
    torch.set_num_threads(1)  # one thread per training process, here and in the workers
    t0 = time.perf_counter()
    if args.suite:
        return _stress_suite(args, workers, t0)
    if args.finetune:
        from lbw_sim.errors import SpecError

        raise SpecError("--finetune", "selects the suite's fine-tune tasks: add --suite")
    guard = _spec_option(args.spec)
    grid = build_grid(quick=args.quick, text=args.text, seeds=args.seeds,
                      overrides={"guard": guard} if guard else None,
                      arms=args.arms.split(",") if args.arms else None)
    out = Path(args.out or Path("runs") / ("stress_quick" if args.quick else "stress"))
    if args.reuse:
        from lbw_sim.bench.stress import reuse_cells

        reuse_cells(grid, out, args.reuse)
    result = run_stress(grid, out, workers=workers, progress=not args.quiet,
                        backend=args.backend, address=args.address)
    files = write_report(result, out)
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"{len(result.summary)} cells in {time.perf_counter() - t0:.0f} s with {workers} "
          f"worker(s); wrote {', '.join(f.name for f in files)} in {out}")
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    """The paper's claim judged on the suite folders under --root (`bench.claim`)."""
    from pathlib import Path

    from lbw_sim.bench.claim import write_claim

    path = write_claim(Path(args.root))
    print(path.read_text(encoding="utf-8"))
    print(f"wrote {path}")
    return 0


def cmd_faults(args: argparse.Namespace) -> int:
    """The transient-fault grid (or, with --find-lr, the seed-0 LR sweep behind its LRs)."""
    import os
    import time
    from pathlib import Path

    import torch

    from lbw_sim.bench.executors import check_backend
    from lbw_sim.bench.fault_grid import TASKS, build_fault_grid, find_lr, run_fault_grid
    from lbw_sim.viz.faults import write_report as write_fault_report

    torch.set_num_threads(1)  # one thread per training process, here and in the workers
    if args.find_lr:
        for task in TASKS:
            print(find_lr(task).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return 0
    check_backend(args.backend, args.address)
    grid = build_fault_grid(quick=args.quick, seeds=args.seeds,
                            guard=_spec_option(args.spec) or "default")
    out = Path(args.out or Path("runs") / ("faults_quick" if args.quick else "faults"))
    workers = args.workers or (0 if args.backend == "ray" else min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    summary = run_fault_grid(grid, out, workers=workers, backend=args.backend,
                             address=args.address, progress=not args.quiet)
    files = write_fault_report(out, {t: v["lr"] for t, v in grid.tasks.items()})
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"{len(summary)} cells in {time.perf_counter() - t0:.0f} s with "
          f"{workers or 'all'} worker(s) ({args.backend}); wrote "
          f"{', '.join(f.name for f in files)} in {out}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """Both specs over a folder of logs: review.md and review.html, the summary printed."""
    from pathlib import Path

    from lbw_sim.studio.review import review

    new, old = _load_spec(args.new), _load_spec(args.against)
    report = review(new, old, args.logs, faults=args.faults, horizon=args.horizon)
    out = Path(args.out or Path("runs") / "review")
    out.mkdir(parents=True, exist_ok=True)
    (out / "review.md").write_text(report.markdown(), encoding="utf-8")
    (out / "review.html").write_text(report.html(), encoding="utf-8")
    print(report.markdown().split("\n### ", 1)[0].rstrip())
    print(f"\nwrote {out / 'review.md'} and {out / 'review.html'}")
    return 0


def _spec_option(value: str | None) -> str | None:
    """--spec: a shipped name as it is, a file as an absolute path (scenarios resolve
    relative paths against their own folder); checked here so a typo fails before any cell."""
    from pathlib import Path

    from lbw_sim.errors import SpecError
    from lbw_sim.guard.spec import GuardSpec

    if value is None:
        return None
    try:
        GuardSpec.resolve(value)
    except SpecError as err:
        raise SpecError("--spec", f"{value!r}: {err.problem} (a shipped name: lbw-default, "
                                  "lbw-v1, lbw-adaptive; or a spec file)") from None
    named = value == "default" or GuardSpec.is_named(value)
    return value if named else str(Path(value).resolve())


def _spec_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", metavar="NAME|FILE",
                   help="the guard arm's spec: a shipped name (lbw-default, lbw-v1, "
                        "lbw-adaptive) or a spec file; default: the shipped default")


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool (default) or one Ray task per cell")
    p.add_argument("--address", help="Ray cluster to join (auto, ray://HOST:10001); "
                                     "default: a private local instance")


def _stress_suite(args: argparse.Namespace, workers: int, t0: float) -> int:
    """`stress --suite`: every task of lbw_sim/bench/suite.py into --out/<task>/, then table.md."""
    import time
    from pathlib import Path

    from lbw_sim.bench.suite import get_tasks, run_suite
    from lbw_sim.errors import SpecError

    if args.text:
        raise SpecError("--text", "the suite brings its own data; use --text without --suite")
    tasks = get_tasks(args.tasks.split(",") if args.tasks else None, finetune=args.finetune)
    seeds = list(range(1, args.seeds + 1)) if args.seeds else None
    name = ("finetune" if args.finetune else "suite") + ("_quick" if args.quick else "")
    out = Path(args.out or Path("runs") / name)
    from lbw_sim.viz.stress import write_report

    arms = args.arms.split(",") if args.arms else None
    results = run_suite(out, quick=args.quick, workers=workers, tasks=tasks, seeds=seeds,
                        progress=not args.quiet, write=write_report, arms=arms,
                        guard=_spec_option(args.spec), finetune=args.finetune,
                        reuse=args.reuse)
    print((out / "table.md").read_text(encoding="utf-8"))
    cells = sum(len(r.summary) for r in results.values())
    print(f"{len(results)} tasks, {cells} cells in {time.perf_counter() - t0:.0f} s with "
          f"{workers} worker(s); wrote {out / 'table.md'} and one folder per task")
    return 0


def summary_text(out) -> str:
    """A short human summary of a replayed trace."""
    n = len(out)
    counts = out["regime"].value_counts()
    regimes = ", ".join(f"{r} {c / n:.1%}" for r, c in counts.items() if c)
    fired = out[out["transition"] != ""]
    lines = [f"spec {out.attrs.get('spec')} ({out.attrs.get('spec_hash')}): {n} steps "
             f"[{out['step'].iloc[0]}..{out['step'].iloc[-1]}]",
             f"regimes: {regimes}",
             f"transitions: {len(fired)}; skipped steps: {int(out['skipped'].sum())}; "
             f"rollbacks: {int(out['rollback'].sum())}; "
             f"min lr_scale: {out['lr_scale'].min():.3g}"]
    if out.attrs.get("missing"):
        lines.append(f"missing telemetry (signals on it stay silent): "
                     f"{', '.join(out.attrs['missing'])}")
    for row in fired.head(10).itertuples():
        lines.append(f"  step {row.step}: {row.transition} -> {row.regime}: {row.cause}")
    if len(fired) > 10:
        lines.append(f"  … {len(fired) - 10} more")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lbw_sim",
                                description="LBW Studio: guard specs, replays and scenarios.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("spec", help="print a spec (the default with --default) as YAML")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--default", action="store_true", help="the shipped default spec")
    g.add_argument("--from", dest="spec", metavar="SPEC", help="normalise a spec file")
    s.add_argument("--json", action="store_true", help="JSON instead of YAML")
    s.set_defaults(func=cmd_spec)
    v = sub.add_parser("validate", help="validate a spec file (.yaml/.json)")
    v.add_argument("spec", metavar="SPEC")
    v.set_defaults(func=cmd_validate)
    r = sub.add_parser("replay", help="run a spec over a recorded trace or training log")
    _trace_args(r)
    r.add_argument("--out", help="write the annotated trace (.csv/.jsonl/.parquet)")
    r.add_argument("--signals", action="store_true", help="also write every signal column")
    r.set_defaults(func=cmd_replay)
    c = sub.add_parser("score", help="detection quality of a spec against labelled incidents")
    _trace_args(c)
    c.add_argument("--labels", required=True, help="CSV of incidents: start,end[,kind]")
    c.add_argument("--horizon", type=_nonneg, default=0,
                   help="an alarm up to N steps before an incident counts (default 0)")
    c.set_defaults(func=cmd_score)
    w = sub.add_parser("sweep", help="run a grid/random sample of specs over a trace")
    _trace_args(w)
    w.add_argument("--grid", action="append", metavar="PATH=VALUES",
                   help="lo:hi:step (inclusive) or a,b,c; repeat for more dimensions")
    w.add_argument("--ranges", help="YAML file of PATH: [lo, hi, step] entries")
    w.add_argument("--random", type=_nonneg, default=0, metavar="N",
                   help="sample N distinct points of the grid instead of all of them")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--labels", help="CSV of incidents: start,end[,kind]")
    w.add_argument("--horizon", type=_nonneg, default=0)
    w.add_argument("--out", required=True, help="the table (.csv/.jsonl/.parquet)")
    w.set_defaults(func=cmd_sweep)
    u = sub.add_parser("run", help="run a scenario: every arm x lr x seed, traces + summary.csv")
    u.add_argument("scenario", metavar="SCENARIO", help="a name from scenarios/ or a path")
    u.add_argument("--out", help="output folder (default: runs/<scenario name>)")
    u.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    u.add_argument("--steps", type=int, help="override the scenario's steps")
    u.add_argument("--seeds", type=int, help="run seeds 0..N-1 instead of the scenario's")
    u.add_argument("--arms", help="comma-separated arms, e.g. adamw,guard,adamw:cosine")
    u.add_argument("--quiet", action="store_true", help="no progress bar")
    u.set_defaults(func=cmd_run)
    t = sub.add_parser("stress", help="LR x arm x seed stress grid (scenarios/lr_stress.yaml): "
                                      "summary.csv, table.md, HTML figures; resumes in --out")
    t.add_argument("--quick", action="store_true",
                   help="500 steps, 50 warm-up, one seed, a 2-layer model (< 10 min, 2 cores)")
    t.add_argument("--out", help="output folder (default: runs/stress or runs/stress_quick)")
    t.add_argument("--text", metavar="FILE", help="train on this text (characters) instead of "
                                                  "the synthetic corpus")
    t.add_argument("--seeds", type=_positive,
                   help="seeds 1..N (default: the scenario's; seed 0 is kept for tuning)")
    t.add_argument("--workers", type=_positive, help="processes (default: 2, or 1 on one core)")
    t.add_argument("--suite", action="store_true",
                   help="the task suite: the LR grid over several model families, one folder "
                        "per task and an overall table.md (with --quick: seed 1, 5 LRs)")
    t.add_argument("--tasks", help="with --suite: comma-separated task names (default: all)")
    t.add_argument("--finetune", action="store_true",
                   help="with --suite: the fine-tune tasks (pretrained once on shipped data, "
                        "cached in ~/.cache/lbw_sim or $LBW_SIM_CACHE, then fine-tuned on a "
                        "shifted distribution) instead of the from-scratch ones")
    t.add_argument("--arms", help="comma-separated stress arms (default: all of them), e.g. "
                                  "adamw,cosine,plateau,schedulefree,prodigy,guard,lr_matched")
    t.add_argument("--reuse", metavar="FOLDER",
                   help="a results folder of the same grid run with another --spec (with "
                        "--suite: a suite folder); its cells that do not depend on the guard "
                        "are copied, not run again")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _spec_arg(t)
    _backend_args(t)
    t.set_defaults(func=cmd_stress)
    k = sub.add_parser("claim", help="the paper's claim judged on the suite folders (finetune, "
                                     "finetune_active, suite, suite_active): claim.md")
    k.add_argument("--root", default="benchmarks/results",
                   help="the folder holding the suite folders (default: benchmarks/results)")
    k.set_defaults(func=cmd_claim)
    f = sub.add_parser("faults", help="transient faults x severity x task x arm x seed at each "
                                      "task's AdamW-best LR: summary.csv, table.md, figures")
    f.add_argument("--quick", action="store_true", help="seed 1 only (< 15 min, 2 cores)")
    f.add_argument("--out", help="output folder (default: runs/faults or runs/faults_quick)")
    f.add_argument("--seeds", type=_positive,
                   help="seeds 1..N (default 3, or 1 with --quick; seed 0 finds the LRs)")
    f.add_argument("--workers", type=_positive,
                   help="processes (default: 2, or 1 on one core; with ray: cells in "
                        "flight, default one per CPU)")
    f.add_argument("--find-lr", action="store_true",
                   help="only the seed-0 AdamW LR sweep that chose each task's LR")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    _spec_arg(f)
    _backend_args(f)
    f.set_defaults(func=cmd_faults)
    v = sub.add_parser("review", help="review a spec change: both specs over a folder of logs "
                                      "(where they decide differently, healthy share, "
                                      "detection on labels); review.md and review.html")
    v.add_argument("new", metavar="NEW", help="the new spec (a file or a shipped name)")
    v.add_argument("--against", required=True, metavar="OLD",
                   help="the spec in use (a file or a shipped name)")
    v.add_argument("--logs", required=True, metavar="DIR",
                   help="a folder of logs; labels beside a log as <log>_labels.csv")
    v.add_argument("--faults", choices=("quick",),
                   help="also run the miniature fault grid under each spec (~1 min)")
    v.add_argument("--horizon", type=_nonneg, default=20,
                   help="steps before an incident that count as early (default 20)")
    v.add_argument("--out", help="output folder (default: runs/review)")
    v.set_defaults(func=cmd_review)
    return p


def _trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="TRACE",
                   help="a log file or run directory (HF trainer_state.json, TensorBoard, "
                        "Lightning, W&B, LLaMA-Factory, nanoGPT text, CSV/JSONL/Parquet)")
    p.add_argument("--spec", help="a shipped name (lbw-default, lbw-v1, lbw-adaptive) or a spec "
                                  "file (default: the shipped default spec)")
    p.add_argument("--format", default="auto", help="log format (default: detected)")
    p.add_argument("--map", action="append", metavar="NAME=SOURCE",
                   help="map a canonical column to a source column/tag, e.g. loss=train/loss")
    p.add_argument("--pattern", help="regex with named groups (step, loss, …) for text logs")
    p.add_argument("--run", help="which run of a multi-run file (W&B export, TensorBoard)")


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _nonneg(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and status 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): a status, not an exception
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except LbwError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (OSError, MemoryError) as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


"""Command line: `python -m lbw_sim spec|validate|replay|run …`.

Bad input exits with status 2 and one line on stderr saying what is wrong — never a
traceback. Only `run` imports torch (lazily): replaying a trace starts in well under a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lbw_sim.errors import LbwError


def _load_spec(path: str | None):
    from lbw_sim.guard.spec import GuardSpec

    return GuardSpec.default() if path is None else GuardSpec.load(path)


def _load_trace(path: str):
    from lbw_sim.errors import TraceError
    from lbw_sim.traces import canonicalize, read_table

    trace = canonicalize(read_table(path))
    if "loss" not in trace.columns:
        names = ", ".join(map(str, trace.columns))
        raise TraceError(f"{path}: no 'loss' column (columns: {names})")
    return trace


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
    trace = _load_trace(args.trace)
    out = replay(trace, spec, signals=args.signals)
    if args.out:
        write_table(out, args.out)
    print(summary_text(out))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a scenario; torch is imported here only, so the other commands stay light."""
    from pathlib import Path

    import pandas as pd

    from lbw_sim.errors import SpecError
    from lbw_sim.sim.runner import run_scenario
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
    p = argparse.ArgumentParser(prog="python -m lbw_sim",
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
    r = sub.add_parser("replay", help="run a spec over a recorded trace")
    r.add_argument("trace", metavar="TRACE", help="CSV/JSONL/Parquet with step, loss, …")
    r.add_argument("--spec", help="spec file (default: the shipped default spec)")
    r.add_argument("--out", help="write the annotated trace (.csv/.jsonl/.parquet)")
    r.add_argument("--signals", action="store_true", help="also write every signal column")
    r.set_defaults(func=cmd_replay)
    u = sub.add_parser("run", help="run a scenario: every arm x lr x seed, traces + summary.csv")
    u.add_argument("scenario", metavar="SCENARIO", help="a name from scenarios/ or a path")
    u.add_argument("--out", help="output folder (default: runs/<scenario name>)")
    u.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    u.add_argument("--steps", type=int, help="override the scenario's steps")
    u.add_argument("--seeds", type=int, help="run seeds 0..N-1 instead of the scenario's")
    u.add_argument("--arms", help="comma-separated arms, e.g. adamw,guard,adamw:cosine")
    u.add_argument("--quiet", action="store_true", help="no progress bar")
    u.set_defaults(func=cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


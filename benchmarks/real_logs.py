"""The default spec on the six real training logs in ../shared/traces.

For each log (each run of a multi-run file): rows, telemetry the spec reads but the log
lacks, % of rows nominal after warm-up (steps >= 200), transitions, and where the guard
left nominal (the transition and its cause). The goal: on healthy real runs the default
spec stays nominal on >= 98 % of steps after warm-up.

    python benchmarks/real_logs.py [TRACES_DIR]

`--smoke`: two small synthetic logs (a CSV and a JSONL, one with a spike) written to a
temporary folder, so the script runs where ../shared/traces is absent (CI).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim.guard.engine import replay  # noqa: E402
from lbw_sim.guard.spec import GuardSpec  # noqa: E402
from lbw_sim.traces import list_runs, load_trace  # noqa: E402

WARMUP = 200
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "traces"


def runs_of(path: Path) -> list[tuple[str, str | None]]:
    """(label, run) for each run of a log; single-run files give one entry."""
    runs = list_runs(path)
    if runs == ["run0"]:
        return [(path.name, None)]
    return [(f"{path.name} [{r}]", r) for r in runs]


def examine(path: Path, run: str | None, spec: GuardSpec) -> dict:
    out = replay(load_trace(path, run=run), spec)
    after = out[out["step"] >= WARMUP]
    left = out[(out["transition"] != "") & (out["regime"].shift(fill_value=spec.initial)
                                            == spec.initial)]
    return {"rows": len(out), "missing": ", ".join(out.attrs["missing"]) or "-",
            "nominal": (after["regime"] == spec.initial).mean() * 100 if len(after) else 100.0,
            "transitions": int((out["transition"] != "").sum()),
            "left": [f"{r.step} {r.transition}: {r.cause}" for r in left.itertuples()]}


def write_smoke_logs(folder: Path) -> None:
    """A healthy CSV log and a JSONL log with a loss spike, 1,000 steps each."""
    from lbw_sim.traces.synthetic import Incident, healthy, inject

    healthy(1000, seed=0).to_csv(folder / "healthy.csv", index=False)
    spiky = inject(healthy(1000, seed=1), [Incident("loss_spike", 600, 3, 6.0)])
    spiky.to_json(folder / "spiky.jsonl", orient="records", lines=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("traces_dir", nargs="?", type=Path, default=DEFAULT_DIR,
                   help="a folder of training logs (default: ../shared/traces)")
    p.add_argument("--smoke", action="store_true", help="two small synthetic logs (seconds)")
    args = p.parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            write_smoke_logs(Path(tmp))
            return report(Path(tmp))
    report(args.traces_dir)


def report(folder: Path) -> None:
    files = sorted(p for p in folder.glob("*") if p.name != "README.md")
    if not files:
        raise SystemExit(f"no logs in {folder}")
    spec = GuardSpec.default()
    print(f"default spec {spec.name} ({spec.hash}); nominal % over rows with step >= {WARMUP}\n")
    print(f"| log | rows | signals missing | nominal % (step >= {WARMUP}) | transitions | "
          "left nominal at |")
    print("|---|---|---|---|---|---|")
    details = []
    for path in files:
        for label, run in runs_of(path):
            r = examine(path, run, spec)
            first = "; ".join(r["left"][:3]) + (f"; … {len(r['left']) - 3} more"
                                                if len(r["left"]) > 3 else "")
            print(f"| {label} | {r['rows']} | {r['missing']} | {r['nominal']:.1f} | "
                  f"{r['transitions']} | {first or '-'} |")
            details.append((label, r["left"]))
    print("\nevery exit from nominal:")
    for label, left in details:
        for line in left[:12]:
            print(f"  {label[:48]}: {line}")
        if len(left) > 12:
            print(f"  {label[:48]}: … {len(left) - 12} more")


if __name__ == "__main__":
    main()

"""Replay and sweep throughput of the guard engine on this machine.

Replays a 1,000,000-step synthetic trace (with incidents) through the default spec, and
sweeps 1,000 specs (a 40 x 25 grid over two thresholds) over a 100,000-step trace through
the batched engine (`iter_walks`, the specs built beforehand), then once more end to end as
a user runs it (`sweep.sweep` from the grid's points: building and validating the specs,
walking, scoring). Times are the median of several repeats after a warm-up (the first call
loads the compiled kernels). Prints a table and ends with one JSON line.

The sweep's grid is derived from the spec it sweeps (`sweep_values`), so it stays valid under
every shipped spec: `spike_z` above the spec's `watch_z`, `calm_z` below its own value.

`--base DIR` measures a second checkout too (e.g. `git worktree add /tmp/base <commit>`):
the same measurement, run in child processes against each tree's `lbw_sim`, the two trees
alternating and taking turns to go first, the best of `--rounds` runs each, printed side by
side with the ratio. `--smoke` runs tiny sizes once (seconds; the figures
mean nothing) and checks the sweep grid of every shipped spec.

    python benchmarks/replay_speed.py [--base /tmp/base] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL = {"replay_steps": 1_000_000, "sweep_steps": 100_000, "grid": (40, 25),
        "repeats": (5, 20, 3, 2)}
SMOKE = {"replay_steps": 20_000, "sweep_steps": 5_000, "grid": (4, 3), "repeats": (1, 1, 1, 1)}
CASES = ("replay_steps_per_s", "retune_steps_per_s", "sweep_spec_steps_per_s",
         "sweep_table_spec_steps_per_s")


def sweep_values(spec, n_spike: int, n_calm: int) -> list[dict[str, float]]:
    """Threshold settings for a sweep that every shipped spec accepts: the spike threshold
    from 1 to 8 above the spec's watch threshold (an entry must sit above the entry it
    escalates from), the calm threshold from half its value up to its value (an exit must
    stay below the entry it leaves)."""
    import numpy as np

    th = spec.thresholds
    watch, calm = float(th["watch_z"]), float(th["calm_z"])
    return [{"thresholds.spike_z": float(z), "thresholds.calm_z": float(c)}
            for z in np.linspace(watch + 1.0, watch + 8.0, n_spike)
            for c in np.linspace(0.5 * calm, calm, n_calm)]


def trace(n: int):
    from lbw_sim.traces.synthetic import Incident, healthy, inject

    incidents = [Incident("loss_spike", s, 2, 4.0) for s in range(n // 200, n, 97 * n // 1000)]
    incidents += [Incident("nan_storm", s, 5) for s in range(n // 20, n, 211 * n // 1000)]
    return inject(healthy(n, seed=0), incidents)


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(size: dict) -> dict[str, float]:
    """Throughput of the `lbw_sim` first on sys.path: replay, re-tune replay, sweep."""
    from lbw_sim.guard.engine import iter_walks, replay
    from lbw_sim.guard.spec import GuardSpec
    from lbw_sim.guard.sweep import sweep as sweep_table

    spec = GuardSpec.default()
    big = trace(size["replay_steps"])
    r_big, r_small, r_sweep, r_table = size["repeats"]
    t_replay = timed(lambda: replay(big, spec), repeats=r_big)
    small = big.iloc[:size["sweep_steps"]].reset_index(drop=True)
    t_small = timed(lambda: replay(small, spec), repeats=r_small)
    points = sweep_values(spec, *size["grid"])
    specs = [spec.with_values(v) for v in points]

    def sweep() -> int:
        return sum(int(w.skipped.sum()) for _, _, w, _ in iter_walks(small, specs, chunk=32))

    t_sweep = timed(sweep, repeats=r_sweep)
    t_table = timed(lambda: sweep_table(small, spec, points=points), repeats=r_table)
    return {"replay_steps_per_s": len(big) / t_replay, "retune_steps_per_s": len(small) / t_small,
            "sweep_spec_steps_per_s": len(specs) * len(small) / t_sweep,
            "sweep_table_spec_steps_per_s": len(specs) * len(small) / t_table,
            "retune_ms": t_small * 1e3, "spec": f"{spec.name} ({spec.hash})"}


def check_shipped_sweeps() -> int:
    """Build the sweep's specs from every shipped spec that has the swept thresholds (raises
    SpecError if one refuses)."""
    from lbw_sim.guard.spec import GuardSpec, named_specs

    n = 0
    for name in named_specs():
        spec = GuardSpec.named(name)
        if not {"watch_z", "spike_z", "calm_z"} <= set(spec.thresholds):
            continue                  # a spec without these thresholds has no such sweep
        n += len([spec.with_values(v) for v in sweep_values(spec, 3, 2)])
    return n


def child(repo: Path, smoke: bool) -> dict[str, float]:
    """`measure` in a fresh interpreter importing `repo`'s lbw_sim (this file's code)."""
    code = (f"import sys, json; sys.path.insert(0, {str(repo)!r}); "
            f"sys.path.insert(1, {str(Path(__file__).parent)!r}); import replay_speed as r; "
            f"print(json.dumps(r.measure(r.{'SMOKE' if smoke else 'FULL'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=repo)
    if out.returncode != 0:
        raise SystemExit(f"measuring {repo} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of(runs: list[dict]) -> dict:
    return {**runs[0], **{k: max(r[k] for r in runs) for k in CASES},
            "retune_ms": min(r["retune_ms"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, help="a second checkout to measure side by side")
    p.add_argument("--rounds", type=int, default=2, help="alternating runs per tree (best kept)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round (seconds)")
    args = p.parse_args(argv)
    size, rounds = (SMOKE, 1) if args.smoke else (FULL, args.rounds)
    if args.smoke:
        sys.path.insert(0, str(REPO))
        print(f"sweep grids of the shipped specs: {check_shipped_sweeps()} specs build")
    trees = {"this tree": REPO, **({"base": args.base.resolve()} if args.base else {})}
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    for i in range(rounds):   # alternate which tree goes first, so drifting load falls on both
        for name in (list(trees) if i % 2 == 0 else list(trees)[::-1]):
            runs[name].append(child(trees[name], args.smoke))
    res = {k: best_of(v) for k, v in runs.items()}
    n_spike, n_calm = size["grid"]
    labels = {"replay_steps_per_s": f"replay {size['replay_steps']:,} steps, default spec",
              "retune_steps_per_s": f"replay {size['sweep_steps']:,} steps (re-tune)",
              "sweep_spec_steps_per_s": f"sweep {n_spike * n_calm} specs x "
                                        f"{size['sweep_steps']:,} steps",
              "sweep_table_spec_steps_per_s": "  the same, end to end (sweep.sweep)"}
    print(f"best of {rounds} run(s) per tree; spec {res['this tree']['spec']}"
          + (f"; base {args.base} spec {res['base']['spec']}" if args.base else ""))
    head = f"{'case':44s} {'this tree':>14s}" + (f" {'base':>14s} {'ratio':>7s}"
                                                   if args.base else "")
    print(head + "   (M steps/s; sweep: M spec-steps/s)")
    for case in CASES:
        line = f"{labels[case]:44s} {res['this tree'][case] / 1e6:14.1f}"
        if args.base:
            line += (f" {res['base'][case] / 1e6:14.1f} "
                     f"{res['this tree'][case] / res['base'][case]:7.2f}")
        print(line)
    print(json.dumps({"replay_steps_per_s": round(res["this tree"]["replay_steps_per_s"]),
                      "sweep_config_steps_per_s": round(res["this tree"]["sweep_spec_steps_per_s"]),
                      "sweep_table_steps_per_s":
                          round(res["this tree"]["sweep_table_spec_steps_per_s"]),
                      "retune_ms": round(res["this tree"]["retune_ms"], 2),
                      **({"base": {k: round(res["base"][k]) for k in CASES}} if args.base
                         else {})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

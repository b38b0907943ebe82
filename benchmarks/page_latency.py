"""Server time of a threshold edit on a 100,000-step trace (Designer/Regimes page logic),
and of a Tune page redraw (a 1-D sweep of 50 points on the same trace).

A threshold change in the studio rebuilds the spec from the edited tables, re-runs the
replay with signals, and rebuilds the figures the pages draw. Goal: < 300 ms in all.
A Tune redraw after a new range sweeps 50 specs with the batched engine, scores them
against labels and builds the trade-off and loss figures. Goal: < 1 s.
Prints a table of medians and one JSON line. `--smoke`: a 2,000-step trace, one repeat,
5 sweep points (seconds; checks the script runs, the times mean nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim.guard.analysis import transitions_table  # noqa: E402
from lbw_sim.guard.engine import replay  # noqa: E402
from lbw_sim.guard.spec import GuardSpec  # noqa: E402
from lbw_sim.studio.editor import spec_from_tables, spec_tables  # noqa: E402
from lbw_sim.traces.synthetic import Incident, healthy, inject  # noqa: E402
from lbw_sim.viz import controls_figure, signal_figure, trace_figure  # noqa: E402

N = 100_000
REPEATS = 7
GOAL_MS = 300.0
TUNE_GOAL_MS = 1000.0
TUNE_POINTS = 50


def one_edit(trace, base: GuardSpec, tables: dict, value: float) -> dict[str, float]:
    """Time each stage of what a rerun after one threshold edit does."""
    marks = {}
    t0 = time.perf_counter()
    edited = {**tables, "thresholds": tables["thresholds"].copy()}
    edited["thresholds"].loc[edited["thresholds"]["name"] == "spike_z", "value"] = repr(value)
    spec = spec_from_tables(base, edited)
    t1 = time.perf_counter()
    out = replay(trace, spec, signals=True)
    t2 = time.perf_counter()
    signal_figure(out, spec)
    controls_figure(out, spec)
    transitions_table(out)
    t3 = time.perf_counter()
    trace_figure(out, spec)
    t4 = time.perf_counter()
    marks["spec from tables"] = (t1 - t0) * 1e3
    marks["replay with signals"] = (t2 - t1) * 1e3
    marks["Regimes figures"] = (t3 - t2) * 1e3
    marks["Designer preview figure"] = (t4 - t3) * 1e3
    marks["Regimes page total"] = (t3 - t0) * 1e3
    marks["Designer page total"] = (t2 - t0 + t4 - t3) * 1e3
    return marks


def one_tune(trace, base: GuardSpec, labels, lo: float, hi: float,
             points: int) -> dict[str, float]:
    """Time what the Tune page does when the sweep range changes (no cached sweep)."""
    from lbw_sim.studio import tune as T
    from lbw_sim.viz.tune import label_figure, tradeoff_figure

    t0 = time.perf_counter()
    grid = {"thresholds.watch_z": T.grid_values(lo, hi, points)}
    table = T.tune(trace, base, grid, labels, horizon=20)
    t1 = time.perf_counter()
    tradeoff_figure(table, list(grid), True, T.current_row(table, base, list(grid)))
    label_figure(trace, labels.table)
    t2 = time.perf_counter()
    return {f"Tune sweep ({points} specs)": (t1 - t0) * 1e3, "Tune figures": (t2 - t1) * 1e3,
            "Tune page total": (t2 - t0) * 1e3}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (seconds)")
    smoke = p.parse_args(argv).smoke
    n, repeats, points = (2_000, 1, 5) if smoke else (N, REPEATS, TUNE_POINTS)
    at = [3 * n // 10, 5 * n // 10, 7 * n // 10]
    trace = inject(healthy(n, 0), [Incident("loss_spike", at[0], 3, 4.0),
                                   Incident("grad_spike", at[1], 2, 3.0),
                                   Incident("nan_storm", at[2], 4)])
    base = GuardSpec.default()
    tables = spec_tables(base)
    # Edited and swept values derived from the spec, so they stay valid under any spec:
    # spike_z above watch_z, the swept watch_z between calm_z and spike_z.
    th = {k: float(v) for k, v in base.thresholds.items()}
    one_edit(trace, base, tables, th["watch_z"] + 1.0)  # warm numba and plotly imports
    runs = [one_edit(trace, base, tables, th["watch_z"] + 1.0 + 0.25 * i)
            for i in range(repeats)]
    from lbw_sim.guard.scoring import read_labels

    labels = read_labels(pd.DataFrame({"start": at, "end": [at[0] + 3, at[1] + 2, at[2] + 4]}))
    lo, hi = th["calm_z"] + 0.5, th["spike_z"] - 2.0
    one_tune(trace, base, labels, lo, hi, points)  # warm
    tunes = [one_tune(trace, base, labels, lo, hi + 0.1 * i, points) for i in range(repeats)]
    runs = [{**r, **t} for r, t in zip(runs, tunes)]
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"threshold edit on a {n:,}-step trace, median of {repeats} (ms):")
    for k, v in medians.items():
        print(f"  {k:<26} {v:8.1f}")
    worst = max(medians["Regimes page total"], medians["Designer page total"])
    tune_ms = medians["Tune page total"]
    print(f"  goal < {GOAL_MS:.0f} ms: {'met' if worst < GOAL_MS else 'NOT met'}")
    print(f"  Tune goal < {TUNE_GOAL_MS:.0f} ms: {'met' if tune_ms < TUNE_GOAL_MS else 'NOT met'}")
    print(json.dumps({"bench": "page_latency", "steps": n, "median_ms": {
        k: round(v, 1) for k, v in medians.items()}, "goal_ms": GOAL_MS,
        "met": worst < GOAL_MS, "tune_goal_ms": TUNE_GOAL_MS,
        "tune_met": tune_ms < TUNE_GOAL_MS}))


if __name__ == "__main__":
    main()

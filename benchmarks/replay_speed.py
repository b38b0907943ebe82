"""Replay and sweep throughput of the guard engine on this machine.

Replays a 1,000,000-step synthetic trace (with incidents) through the default spec, and
sweeps 1,000 specs (a 40 x 25 grid over two thresholds) over a 100,000-step trace through
the batched engine. Times are the median of several repeats after a warm-up (the first call
loads the compiled kernels). Prints a table and ends with one JSON line.

    python benchmarks/replay_speed.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim.guard.engine import iter_walks, replay  # noqa: E402
from lbw_sim.guard.spec import GuardSpec  # noqa: E402
from lbw_sim.traces.synthetic import Incident, healthy, inject  # noqa: E402


def trace(n: int):
    incidents = [Incident("loss_spike", s, 2, 4.0) for s in range(5_000, n, 97_000)]
    incidents += [Incident("nan_storm", s, 5) for s in range(50_000, n, 211_000)]
    return inject(healthy(n, seed=0), incidents)


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    spec = GuardSpec.default()
    big = trace(1_000_000)
    t_replay = timed(lambda: replay(big, spec), repeats=5)
    small = big.iloc[:100_000].reset_index(drop=True)
    t_small = timed(lambda: replay(small, spec), repeats=20)
    specs = [spec.with_values({"thresholds.spike_z": float(z), "thresholds.spike_ratio": float(r)})
             for z in np.linspace(5, 12, 40) for r in np.linspace(1.2, 2.0, 25)]

    def sweep() -> int:
        return sum(int(w.skipped.sum()) for _, _, w, _ in iter_walks(small, specs, chunk=32))

    t_sweep = timed(sweep, repeats=3)
    replay_rate = len(big) / t_replay
    sweep_rate = len(specs) * len(small) / t_sweep
    rows = [("replay 1,000,000 steps, default spec", f"{t_replay * 1e3:8.1f} ms",
             f"{replay_rate / 1e6:7.1f} M steps/s"),
            ("replay 100,000 steps (re-tune latency)", f"{t_small * 1e3:8.1f} ms",
             f"{len(small) / t_small / 1e6:7.1f} M steps/s"),
            (f"sweep {len(specs)} specs x 100,000 steps", f"{t_sweep * 1e3:8.1f} ms",
             f"{sweep_rate / 1e6:7.1f} M spec-steps/s")]
    print(f"{'case':44s} {'median':>11s} {'throughput':>20s}")
    for row in rows:
        print(f"{row[0]:44s} {row[1]:>11s} {row[2]:>20s}")
    print(json.dumps({"replay_steps_per_s": round(replay_rate),
                      "sweep_config_steps_per_s": round(sweep_rate),
                      "retune_100k_ms": round(t_small * 1e3, 2)}))


if __name__ == "__main__":
    main()

"""The guard's kernels side by side with another commit's: replay, sweep and step overhead.

Each tree (this checkout, and with `--base REF` that commit's `lbw_sim`, extracted with
`git archive`) runs in its own worker process; the parent asks the workers for each
measure in turn, one tree right after the other in alternating order, so that machine load
hits both alike, and reports the medians and the best over the rounds with the ratio
this/base (on a loaded machine the best is the steadier figure). Measured per round:

- replay: `engine.replay` of a 1,000,000-step synthetic trace (with incidents) through the
  default spec, in steps/s;
- signals: every estimator kind once (`signals.compute_signals` over the same trace), in
  rows per second per signal;
- sweep: `sweep.sweep` of 100 specs (10 x 10 half-lives of the default spec's two z
  signals: valid under any threshold) over the first 100,000 steps, in spec-steps/s;
- online: `OnlineGuard.observe` and `TensorGuard.observe` (CPU, 0-d tensors), µs per call.

Each figure of a round is the fastest of three calls (three fresh guards for the online
ones); each worker warms up (JIT caches, first calls) before the first round. Prints a table with
the load average and ends with one JSON line.

    python benchmarks/kernel_speed.py --base main [--rounds 7]
    python benchmarks/kernel_speed.py --smoke      # seconds, this tree only, nothing timed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = {"rows": 1_000_000, "sweep_rows": 100_000, "sweep_side": 10, "observes": 400}
SMOKE = {"rows": 3_000, "sweep_rows": 2_000, "sweep_side": 2, "observes": 20}
MEASURES = ("replay_steps_per_s", "signal_rows_per_s", "sweep_spec_steps_per_s",
            "online_us_per_observe", "tensor_us_per_observe")
ALL_KINDS = {"name": "all_kinds", "regimes": {"a": {}}, "initial": "a", "transitions": [],
             "signals": {
                 "e": {"kind": "ema", "source": "loss", "half_life": 20.0},
                 "z": {"kind": "ema_z", "source": "loss", "warmup": 20, "clip": 3.0},
                 "r": {"kind": "ratio", "source": "loss", "warmup": 20, "clip": 1.5},
                 "s": {"kind": "slope", "source": "loss", "warmup": 10},
                 "rz": {"kind": "robust_z", "source": "grad_norm", "warmup": 20, "clip": 3.0},
                 "rr": {"kind": "ref_ratio", "source": "grad_norm", "warmup": 100,
                        "per": "lr"}}}


# --- worker: one tree, measures on request ---------------------------------------------------

def worker(tree: str, sizes: dict[str, int]) -> None:
    """Import `tree`'s lbw_sim, warm up, then answer each stdin line with one round (JSON)."""
    sys.path.insert(0, tree)
    import numpy as np
    import torch

    from lbw_sim.guard.engine import OnlineGuard, replay
    from lbw_sim.guard.signals import compute_signals
    from lbw_sim.guard.spec import GuardSpec
    from lbw_sim.guard.sweep import sweep
    from lbw_sim.guard.torch_backend import TensorGuard
    from lbw_sim.traces.synthetic import Incident, healthy, inject

    assert Path(sys.modules["lbw_sim"].__file__).resolve().is_relative_to(Path(tree).resolve())
    torch.set_num_threads(1)
    n = sizes["rows"]
    incidents = [Incident("loss_spike", s, 2, 4.0) for s in range(500, n, 97_000)]
    incidents += [Incident("nan_storm", s, 5) for s in range(1_500, n, 211_000)]
    big = inject(healthy(n, seed=0), incidents)
    small = big.iloc[:sizes["sweep_rows"]].reset_index(drop=True)
    spec, kinds = GuardSpec.default(), GuardSpec.from_dict(ALL_KINDS)
    steps = big["step"].to_numpy()
    cols = {c: big[c].to_numpy(np.float64) for c in ("loss", "grad_norm", "lr") if c in big}
    side = sizes["sweep_side"]
    grid = {f"signals.{name}.half_life": [float(h) for h in np.geomspace(5, 200, side)]
            for name in ("loss_z", "grad_z")}
    tel = [{k: float(getattr(r, k)) for k in ("loss", "grad_norm", "lr") if hasattr(r, k)}
           for r in big.iloc[:sizes["observes"]].itertuples()]
    tel_t = [{k: torch.tensor(v, dtype=torch.float64) for k, v in t.items()} for t in tel]

    def per_call(make, rows) -> float:
        """µs per observe: the fastest of three fresh guards (the least disturbed by load)."""
        best = math.inf
        for _ in range(3):
            guard = make()
            t = time.perf_counter()
            for i, row in enumerate(rows):
                guard.observe(i + 1, **row)
            best = min(best, (time.perf_counter() - t) / len(rows) * 1e6)
        return best

    def fastest(fn) -> float:
        """Seconds of the fastest of three calls (the least disturbed by load)."""
        best = math.inf
        for _ in range(3):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    def replay_rate() -> float:
        return n / fastest(lambda: replay(big, spec))

    def signal_rate() -> float:
        return n * len(kinds.signals) / fastest(lambda: compute_signals(kinds, cols, steps))

    def sweep_rate() -> float:
        return side * side * len(small) / fastest(lambda: sweep(small, spec, grid))

    measures = {"replay_steps_per_s": replay_rate, "signal_rows_per_s": signal_rate,
                "sweep_spec_steps_per_s": sweep_rate,
                "online_us_per_observe": lambda: per_call(lambda: OnlineGuard(spec), tel),
                "tensor_us_per_observe": lambda: per_call(lambda: TensorGuard(spec, "cpu"),
                                                          tel_t)}
    for fn in measures.values():               # warm-up: JIT caches and first calls
        fn()
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(measures[line.strip()]()), flush=True)


# --- parent: interleave the workers ----------------------------------------------------------

def extract(ref: str, into: str) -> str:
    """`ref`'s lbw_sim package under `into` (git archive: no worktree left behind)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], check=True,
                         capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "lbw_sim"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return sha


def start(tree: str, smoke: bool) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", tree] + (["--smoke"] if smoke else [])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise SystemExit(f"worker for {tree} failed to start (said {line!r})")
    return proc


def ask(proc: subprocess.Popen, measure: str) -> float:
    proc.stdin.write(measure + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("a worker died mid-run")
    return json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="git ref to compare with (omit: this tree alone)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round, no base")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, SMOKE if args.smoke else FULL)
    rounds = 1 if args.smoke else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this": str(ROOT)}
        git = ["git", "-C", str(ROOT)]
        dirty = subprocess.run([*git, "status", "--porcelain", "lbw_sim"], capture_output=True,
                               text=True).stdout.strip()
        label = {"this": subprocess.run([*git, "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True).stdout.strip()
                 + ("+edits" if dirty else "")}
        if args.base and not args.smoke:
            label["base"] = extract(args.base, tmp)[:7]
            trees["base"] = tmp
        load = os.getloadavg()
        procs = {k: start(t, args.smoke) for k, t in trees.items()}
        results: dict[str, dict[str, list[float]]] = {k: {m: [] for m in MEASURES}
                                                      for k in trees}
        for r in range(rounds):                # each measure of one tree right after the other's
            for i, m in enumerate(MEASURES):
                for k in (list(trees) if (r + i) % 2 == 0 else list(reversed(trees))):
                    results[k][m].append(ask(procs[k], m))
        for p in procs.values():
            p.stdin.close()
            p.wait()
        load = (load, os.getloadavg())
    med = {k: {m: statistics.median(v) for m, v in rs.items()} for k, rs in results.items()}
    best = {k: {m: (min(v) if m.endswith("per_observe") else max(v)) for m, v in rs.items()}
            for k, rs in results.items()}
    print(f"{os.cpu_count()} CPUs; load average (1/5/15 min) {load[0]} at start, "
          f"{load[1]} at end; {rounds} rounds")
    for title, table in (("median", med), ("best (max rate, min µs)", best)):
        print(f"\n{title:28s} " + " ".join(f"{k + ' ' + label[k]:>18s}" for k in trees)
              + ("   this/base" if "base" in trees else ""))
        for m in MEASURES:
            cells = " ".join(f"{table[k][m]:18.4g}" for k in trees)
            ratio = (f"   {table['this'][m] / table['base'][m]:9.3f}" if "base" in trees
                     else "")
            print(f"{m:28s} {cells}{ratio}")
    print(json.dumps({"load": load, "rounds": rounds, "labels": label, "medians": med,
                      "best": best}))


if __name__ == "__main__":
    main()

"""Quiet and no harm on seeds never used before: the shipped default beside AdamW.

For every suite task, AdamW and the guard at 0.316x, 1x and 3.16x the task's seed-0 best LR
on fresh seeds (default 4-6; the suite reports 1-3, tuning used 0). Per guard cell: the
fraction of steps nominal after warm-up, guard / AdamW final val loss on the same seed, and
where another spec (`--previous`) would first leave nominal, replayed on the same trace
(exact up to that step, since the two specs train identically while both are nominal).

    python benchmarks/fresh_seeds.py --out runs/fresh_seeds [--previous OLD.yaml]   # ~5 min

`--smoke`: one task, one seed, the best LR only, 40 steps, into a temporary folder, with
the v1 spec as `--previous` (seconds; checks the script runs, not the figures).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim.bench.suite import get_tasks, run_suite  # noqa: E402
from lbw_sim.guard.engine import replay  # noqa: E402
from lbw_sim.guard.spec import GuardSpec  # noqa: E402
from lbw_sim.sim.runner import trace_name  # noqa: E402
from lbw_sim.traces.per_step import nominal_fraction  # noqa: E402

FACTORS = (0.316, 1.0, 3.16)
WARMUP = 30
SMOKE = {"tasks": ["noisy_quadratic"], "seeds": "4", "factors": (1.0,), "steps": 40,
         "previous": "lbw-v1"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/fresh_seeds")
    p.add_argument("--seeds", default="4,5,6")
    p.add_argument("--previous", help="a spec name or file to replay beside the default")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="a few seconds' run in a temp folder")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            return run(tmp, SMOKE["seeds"], SMOKE["previous"], 1, get_tasks(SMOKE["tasks"]),
                       SMOKE["factors"], SMOKE["steps"])
    return run(args.out, args.seeds, args.previous, args.workers, get_tasks(), FACTORS, None)


def run(out: str, seed_list: str, previous: str | None, workers: int, tasks: list,
        factors: tuple[float, ...], steps: int | None) -> int:
    seeds = [int(s) for s in seed_list.split(",")]
    spec = GuardSpec.default()
    old = GuardSpec.resolve(previous, Path.cwd()) if previous else None
    lrs = {t.name: [round(t.best_lr * f, 6) for f in factors] for t in tasks}
    run_suite(out, workers=workers, seeds=seeds, arms=["adamw", "guard"], lrs=lrs,
              progress=False, tasks=tasks, steps=steps)
    print(f"spec {spec.name} ({spec.hash}); seeds {seed_list}; nominal after step {WARMUP}")
    print("| task | lr | seed | nominal | guard / AdamW |"
          + (f" {old.name} ({old.hash}) first leaves nominal |" if old else ""))
    print("|---|---|---|---|---|" + ("---|" if old else ""))
    for t in tasks:
        s = pd.read_csv(Path(out) / t.name / "summary.csv")
        for r in s[s["arm"] == "guard"].sort_values(["lr", "seed"]).itertuples():
            trace = pd.read_csv(Path(out) / t.name / trace_name("guard", r.lr, r.seed))
            a = s[(s["arm"] == "adamw") & (s["lr"] == r.lr) & (s["seed"] == r.seed)]
            ratio = r.final_val_loss / float(a["final_val_loss"].iloc[0])
            row = (f"| {t.name} | {r.lr:g} | {r.seed} | "
                   f"{100 * nominal_fraction(replay(trace, spec), spec.initial, WARMUP):.1f} % | "
                   f"{ratio:.4f} |")
            if old:
                o = replay(trace, old)
                off = o[o["regime"] != old.initial]
                first = off.iloc[0] if len(off) else None
                row += (f" step {int(first['step'])}: {first['cause'] or first['regime']} |"
                        if first is not None else " never |")
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

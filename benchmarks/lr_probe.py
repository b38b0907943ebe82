"""Does an active LR probe tell "this LR is too high" from "this run is fine"? (seed 0)

The idea left open by the passive statistics of `too_high_signals.py`: halve the LR for a
few steps and read the loss's response against its own noise — a run held on a noise floor
by too high an LR should drop at once, a run at a good LR should barely move. For every
suite task at 1x, 3.16x and 10x its AdamW-best LR, plain AdamW (as the suite's `adamw` arm,
`suite.plain_adamw`) is trained twice from the same seed (0, the tuning seed): as is, and
with the LR halved for steps 150-170. Printed:

- `drop`: the probe run's mean loss over steps 130-150 minus over 155-170, in units of the
  loss's step-to-step noise (steps 100-150) — what a guard could read online;
- `vs as-is`: the probe run's loss over 150-170 against the unprobed run's, same units
  (the counterfactual, not available online);
- both runs' final val loss (what the probe costs).

A probe transfers if one threshold on `drop` separates 1x from 10x on every task.

    python benchmarks/lr_probe.py [--tasks gpt_prose,mlp_digits]   # ~4 min, 1 core

`--smoke`: the noisy quadratic only (seconds; checks the script runs, not the figures).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim.bench.suite import get_tasks, plain_adamw  # noqa: E402

FACTORS = (1.0, 3.16, 10.0)
PROBE, CUT = (150, 170), 0.5


def train(task, factor: float, probe: bool, seed: int = 0) -> tuple[np.ndarray, float]:
    """Per-step training losses and the final val loss of one plain-AdamW run."""
    def scale(step: int) -> float:
        return CUT if probe and PROBE[0] <= step < PROBE[1] else 1.0

    built, steps = plain_adamw(task, factor, seed, lr_scale=scale)
    losses = [float(loss.detach()) for _, loss in steps]
    return np.array(losses), built.evaluate()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", help="comma-separated suite tasks (default: all)")
    p.add_argument("--smoke", action="store_true", help="the noisy quadratic only (seconds)")
    args = p.parse_args(argv)
    if args.smoke:
        args.tasks = "noisy_quadratic"
    torch.set_num_threads(1)
    print("| task | LR factor | val loss | with the probe | drop (noise units) | vs as-is |")
    print("|---|---|---|---|---|---|")
    for task in get_tasks(args.tasks.split(",") if args.tasks else None):
        for f in FACTORS:
            plain, val = train(task, f, probe=False)
            probed, val_probed = train(task, f, probe=True)
            noise = np.abs(np.diff(plain[100:150])).mean() / np.sqrt(2)
            drop = (probed[130:150].mean() - probed[155:170].mean()) / noise
            vs = (probed[150:170].mean() - plain[150:170].mean()) / noise
            print(f"| {task.name} | {f:g}x | {val:.3f} | {val_probed:.3f} | {drop:+.2f} | "
                  f"{vs:+.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

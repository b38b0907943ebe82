"""Can a scale-free statistic tell "this LR is too high" from "this run is fine"? (seed 0)

For every task of the suite (lbw_sim/bench/suite.py) and LR factors 1x, 3.16x, 10x and 31.6x
its AdamW-best LR, plain AdamW exactly as the suite's `adamw` arm (`suite.plain_adamw`;
seed 0: the tuning seed) is trained while five candidate signals are measured (four of them
free of the task's scale):

- `hypergrad`: cosine between this step's gradient and the previous update (the sign of the
  hypergradient dL/dlr: > 0 means the last step overshot), mean over steps 5-30;
- `grad/g0`: median gradient norm over steps 60-300 against its median over steps 0-5
  (a reference frozen early, when the LR is still small);
- `drawdown`: the loss EMA's largest rise above its own running best, in units of its own
  absolute deviation (a run that diverges slowly climbs away from its best);
- `update ratio`: median of |Δθ| / |θ| after the warm-up (30 steps) — not scale-free in the
  same sense: one dimensionless constant for every model, the kind v1's 3 % trigger was;
- `grad cos`: cosine between consecutive gradients late in the run (steps 100+): a run that
  bounces across a valley at too high an LR should see its gradients anti-correlate.

A signal transfers if one threshold separates the 1x rows from the >= 10x rows on every task.
The printed table is the evidence behind docs/guard.md's "Rescue: what was measured".

    python benchmarks/too_high_signals.py [--tasks gpt_prose,mlp_digits]   # ~3 min, 1 core

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

FACTORS = (1.0, 3.16, 10.0, 31.6)


def _flat(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def measure(task, factor: float, seed: int = 0) -> dict[str, float]:
    """Train one cell with plain AdamW and return the five signals and the val loss."""
    cos = torch.nn.functional.cosine_similarity
    hyper, norms, losses, ratios, gcos = [], [], [], [], []
    prev_grad = prev_theta = update = None
    built, steps = plain_adamw(task, factor, seed)
    params = [p for p in built.module.parameters() if p.requires_grad]
    for _, loss in steps:
        grad, theta = _flat([p.grad for p in params]), _flat([p.detach() for p in params])
        if prev_theta is not None:                  # the update just applied, and its size
            update = theta - prev_theta
            ratios.append(float(update.norm() / prev_theta.norm().clamp_min(1e-12)))
        hyper.append(float(cos(grad, update, 0)) if update is not None else np.nan)
        gcos.append(float(cos(grad, prev_grad, 0)) if prev_grad is not None else np.nan)
        norms.append(float(grad.norm()))
        losses.append(float(loss.detach()))
        prev_grad, prev_theta = grad, theta
    g = np.array(norms)
    return {"val": built.evaluate(), "hypergrad": float(np.nanmean(hyper[5:30])),
            "grad/g0": float(np.median(g[60:]) / np.median(g[:5])),
            "drawdown": drawdown(np.array(losses)), "update ratio": float(np.median(ratios[30:])),
            "grad cos": float(np.nanmean(gcos[100:]))}


def drawdown(loss: np.ndarray, half_life: float = 20.0, warmup: int = 20) -> float:
    """Largest rise of the loss EMA above its running best, in its own deviation units."""
    a = 1.0 - 0.5 ** (1.0 / half_life)
    m, dev, best, worst = loss[0], 0.0, np.inf, 0.0
    for i, x in enumerate(loss):
        m += a * (x - m)
        dev += a * (abs(x - m) - dev)
        if i >= warmup:
            best = min(best, m)
            worst = max(worst, (m - best) / max(dev, 1e-12))
    return float(worst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", help="comma-separated suite tasks (default: all)")
    p.add_argument("--smoke", action="store_true", help="the noisy quadratic only (seconds)")
    args = p.parse_args(argv)
    if args.smoke:
        args.tasks = "noisy_quadratic"
    torch.set_num_threads(1)
    print("| task | LR factor | val loss | hypergrad (5-30) | grad/g0 | drawdown | update ratio "
          "| grad cos (100+) |")
    print("|---|---|---|---|---|---|---|---|")
    for task in get_tasks(args.tasks.split(",") if args.tasks else None):
        for f in FACTORS:
            m = measure(task, f)
            print(f"| {task.name} | {f:g}x | {m['val']:.3f} | {m['hypergrad']:+.3f} | "
                  f"{m['grad/g0']:.2f} | {m['drawdown']:.2f} | {100 * m['update ratio']:.2f} % | "
                  f"{m['grad cos']:+.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Optimizer paths on 2-D landscapes, plain and guarded, for teaching the mechanism.

`run_paths` starts each arm (the plain optimizer, and the same optimizer wrapped in
`GuardedOptimizer`) from the landscape's start point at several peak learning rates and
records every step: position, loss, and for the guarded arm the regime and LR scale the
guard applied. A run that leaves all reason (non-finite or |p| > `escape`) stops there.

Why the edge-of-stability preset uses plain gradient descent: on a quadratic, gradient
descent diverges once lr > 2/lambda_max, while AdamW divides each step by sqrt(v), so its
step stays near lr and it hovers in the basin at any constant LR instead of leaving it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lbw_sim.guard.analysis import action_counts
from lbw_sim.guard.optim import GuardedOptimizer
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.landscapes import Landscape, get_landscape

OPTIMIZERS = ("adamw", "sgd")
ARMS = ("plain", "guarded")


@dataclass(frozen=True)
class PathConfig:
    """What to run: landscape, optimizer, peak LRs, steps and linear LR warm-up (steps)."""

    landscape: str = "edge_of_stability"
    optimizer: str = "sgd"
    lrs: tuple[float, ...] = (0.1, 0.35)
    steps: int = 150
    warmup: int = 30
    escape: float = 1e3


#: Presets the Trajectories page offers; the edge-of-stability one is the guard's showcase.
PRESETS: dict[str, PathConfig] = {
    "edge_of_stability": PathConfig(),
    "rosenbrock": PathConfig("rosenbrock", "adamw", (0.01, 0.05, 0.2), 300, 0),
    "ill_conditioned": PathConfig("ill_conditioned", "adamw", (0.05, 0.2, 0.8), 200, 0),
    "rastrigin": PathConfig("rastrigin", "adamw", (0.05, 0.3, 1.0), 200, 0),
}


def make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Plain AdamW (no weight decay, so the landscape's minimum stays the minimum) or GD."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r} (one of {', '.join(OPTIMIZERS)})")


def run_path(land: Landscape, cfg: PathConfig, lr: float, guarded: bool,
             spec: GuardSpec | None = None) -> pd.DataFrame:
    """One arm at one peak LR: a row per step (step 0 = the start point)."""
    p = land.param(dtype=torch.float64)
    inner = make_optimizer(cfg.optimizer, [p], lr)
    opt = GuardedOptimizer(inner, spec or GuardSpec.default()) if guarded else inner
    xy, losses = [p.detach().numpy().copy()], [_loss(land, p)]
    for step in range(cfg.steps):
        for group in inner.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else lr
        opt.zero_grad()
        loss = land.loss(p)
        loss.backward()
        opt.step(loss=loss) if guarded else opt.step()
        here = p.detach().numpy().copy()
        if not np.isfinite(here).all() or np.abs(here).max() > cfg.escape:
            break
        xy.append(here)
        losses.append(_loss(land, p))
    out = pd.DataFrame({"step": np.arange(len(xy)), "x": [v[0] for v in xy],
                        "y": [v[1] for v in xy], "loss": losses})
    out["regime"], out["lr_scale"], out["skipped"] = "unguarded", 1.0, False
    out["update_scale"], out["transition"], out["cause"] = 1.0, "", ""
    # ‖Δθ‖/‖θ‖ of the update that led to each row: what the update cap and the ratchet read
    pos = np.asarray(xy)
    ratio = np.linalg.norm(np.diff(pos, axis=0), axis=1) / np.linalg.norm(pos[:-1], axis=1)
    out["update_ratio"] = np.concatenate([[np.nan], ratio])
    if guarded:
        tr = opt.trace()
        n = min(len(tr), len(out) - 1)
        for col in ("regime", "transition", "cause"):
            out.loc[1:n, col] = tr[col].astype(str).to_numpy()[:n]
        out.loc[1:n, "lr_scale"] = tr["lr_scale"].to_numpy()[:n]
        out.loc[1:n, "skipped"] = tr["skipped"].to_numpy()[:n]
        if "update_scale" in tr:
            out.loc[1:n, "update_scale"] = tr["update_scale"].fillna(1.0).to_numpy()[:n]
            out["update_cap"] = np.inf
            out.loc[1:n, "update_cap"] = tr["update_cap"].to_numpy()[:n]
            # before the cap, as the guard measured it (each row sees the previous update)
            seen = tr["update_ratio"].to_numpy()[1:n + 1] if "update_ratio" in tr else []
            out.loc[1:len(seen), "update_ratio"] = seen
        out.loc[0, "regime"] = (spec or GuardSpec.default()).initial
    return out


def _loss(land: Landscape, p: torch.Tensor) -> float:
    with torch.no_grad():
        return float(land.loss(p))


def guard_actions(path: pd.DataFrame) -> str:
    """What the guard did on one guarded path, in words (regimes left, updates capped, skips)."""
    parts = []
    regimes = [r for r in dict.fromkeys(path["regime"]) if r != path["regime"].iloc[0]]
    if regimes:
        parts.append(f"entered {', '.join(regimes)}")
    capped = int((path["update_scale"] < 1).sum())
    if capped:
        parts.append(f"bounded {capped} update(s) by the update cap "
                     f"(smallest factor {path['update_scale'].min():.2g})")
    if path["skipped"].any():
        parts.append(f"skipped {int(path['skipped'].sum())} update(s)")
    return "; ".join(parts) or "took no action"


#: The spec Home's demo is guarded by: the v1 ratchet, whose update cap holds a step past
#: the edge of stability (the adaptive default carries no cap and does not hold it).
DEMO_SPEC = "lbw-v1"


def demo_runs(lr: float = 0.35, spec: GuardSpec | None = None
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Home's one-click demo: GD past the edge of stability, unguarded and guarded (by
    `spec`, the v1 ratchet `DEMO_SPEC` when not given); the paths and their `summarize`
    table."""
    cfg = PathConfig(lrs=(lr,))
    paths = run_paths(cfg, spec or GuardSpec.named(DEMO_SPEC))
    return paths, summarize(paths, cfg)


def run_paths(cfg: PathConfig, spec: GuardSpec | None = None) -> pd.DataFrame:
    """Every arm at every LR, long format: arm, lr, step, x, y, loss, regime, lr_scale."""
    land = get_landscape(cfg.landscape)
    parts = []
    for lr in cfg.lrs:
        for arm in ARMS:
            df = run_path(land, cfg, lr, arm == "guarded", spec)
            df.insert(0, "lr", lr)
            df.insert(0, "arm", arm)
            parts.append(df)
    return pd.concat(parts, ignore_index=True)


def summarize(paths: pd.DataFrame, cfg: PathConfig) -> pd.DataFrame:
    """Per arm and LR: final loss, whether it left the plotting window, steps run, and for
    the guarded arm the steps where any control acted (`guard.analysis.acted`: a cap
    binding counts, a regime change alone does not), how many updates the cap bounded and
    how many transitions fired."""
    x0, x1, y0, y1 = get_landscape(cfg.landscape).window
    rows = []
    for (arm, lr), g in paths.groupby(["arm", "lr"], sort=False):
        outside = (g["x"] < x0) | (g["x"] > x1) | (g["y"] < y0) | (g["y"] > y1)
        escaped = len(g) <= cfg.steps
        acts = action_counts(g.iloc[1:]) if arm == "guarded" else None
        rows.append({"arm": arm, "lr": lr, "final loss": float(g["loss"].iloc[-1]),
                     "left the window": bool(outside.any() or escaped),
                     "steps run": len(g) - 1,
                     "guard acted (steps)": acts["acted"] if acts else 0,
                     "updates capped": acts["capped"] if acts else 0,
                     "regime changes": acts["transitions"] if acts else 0})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Verdict:
    """Plain against guarded over the runs above an LR: how many each arm lost (left the
    plotting window or all reason), and how far the plain arm got before it did."""

    runs: int
    plain_lost: int
    guarded_lost: int
    plain_steps: int

    @property
    def guard_holds(self) -> bool:
        """The plain optimizer loses every such run and the guard holds every one."""
        return self.runs > 0 and self.plain_lost == self.runs and self.guarded_lost == 0


def verdict(summary: pd.DataFrame, above_lr: float = 0.0) -> Verdict:
    """The verdict on a `summarize` table, over the LRs strictly above `above_lr`."""
    high = summary[summary["lr"] > above_lr]
    plain, guarded = (high[high["arm"] == a] for a in ARMS)
    lost = plain[plain["left the window"]]
    return Verdict(runs=len(plain), plain_lost=len(lost),
                   guarded_lost=int(guarded["left the window"].sum()),
                   plain_steps=int(lost["steps run"].min()) if len(lost) else 0)


def describe(summary: pd.DataFrame, cfg: PathConfig, lr_threshold: float | None = None) -> str:
    """The page's note on these runs, from the current choices: per LR, how each arm ended
    and what the guard did; on a quadratic (`lr_threshold` = 2/λ_max) which LRs are past the
    edge, and for AdamW why it does not leave the basin there."""
    parts = []
    for lr, g in summary.groupby("lr", sort=True):
        plain, guarded = (g[g["arm"] == a].iloc[0] for a in ARMS)
        end = lambda r: ("left the plot" if r["left the window"]  # noqa: E731
                         else f"ended at {r['final loss']:.3g}")
        acted = (f"acted on {guarded['guard acted (steps)']} step(s), "
                 f"{guarded['updates capped']} of them capped updates"
                 if guarded["guard acted (steps)"] else "took no action")
        parts.append(f"LR {lr:g}: plain {end(plain)}, guarded {end(guarded)}; the guard {acted}.")
    text = " ".join(parts)
    if lr_threshold is None:
        return text
    past = [f"{lr:g}" for lr in cfg.lrs if lr > lr_threshold]
    edge = (f"Gradient descent on this quadratic diverges once the LR passes 2/λ_max = "
            f"{lr_threshold:g}" + (f" (here: {', '.join(past)})." if past else
                                   "; none of the chosen LRs is past it."))
    if cfg.optimizer == "adamw":
        edge += (" AdamW divides each step by √v, so its step stays near the LR and it "
                 "hovers inside the basin at any constant LR instead of leaving it: switch to "
                 "SGD to see the edge.")
    return f"{edge} {text}"

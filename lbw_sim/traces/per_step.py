"""Healthy traces logged every step, with the per-step noise real runs have (no torch).

Logged every 10+ steps, a loss curve is an average and looks smooth; logged every step it
carries the full minibatch noise. A guard judged only on smooth logs can mistake that noise
for instability, so these traces imitate three per-step regimes:

    df = fine_tune(2000)          # low loss ~ 0.045 +- 0.017 (a Hugging Face fine-tune)
    df = pre_train(3000)          # LM pre-training: ~10 -> ~3 nats, +-3 % per step
    df = plateau_escape(300)      # a classifier leaves its plateau: grad norm grows ~10x
    bad, labels = with_collapse(df, at=1500)   # a later fp16 collapse: NaN from step 1500 on
    bad, labels = with_spike(df, at=1500)      # a real loss spike that recovers

Every trace is a pure function of its arguments (seeded), in the canonical schema's
`step, loss, grad_norm, lr` columns; incidents come with their labels (start, end, kind).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _lognormal(rng: np.random.Generator, mean: np.ndarray, std: float | np.ndarray,
               n: int) -> np.ndarray:
    """Positive noise with the given per-step mean and standard deviation."""
    sigma2 = np.log1p((np.asarray(std) / mean) ** 2)
    return mean * np.exp(np.sqrt(sigma2) * rng.standard_normal(n) - sigma2 / 2)


def _lr(n: int, peak: float, warmup: int) -> np.ndarray:
    """Linear warm-up to `peak`, then linear decay to 0 (the Hugging Face Trainer default)."""
    s = np.arange(n, dtype=np.float64)
    up = np.minimum(1.0, (s + 1) / max(warmup, 1))
    down = np.clip((n - s) / max(n - warmup, 1), 0.0, 1.0)
    return peak * np.where(s < warmup, up, down)


def fine_tune(n: int = 2000, seed: int = 0, loss: float = 0.045, noise: float = 0.017,
              warmup: int = 100) -> pd.DataFrame:
    """A healthy fine-tune logged every step: the loss falls from ~3x `loss` during the
    warm-up and then sits at `loss` with per-step standard deviation `noise` (log-normal,
    so occasional steps reach 2-3x the mean, as small batches of easy examples do)."""
    rng = np.random.default_rng([seed, 11])
    s = np.arange(n, dtype=np.float64)
    mean = loss * (1.0 + 2.0 * np.exp(-s / max(warmup / 2, 1)))
    values = _lognormal(rng, mean, noise * mean / loss, n)
    grad = _lognormal(rng, 0.6 * (mean / loss) ** 0.5, 0.25 * (mean / loss) ** 0.5, n)
    return pd.DataFrame({"step": np.arange(n, dtype=np.int64), "loss": values,
                         "grad_norm": grad, "lr": _lr(n, 2e-5, warmup)})


def pre_train(n: int = 3000, seed: int = 0, warmup: int = 200) -> pd.DataFrame:
    """A healthy LM pre-training run logged every step: ~10.8 nats falling to ~3 with 3 %
    per-step noise; the gradient norm peaks early and drifts down, 20 % per-step noise."""
    rng = np.random.default_rng([seed, 12])
    s = np.arange(n, dtype=np.float64)
    mean = 3.0 + 7.8 * np.exp(-s / 120.0) + 1.2 * np.exp(-s / max(n / 3, 1))
    values = _lognormal(rng, mean, 0.03 * mean, n)
    gmean = (0.3 + 1.2 * (1 - np.exp(-s / 60))) * np.exp(-s / (2.0 * n))
    grad = _lognormal(rng, gmean, 0.2 * gmean, n)
    return pd.DataFrame({"step": np.arange(n, dtype=np.int64), "loss": values,
                         "grad_norm": grad, "lr": _lr(n, 6e-4, warmup)})


def plateau_escape(n: int = 300, seed: int = 0, at: int = 30,
                   growth: float = 10.0) -> pd.DataFrame:
    """A healthy classifier leaving its initial plateau (the digits CNN at its best LR): the
    loss sits at ln 10 until `at`, then falls; the gradient norm, 25 % per-step noise on the
    plateau, grows `growth` x within ~30 steps (logits sharpen) with 35 % noise. A guard that
    measures the norm against a level from before the growth reads this as an outlier."""
    rng = np.random.default_rng([seed, 13])
    s = np.arange(n, dtype=np.float64)
    mean = 0.15 + 2.15 * np.exp(-np.maximum(s - at, 0.0) / 60.0)
    values = _lognormal(rng, mean, 0.015 * mean, n)
    gmean = 0.14 * (1.0 + (growth - 1.0) / (1.0 + np.exp(-(s - at - 15.0) / 6.0)))
    grad = _lognormal(rng, gmean, np.where(s < at, 0.25, 0.35) * gmean, n)
    lr = 3e-2 * np.minimum(1.0, (s + 1) / 30)
    return pd.DataFrame({"step": np.arange(n, dtype=np.int64), "loss": values,
                         "grad_norm": grad, "lr": lr})


def with_collapse(df: pd.DataFrame, at: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An fp16 collapse from step `at` on: loss and gradient norm NaN (as a Hugging Face log
    writes them once the loss scale underflows); the label spans the rest of the run."""
    out = df.copy()
    bad = out["step"] >= at
    out.loc[bad, ["loss", "grad_norm"]] = np.nan
    end = int(out["step"].iloc[-1])
    return out, pd.DataFrame({"start": [at], "end": [end], "kind": ["nan_collapse"]})


def with_spike(df: pd.DataFrame, at: int, size: float = 4.0,
               recover: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A real loss spike at `at`: the loss jumps to `size` x its level and decays back over
    `recover` steps; the gradient norm jumps `size**2` x (the spike's signature)."""
    out = df.copy()
    k = (out["step"] - at).to_numpy(np.float64)
    bump = np.where(k >= 0, np.exp(-np.maximum(k, 0) / (recover / 4)), 0.0)
    out["loss"] = out["loss"] * (1.0 + (size - 1.0) * bump)
    out["grad_norm"] = out["grad_norm"] * (1.0 + (size ** 2 - 1.0) * bump)
    return out, pd.DataFrame({"start": [at], "end": [at + recover], "kind": ["loss_spike"]})


def nominal_fraction(replayed: pd.DataFrame, initial: str, after: int = 0,
                     before: int | None = None) -> float:
    """Fraction of replayed rows in the spec's initial regime for `after <= step < before`."""
    s = replayed["step"]
    rows = replayed[(s >= after) & (s < (before if before is not None else s.max() + 1))]
    return float((rows["regime"] == initial).mean()) if len(rows) else 1.0

"""The guard in a Lightning Trainer (automatic optimization): a tiny MLP, synthetic data, CPU.

    python examples/lightning_fit.py --steps 120 --out runs/lightning --spike-at 80

Writes `OUT/guard_trace.csv` (one row per optimizer step: the guard's telemetry and
decisions; `step` is the 0-based optimizer step) and Lightning's `OUT/lightning_logs/`
(`metrics.csv` with the guard's columns). `--spike-at K` multiplies the gradients of optimizer
step K by 1e4 before the optimizer sees them; the shipped default guard needs 50 steps of
history before its gradient z-score counts, so pick K ≥ 50.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import lbw_sim  # noqa: F401
except ImportError:                                  # run from a clone, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from lbw_sim import GuardSpec
from lbw_sim.integrations.lightning import GuardCallback

TRACE_COLUMNS = ["step", "loss", "grad_norm", "lr", "update_ratio", "regime", "lr_scale",
                 "skipped", "transition", "cause"]
CONFIG = {"inputs": 8, "width": 32, "depth": 2, "lr": 1e-3, "batch_size": 16}


class Regressor(L.LightningModule):
    """An MLP built from `CONFIG`, fitting a fixed random teacher network plus noise."""

    def __init__(self, inputs: int, width: int, depth: int, lr: float, **_: object):
        super().__init__()
        layers: list[torch.nn.Module] = []
        for i in range(depth):
            layers += [torch.nn.Linear(inputs if i == 0 else width, width), torch.nn.GELU()]
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def teacher_data(n: int, inputs: int, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, inputs, generator=g)
    w = torch.randn(inputs, 1, generator=g)
    y = torch.tanh(x @ w) + 0.1 * torch.randn(n, 1, generator=g)
    return torch.utils.data.TensorDataset(x, y)


class SpikeAt(L.Callback):
    """Multiply the gradients of optimizer step `k` by `factor` (a fault to detect)."""

    def __init__(self, k: int, factor: float = 1e4):
        self.k, self.factor = k, factor

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.k:
            for p in pl_module.parameters():
                if p.grad is not None:
                    p.grad.mul_(self.factor)


def make_fit(out: Path, steps: int, *, spike_at: int | None = None,
             spec: GuardSpec | None = None, batches_per_epoch: int = 25,
             callbacks: list | None = None, **overrides):
    """(trainer, module, loader) as the example runs them; tests build theirs here too."""
    torch.manual_seed(0)
    module = Regressor(**CONFIG)
    data = teacher_data(batches_per_epoch * CONFIG["batch_size"], CONFIG["inputs"])
    loader = torch.utils.data.DataLoader(data, batch_size=CONFIG["batch_size"], shuffle=False)
    extra = [SpikeAt(spike_at)] if spike_at is not None else []
    settings = dict(max_steps=steps, accelerator="cpu", devices=1, log_every_n_steps=1,
                    logger=CSVLogger(str(out)), enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[GuardCallback(spec or GuardSpec.default()), *extra,
                               *(callbacks or [])])
    settings.update(overrides)
    return L.Trainer(**settings), module, loader


def guard_of(trainer) -> object:
    return next(cb for cb in trainer.callbacks if isinstance(cb, GuardCallback)).guards(trainer)[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--out", type=Path, default=Path("runs/lightning_fit"))
    ap.add_argument("--spike-at", type=int, default=None)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    trainer, module, loader = make_fit(a.out, a.steps, spike_at=a.spike_at)
    trainer.fit(module, loader)
    trace = guard_of(trainer).trace()
    trace[[c for c in TRACE_COLUMNS if c in trace]].to_csv(a.out / "guard_trace.csv",
                                                           index=False)
    print(f"{len(trace)} steps, regimes: {trace['regime'].value_counts().to_dict()}; "
          f"trace in {a.out / 'guard_trace.csv'}")


if __name__ == "__main__":
    main()

"""The guard in a real Lightning Trainer (CPU, a tiny MLP)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("lightning", reason="lightning is not installed (pip install .[lightning])")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from patience import patience  # noqa: E402

from lbw_sim import GuardedOptimizer, GuardSpec, load_trace, replay  # noqa: E402
from lbw_sim.integrations.lightning import ClosureGuard  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DECISIONS = ["regime", "lr_scale", "skipped", "transition"]


def _example():
    spec = importlib.util.spec_from_file_location("lightning_example",
                                                  ROOT / "examples" / "lightning_fit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ex = _example()


def test_example_leaves_nominal_at_the_spike(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "examples/lightning_fit.py", "--steps", "64", "--out",
                    str(out), "--spike-at", "55"], cwd=ROOT, env=env, check=True, timeout=300,
                   capture_output=True)
    trace = pd.read_csv(out / "guard_trace.csv")
    assert {"step", "loss", "grad_norm", "regime", "lr_scale", "skipped"} <= set(trace.columns)
    assert len(trace) >= 64 and list(trace["step"][:64]) == list(range(64))
    by_step = trace.set_index("step")["regime"]
    assert (by_step.loc[:54] == "nominal").all() and by_step.loc[55] != "nominal"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """100 steps (4 epochs of 25), a spike at 75, a checkpoint at step 50 (saved on the batch's
    end: resumed from an `every_n_epochs` checkpoint, the run repeated the epoch's first batch
    and ran one batch behind)."""
    out = tmp_path_factory.mktemp("pl_full")
    ckpt = ModelCheckpoint(dirpath=str(out / "ckpt"), every_n_train_steps=50, save_top_k=-1,
                           filename="{step}")
    trainer, module, loader = ex.make_fit(out, 100, spike_at=75, callbacks=[ckpt],
                                          enable_checkpointing=True)
    trainer.fit(module, loader)
    return out, trainer, module


def test_wraps_the_module_optimizer_and_logs_through_its_logger(full_run):
    out, trainer, _ = full_run
    assert isinstance(trainer.optimizers[0], GuardedOptimizer)
    assert isinstance(trainer.optimizers[0].optimizer, torch.optim.AdamW)
    live = ex.guard_of(trainer).trace()
    assert len(live) == 100 and live.loc[75, "regime"] != GuardSpec.default().initial
    logged = pd.read_csv(next(out.rglob("metrics.csv")))
    rows = logged.dropna(subset=["guard/regime"])
    assert len(rows) == 100
    names = list(GuardSpec.default().regimes)
    assert [names[int(i)] for i in rows["guard/regime"]] == list(live["regime"].astype(str))
    # Lightning's metrics.csv (the module's train_loss + the guard's telemetry) replays
    replayed = replay(load_trace(next(out.rglob("metrics.csv"))), GuardSpec.default())
    assert list(replayed["regime"].astype(str)) == list(live["regime"].astype(str))


def test_resume_from_checkpoint_continues_exactly(full_run, tmp_path):
    out, full, full_module = full_run
    ckpt = out / "ckpt" / "step=50.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["optimizer_states"][0]["step_count"] == 50      # the guard is in the ckpt
    trainer, module, loader = ex.make_fit(tmp_path, 100, spike_at=75)
    trainer.fit(module, loader, ckpt_path=str(ckpt))
    a, b = ex.guard_of(full).trace(), ex.guard_of(trainer).trace()
    assert len(a) == len(b) == 100
    pd.testing.assert_frame_equal(a[DECISIONS], b[DECISIONS])
    cols = [c for c in ("loss", "grad_norm", "update_ratio") if c in a]   # measured if read
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    for p, q in zip(full_module.parameters(), module.parameters()):
        assert torch.equal(p, q)


def test_gradient_accumulation_hands_the_mean_micro_batch_loss(tmp_path):
    seen: list[float] = []

    class Recording(ex.Regressor):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            seen.append(float(loss.detach()))
            return loss

    trainer, _, loader = ex.make_fit(tmp_path, 6, accumulate_grad_batches=3)
    module = Recording(**ex.CONFIG)
    trainer.fit(module, loader)
    trace = ex.guard_of(trainer).trace()
    assert len(trace) == 6
    np.testing.assert_allclose(trace["loss"], np.array(seen).reshape(6, 3).mean(axis=1),
                               rtol=1e-6)


def test_stop_regime_sets_should_stop(tmp_path):
    class NanFrom(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step >= 5:
                for p in pl_module.parameters():
                    p.grad.fill_(math.nan)

    steps = 5 + patience(GuardSpec.default(), "stop") + 20    # room for the storm to stop it
    trainer, module, loader = ex.make_fit(tmp_path, steps, callbacks=[NanFrom()])
    reason = next(r.reason for r in GuardSpec.default().regimes.values() if r.stop)
    with pytest.warns(UserWarning, match=reason):
        trainer.fit(module, loader)
    guard = ex.guard_of(trainer)
    assert trainer.should_stop and guard.should_stop and trainer.global_step < steps
    assert guard.trace()["regime"].iloc[-1] == "stop"
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_manual_optimization_keeps_working(tmp_path):
    """The README's manual recipe, with the callback only watching and logging."""

    class Manual(ex.Regressor):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.automatic_optimization = False

        def configure_optimizers(self):
            return ClosureGuard(torch.optim.AdamW(self.parameters(), lr=self.lr),
                                GuardSpec.default())

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()            # Lightning's wrapper: it counts the steps
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step(loss=loss)
            return loss

    trainer, _, loader = ex.make_fit(tmp_path, 30, max_epochs=3)
    module = Manual(**ex.CONFIG)
    trainer.fit(module, loader)
    guard = ex.guard_of(trainer)
    assert trainer.global_step == 30 and len(guard.trace()) == 30
    assert np.isfinite(guard.trace()["loss"]).all()              # the loss reached the guard
    logged = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    assert logged["guard/regime"].notna().sum() == 30


def test_readme_section_runs_as_written(readme_block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                  # Lightning's default logger writes to ./
    torch.manual_seed(0)
    data = ex.teacher_data(64, ex.CONFIG["inputs"])
    ns = {"module": ex.Regressor(**ex.CONFIG),
          "train_dataloader": torch.utils.data.DataLoader(data, batch_size=16)}
    exec(readme_block("Lightning"), ns)
    trainer = ns["trainer"]
    assert trainer.global_step == 100 and isinstance(trainer.optimizers[0], GuardedOptimizer)
    assert len(trainer.optimizers[0].trace()) == 100


def test_logging_reads_each_row_once_and_never_replays(tmp_path, guard_log_reads):
    """A log call costs its new rows only: the guard's own signals, no replay of the run."""
    trainer, module, loader = ex.make_fit(tmp_path, 60, spike_at=55, log_every_n_steps=4)
    trainer.fit(module, loader)
    reads = list(guard_log_reads.traces)
    assert guard_log_reads.replays == 0
    assert [s for s, _ in reads] == list(np.cumsum([0] + [n for _, n in reads])[:-1])
    assert sum(n for _, n in reads) == 60 and max(n for _, n in reads) <= 4
    live = ex.guard_of(trainer).trace(signals=True).set_index("step")
    assert live.loc[55, "grad_z"] > 12                                 # the spike, as seen
    logged = pd.read_csv(next(tmp_path.rglob("metrics.csv"))).dropna(subset=["guard/regime"])
    assert len(logged) == len(reads)
    for _, r in logged.iterrows():
        at = live.loc[int(r["step"])]
        for name in GuardSpec.default().signals:
            value = r.get(f"guard/{name}", math.nan)
            assert value == pytest.approx(at[name]) or math.isnan(at[name]), name


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_precision_plugins_reach_the_guard_on_every_step(tmp_path, precision):
    """Lightning's AMP plugin on the CPU: bf16 autocast, and fp16 through its GradScaler
    (the plugin given explicitly: the Trainer turns `precision='16-mixed'` on a CPU into
    bf16), which calls the guard on the overflow steps it skips; NaN gradients on two steps
    cost one skipped step each and nothing else."""
    from lightning.pytorch.plugins.precision import MixedPrecision
    class NanAt(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step in (20, 30):
                for p in pl_module.parameters():
                    p.grad.fill_(math.nan)

    trainer, module, loader = ex.make_fit(tmp_path, 40, callbacks=[NanAt()],
                                          plugins=[MixedPrecision(precision, "cpu")])
    trainer.fit(module, loader)
    trace = ex.guard_of(trainer).trace()
    assert len(trace) == 40                              # overflow steps included
    withheld = trace["skipped"] | trace["safety_skip"]
    assert withheld[withheld].index.tolist() == [20, 30]
    assert (trace["lr_scale"] == 1).all() and np.isfinite(trace["loss"]).all()
    assert all(torch.isfinite(p).all() for p in module.parameters())
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    assert (scaler is not None) == (precision == "16-mixed")

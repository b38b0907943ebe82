"""The guard in a real `transformers.Trainer` (CPU, a tiny GPT-2 from a config)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install .[hf])")
pytest.importorskip("accelerate", reason="accelerate is not installed (pip install .[hf])")

import torch  # noqa: E402
from patience import patience  # noqa: E402
from transformers import PrinterCallback  # noqa: E402

from lbw_sim import GuardedOptimizer, GuardSpec, load_trace, replay  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _example():
    spec = importlib.util.spec_from_file_location("hf_example", ROOT / "examples" / "hf_trainer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ex = _example()
DECISIONS = ["regime", "lr_scale", "skipped", "transition"]


def _quiet(trainer):
    trainer.remove_callback(PrinterCallback)
    return trainer


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_example_leaves_nominal_at_the_spike(tmp_path):
    out = tmp_path / "run"
    subprocess.run([sys.executable, "examples/hf_trainer.py", "--steps", "64", "--out", str(out),
                    "--spike-at", "55"], cwd=ROOT, env=env(), check=True, timeout=300,
                   capture_output=True)
    trace = pd.read_csv(out / "guard_trace.csv")
    assert {"step", "loss", "grad_norm", "regime", "lr_scale", "skipped"} <= set(trace.columns)
    assert len(trace) >= 64 and list(trace["step"][:64]) == list(range(64))
    by_step = trace.set_index("step")["regime"]
    assert (by_step.loc[:54] == "nominal").all()
    assert by_step.loc[55] != "nominal"
    assert trace.loc[trace.step == 55, "grad_norm"].item() > 1e3 * trace["grad_norm"][:55].max()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """100 steps, a gradient spike at 75 and a checkpoint at 50 (the resume point)."""
    out = tmp_path_factory.mktemp("hf_full")
    trainer = _quiet(ex.make_trainer(out, 100, spike_at=75, save_strategy="steps",
                                     save_steps=50))
    trainer.train()
    return out, trainer


def test_resume_from_checkpoint_continues_exactly(full_run, tmp_path):
    out, full = full_run
    ckpt = out / "trainer" / "checkpoint-50"
    assert (ckpt / "optimizer.pt").is_file()
    saved = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert saved["step_count"] == 50 and "guard" in saved       # the guard rides in optimizer.pt

    resumed = _quiet(ex.make_trainer(out, 100, spike_at=75, save_strategy="steps",
                                     save_steps=50, output_dir=str(tmp_path / "resumed")))
    resumed.train(resume_from_checkpoint=str(ckpt))
    a, b = full.guard.trace(), resumed.guard.trace()
    assert len(a) == len(b) == 100
    assert (a["regime"].iloc[50:] != "nominal").any()           # decisions after the resume matter
    pd.testing.assert_frame_equal(a[DECISIONS], b[DECISIONS])
    # bit for bit: the Trainer restores data order and RNG on CPU
    cols = [c for c in ("loss", "grad_norm", "update_ratio") if c in a]   # measured if read
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def test_log_history_carries_the_guard_and_replays(full_run):
    out, trainer = full_run
    path = out / "trainer_state.json"
    trainer.state.save_to_json(str(path))
    history = json.loads(path.read_text())["log_history"]
    rows = [r for r in history if "loss" in r and "guard/regime" in r]
    assert len(rows) == 100
    assert {"guard/lr_scale", "guard/skipped", "guard/grad_z"} <= set(rows[-1])
    spike = [r for r in history if r.get("guard/transition")]     # the first transition
    assert spike and spike[0]["step"] == 76 and "grad_z" in spike[0]["guard/cause"]

    live = trainer.guard.trace()
    names = list(trainer.guard.spec.regimes)
    assert [names[int(r["guard/regime"])] for r in rows] == list(live["regime"].astype(str))
    replayed = replay(load_trace(path), GuardSpec.default())
    assert list(replayed["regime"].astype(str)) == list(live["regime"].astype(str))
    np.testing.assert_array_equal(replayed["lr_scale"], live["lr_scale"])


class RecordingTrainer(ex.GuardedTrainer):
    """Records every micro-batch loss as the model computed it (before any GA scaling)."""

    micro: list[float]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.micro = getattr(self, "micro", [])
        self.micro.append(float(loss.detach()))
        return loss


def test_gradient_accumulation_hands_the_mean_micro_batch_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "GuardedTrainer", RecordingTrainer)
    trainer = _quiet(ex.make_trainer(tmp_path, 6, gradient_accumulation_steps=3,
                                     per_device_train_batch_size=4))
    trainer.train()
    trace = trainer.guard.trace()
    assert len(trace) == 6                                      # one decision per optimizer step
    micro = np.array(trainer.micro).reshape(6, 3)
    # GPT-2 normalises by the tokens of the whole accumulated batch when it can (equal-length
    # sequences here): each step's loss is then the mean of its micro-batch means
    np.testing.assert_allclose(trace["loss"], micro.mean(axis=1) * _token_scale(trainer),
                               rtol=1e-6)
    assert isinstance(trainer.optimizer.optimizer, GuardedOptimizer)   # inside Accelerate's


def _token_scale(trainer) -> float:
    """Micro-batch losses normalised by the accumulated token count are a third of the mean."""
    scaled = trainer.model_accepts_loss_kwargs
    return 3.0 if scaled else 1.0


def test_stop_regime_ends_training_with_its_reason(tmp_path, caplog):
    class NanFrom(ex.SpikeAt):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step >= self.k:
                for p in model.parameters():
                    p.grad.fill_(math.nan)

    steps = 5 + patience(GuardSpec.default(), "stop") + 20    # room for the storm to stop it
    trainer = _quiet(ex.make_trainer(tmp_path, steps))
    trainer.add_callback(NanFrom(5))
    with caplog.at_level("WARNING", logger="lbw_sim.integrations.hf"):
        out = trainer.train()
    reason = next(r.reason for r in GuardSpec.default().regimes.values() if r.stop)
    assert trainer.guard.should_stop and out.global_step < steps
    assert any(reason in r.getMessage() for r in caplog.records)
    assert {"step": out.global_step, "guard/stop_reason": reason} in trainer.state.log_history
    trace = trainer.guard.trace()
    regimes = trainer.guard.spec.regimes
    assert regimes[trace["regime"].iloc[-1]].stop                # it ends in the stop regime,
    assert any(regimes[r].rollback for r in set(trace["regime"].astype(str)))  # after a rollback
    for p in trainer.model.parameters():                        # no NaN ever reached a weight
        assert torch.isfinite(p).all()


def test_readme_section_runs_as_written(readme_block, tmp_path):
    from transformers import TrainingArguments

    code = readme_block("Hugging Face Trainer")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4,
                             report_to="none", use_cpu=True, disable_tqdm=True,
                             save_strategy="no", logging_steps=1)
    ns = {"model": ex.tiny_gpt2(), "args": args, "train_dataset": ex.MarkovTokens(12)}
    exec(code, ns)
    assert ns["trainer"].state.global_step == 3 and len(ns["trainer"].guard.trace()) == 3
    assert "guard/regime" in ns["trainer"].state.log_history[0]


def test_the_trainer_clip_in_front_would_hide_the_spike(tmp_path, monkeypatch):
    """Why the mixin moves `max_grad_norm` behind the guard: with the Trainer's default clip
    (1.0) in front, this model's norms (about 1.0-1.7) sit at the clip and a 1e4 spike too."""
    monkeypatch.setattr(ex.GuardedTrainer, "_guard_clips", lambda self: False)
    trainer = _quiet(ex.make_trainer(tmp_path, 60, spike_at=55))
    trainer.train()
    trace = trainer.guard.trace()
    assert trace["grad_norm"].max() < 1.0 + 1e-4
    assert (trace["regime"] == "nominal").all()


def test_logging_reads_each_row_once_and_never_replays(tmp_path, guard_log_reads):
    """A log call costs its new rows only: the guard's own signals, no replay of the run."""
    trainer = _quiet(ex.make_trainer(tmp_path, 60, spike_at=55, logging_steps=4))
    trainer.train()
    reads = list(guard_log_reads.traces)
    assert guard_log_reads.replays == 0
    assert [s for s, _ in reads] == list(np.cumsum([0] + [n for _, n in reads])[:-1])
    assert sum(n for _, n in reads) == 60 and max(n for _, n in reads) == 4
    live = trainer.guard.trace(signals=True).set_index("step")
    rows = [r for r in trainer.state.log_history if "guard/regime" in r]
    assert [r["step"] for r in rows] == list(range(4, 61, 4))
    for r in rows:
        at = live.loc[r["step"] - 1]
        for name in trainer.guard.spec.signals:
            assert r.get(f"guard/{name}", math.nan) == at[name] or math.isnan(at[name]), name
        assert r["guard/skipped"] == live.loc[r["step"] - 4:r["step"] - 1, "skipped"].sum()
    spike_z = trainer.guard.spec.thresholds["spike_z"]
    assert "guard/grad_z" in rows[-1] and live.loc[55, "grad_z"] > spike_z   # the spike, seen
    fired = [r for r in trainer.state.log_history if r.get("guard/transition")]
    assert fired and fired[0]["step"] >= 55          # the spike's transition, logged once


def test_a_withheld_step_does_not_advance_the_schedule_bf16(tmp_path):
    """bf16 autocast on the CPU; NaN gradients on two steps: the guard skips them, the
    Trainer's scheduler (cosine with warm-up) holds on exactly those steps."""
    class NanAt(ex.SpikeAt):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step in self.k:
                for p in model.parameters():
                    p.grad.fill_(math.nan)

    trainer = _quiet(ex.make_trainer(tmp_path, 30, bf16=True))
    trainer.add_callback(NanAt((12, 20)))
    lrs = []
    trainer.add_callback(type("LR", (PrinterCallback,), {
        "on_log": lambda self, *a, **k: None,
        "on_step_end": lambda self, args, state, control, **k:
            lrs.append(trainer.lr_scheduler.get_last_lr()[0])})())
    trainer.train()
    trace = trainer.guard.trace()
    withheld = (trace["skipped"] | trace["safety_skip"]).to_numpy()
    assert withheld.nonzero()[0].tolist() == [12, 20]
    assert trainer.lr_scheduler.last_epoch == 30 - 2
    held = [i for i in range(1, 30) if lrs[i] == lrs[i - 1]]
    assert held == [12, 20]                 # the LR moves on every other step (warm-up, cosine)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())

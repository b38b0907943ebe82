"""The guard in a Hugging Face Trainer: a tiny GPT-2 built from a config, synthetic data, CPU.

    python examples/hf_trainer.py --steps 120 --out runs/hf --spike-at 80

Writes `OUT/guard_trace.csv` (one row per optimizer step: the guard's telemetry and
decisions; `step` is the 0-based optimizer step) and the Trainer's own `OUT/trainer/`
(`trainer_state.json` with the guard's columns in `log_history`). `--spike-at K` multiplies
the gradients of optimizer step K by 1e4 (every micro-batch's, in backward); the shipped
default guard needs 50 steps of history before its gradient z-score counts, so pick K ≥ 50.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")      # nothing is downloaded

import argparse
import sys
from pathlib import Path

try:
    import lbw_sim  # noqa: F401
except ImportError:                                  # run from a clone, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PrinterCallback,
    TrainerCallback,
    TrainingArguments,
)

from lbw_sim import GuardSpec
from lbw_sim.integrations.hf import GuardedTrainer

TRACE_COLUMNS = ["step", "loss", "grad_norm", "lr", "update_ratio", "regime", "lr_scale",
                 "skipped", "transition", "cause"]


class MarkovTokens(torch.utils.data.Dataset):
    """Sequences from a fixed random order-1 Markov chain over `vocab` tokens (learnable)."""

    def __init__(self, n: int, vocab: int = 32, length: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        probs = torch.softmax(3.0 * torch.randn(vocab, vocab, generator=g), dim=1)
        seqs = torch.empty(n, length, dtype=torch.long)
        seqs[:, 0] = torch.randint(vocab, (n,), generator=g)
        for t in range(1, length):
            seqs[:, t] = torch.multinomial(probs[seqs[:, t - 1]], 1, generator=g).squeeze(1)
        self.seqs = seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.seqs[i], "labels": self.seqs[i]}


class SpikeAt(TrainerCallback):
    """Multiply the gradients of optimizer step `k` by `factor` as backward computes them (so the
    Trainer's logged norm and the guard see the same fault)."""

    def __init__(self, k: int, factor: float = 1e4):
        self.k, self.factor, self.hooks = k, factor, []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.k:
            self.hooks = [p.register_hook(lambda g: g * self.factor)
                          for p in model.parameters() if p.requires_grad]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        for h in self.hooks:
            h.remove()
        self.hooks = []


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=32, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                        eos_token_id=0)
    return GPT2LMHeadModel(config)


def make_trainer(out: Path, steps: int, *, spike_at: int | None = None,
                 spec: GuardSpec | None = None, **overrides) -> GuardedTrainer:
    """The Trainer the example runs; tests build theirs here too (resume, accumulation)."""
    settings = dict(output_dir=str(out / "trainer"), max_steps=steps,
                    per_device_train_batch_size=8, learning_rate=1e-3, warmup_steps=10,
                    lr_scheduler_type="cosine", logging_steps=1, save_strategy="no",
                    report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                    dataloader_num_workers=0)
    settings.update(overrides)
    args = TrainingArguments(**settings)
    n = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
    return GuardedTrainer(model=tiny_gpt2(), args=args, train_dataset=MarkovTokens(n),
                          guard_spec=spec or GuardSpec.default(),
                          callbacks=[SpikeAt(spike_at)] if spike_at is not None else None)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--out", type=Path, default=Path("runs/hf_trainer"))
    ap.add_argument("--spike-at", type=int, default=None)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(a.out, a.steps, spike_at=a.spike_at)
    trainer.remove_callback(PrinterCallback)          # a log line per step is too chatty here
    trainer.train()
    trace = trainer.guard.trace()
    trace[[c for c in TRACE_COLUMNS if c in trace]].to_csv(a.out / "guard_trace.csv",
                                                           index=False)
    trainer.state.save_to_json(str(a.out / "trainer" / "trainer_state.json"))
    print(f"{len(trace)} steps, regimes: {trace['regime'].value_counts().to_dict()}; "
          f"trace in {a.out / 'guard_trace.csv'}")


if __name__ == "__main__":
    main()

"""Make the four example traces shipped in examples/ (run from the repository root).

    PYTHONPATH=. python examples/make_examples.py [NAME ...]

Each example is a small GPT trained by the simulator on a synthetic Markov corpus, with
faults injected by a FaultSchedule, written in the canonical trace schema
(`<name>.csv`) next to its ground truth (`<name>_labels.csv`: start,end,kind — the steps
at which each injected fault was active). The studio and the docs replay these without
training anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbw_sim.sim.runner import Run  # noqa: E402
from lbw_sim.sim.scenarios import Scenario  # noqa: E402

HERE = Path(__file__).resolve().parent
CANONICAL = ["step", "loss", "grad_norm", "lr", "val_loss", "wall_time"]
GUARD = ["update_ratio", "regime", "lr_scale", "skipped", "momentum_scale", "rollback", "stop",
         "transition", "cause"]
BASE = {
    "model": {"kind": "gpt", "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 64},
    "data": {"kind": "synthetic", "vocab_size": 65, "order": 1, "seed": 0,
             "n_train": 200_000, "n_val": 20_000},
    "optimizer": {"lr": 3e-3, "betas": [0.9, 0.95], "weight_decay": 0.1},
    "schedule": {"warmup": 50, "decay": "constant"},
    "steps": 600, "batch_size": 16, "eval_every": 50, "eval_batches": 4,
}
#: The guarded examples were recorded under the v1 ratchet (the default then): regenerated
#: under it, they replay to the regimes they hold.
GUARD_SPEC = "lbw-v1"
EXAMPLES = {
    # name: (arm, faults, what the trace shows)
    "quiet": ("adamw", [], "a healthy run: the loss falls towards the entropy floor"),
    "loss_spike": ("adamw", [
        {"kind": "corrupt_batch", "mode": "random_tokens", "at": 250, "duration": 3},
        {"kind": "lr_spike", "factor": 30.0, "at": 420, "duration": 8},
    ], "two loss spikes: corrupted batches, then a short LR spike"),
    "nan_storm": ("guard", [
        {"kind": "nonfinite", "target": "grads", "value": "nan", "at": 300, "duration": 12},
    ], "NaN gradients for 12 batches under the v1 guard: skip, rollback, recover"),
    "slow_divergence": ("adamw", [  # 12% more LR every 10 steps from 200: ~90x by the end
        {"kind": "lr_spike", "factor": 1.12, "at": at, "duration": 600 - at}
        for at in range(200, 600, 10)
    ], "the LR creeps up 12% every 10 steps from step 200: loss and grad norm drift up"),
    "lr_too_high": ("guard", [
        {"kind": "lr_spike", "factor": 10.0, "at": 0, "duration": 600},
    ], "AdamW at 10x its LR under the v1 guard: the LR ratchet halves it while the "
       "update/weight ratio stays above 3%"),
}


def fault_labels(trace: pd.DataFrame) -> pd.DataFrame:
    """Contiguous runs of the same fault kind(s) -> (start, end, kind), inclusive steps."""
    rows, active = [], None
    labels = trace["fault"].fillna("").map(lambda s: "+".join(dict.fromkeys(filter(None,
                                                                                s.split(",")))))
    for step, kind in zip(trace["step"], labels):
        if active and (kind != active[2] or step != active[1] + 1):
            rows.append(active)
            active = None
        if kind:
            active = (active[0], step, kind) if active else (step, step, kind)
    if active:
        rows.append(active)
    return pd.DataFrame(rows, columns=["start", "end", "kind"])


def make(name: str, arm: str, faults: list, note: str) -> None:
    sc = Scenario.from_dict({"name": name, "description": note, "faults": faults,
                             "arms": [arm], "guard": GUARD_SPEC, **BASE})
    rows = list(Run(sc, arm, sc.lrs[0], seed=0, device="cpu"))
    trace = pd.DataFrame(rows)
    cols = CANONICAL + (GUARD if arm == "guard" else [])
    trace[cols].to_csv(HERE / f"{name}.csv", index=False, float_format="%.6g")
    fault_labels(trace).to_csv(HERE / f"{name}_labels.csv", index=False)
    print(f"{name}: {len(trace)} steps, {arm}, final loss {trace['loss'].iloc[-1]:.3f} — {note}")


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name, (arm, faults, note) in EXAMPLES.items():
        if not names or name in names:
            make(name, arm, faults, note)


if __name__ == "__main__":
    main(sys.argv[1:])

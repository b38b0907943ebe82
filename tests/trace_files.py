"""Writers of small trace files in each supported format, shared by the reader tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


def trainer_state(path: Path, steps: int = 100, every: int = 10, eval_every: int = 50) -> Path:
    history = []
    for s in range(every, steps + 1, every):
        history.append({"epoch": s / steps, "grad_norm": float("nan") if s == 30 else 1.0 + s,
                        "learning_rate": 1e-4 * s, "loss": 3.0 - s / 100, "step": s})
        if s % eval_every == 0:
            history.append({"epoch": s / steps, "eval_loss": 9.0 + s, "eval_runtime": 1.2,
                            "step": s})
    history.append({"epoch": 1.0, "step": steps, "train_loss": 123.0, "train_runtime": 5.0,
                    "total_flos": 1e9})
    doc = {"global_step": steps, "log_history": history, "best_metric": None}
    path.write_text(json.dumps(doc, indent=2))
    return path


HF_CONSOLE = """\
  0%|          | 0/40 [00:00<?, ?it/s]
{'loss': 2.5, 'grad_norm': 11.0, 'learning_rate': 2e-05, 'epoch': 0.1}
 10%|#  | 4/40 [00:01<00:09]{'loss': 2.4, 'grad_norm': nan, 'learning_rate': 4e-05, 'epoch': 0.2}
{'loss': 2.3, 'grad_norm': inf, 'learning_rate': 6e-05, 'epoch': 0.3, 'note': 'nan inf'}
{'eval_loss': 2.9, 'eval_runtime': 1.5, 'epoch': 0.3}
{'loss': '2.2', 'grad_norm': 1.5, 'learning_rate': 8e-05, 'epoch': 0.4}
{'train_runtime': 12.3, 'train_samples_per_second': 3.2, 'train_loss': 2.35, 'epoch': 0.4}
Traceback (most recent call last):
  File "train.py", line 1, in <module>
RuntimeError: CUDA out of memory {'loss': 1}
{'loss': 5.0, 'grad_norm': 1.0, 'learning_rate': 1e-05, 'epoch': 0.1}
{'loss': 4.0, 'grad_norm': 2.0, 'learning_rate': 2e-05, 'epoch': 0.2}
"""

LIGHTNING = """\
epoch,step,lr-AdamW,train_loss_step,train_loss_epoch,val_loss
0,0,0.001,,,
0,9,,5.0,,
0,19,,4.5,,
0,19,,,,4.8
0,19,,,4.75,
1,20,0.0005,,,
1,29,,4.0,,
1,39,,nan,,
1,39,,,,4.1
"""

WANDB_CSV = (
    '"Step","runA - train/loss","runA - train/loss__MIN","runA - train/loss__MAX",'
    '"runB - train/loss","runB - train/loss__MIN","runB - train/loss__MAX"\n'
    '"0","1.0","1.0","1.0","2.0","2.0","2.0"\n'
    '"2","0.9","0.9","0.9","1.9","1.9","1.9"\n'
    '"3","0.8","0.8","0.8","","",""\n')

NANOGPT = """\
step 0: train loss 10.9886, val loss 10.9897
iter 0: loss 10.9766, time 22640.22ms, mfu -100.00%
iter 1: loss 10.9733, time 263.56ms, mfu -100.00%
iter 2: loss 10.9575, time 306.32ms, mfu -100.00%
saving checkpoint to out
iter 3: loss 10.5, time 306.15ms, mfu -100.00%
iter 4: loss 10.4, time 306.15ms, mfu -100.00%
iter 5: loss 10.3, time 306.15ms, mfu -100.00%
Resuming training from out
iter 3: loss 9.5, time 306.15ms, mfu -100.00%
step 4: train loss 9.3, val loss 9.45
iter 4: loss 9.4, time 306.15ms, mfu -100.00%
iter 5: loss nan, time 306.15ms, mfu -100.00%
iter 6: loss 9.2, time 306.15ms, mfu -100.00%
Traceback (most recent call last):
  File "/home/x/nanoGPT/train.py", line 302, in <module>
KeyboardInterrupt
"""

BUILD_NANOGPT = "0 val 10.95\n0 hella 0.2500\n0 train 10.955\n1 train 10.5\n2 train 10.1\n"


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def llamafactory_rows(n: int = 20) -> list[dict]:
    rows = [{"current_steps": 5 * i, "total_steps": 5 * n, "loss": 2.0 - i / n,
             "eval_loss": None, "learning_rate": 5e-5, "epoch": 0.0,
             "elapsed_time": "0:03:29"} for i in range(1, n)]
    rows.append({"current_steps": 5 * n, "total_steps": 5 * n, "loss": None,
                 "eval_loss": None, "learning_rate": None, "epoch": 1.0})
    return rows


def wandb_history_rows() -> list[dict]:
    rows = [{"_step": i, "_runtime": 1.5 * i, "train/loss": 1.0 / (i + 1),
             "train/grad_norm": math.nan if i == 3 else 0.5,
             "media": {"_type": "image-file", "path": "x.png"}} for i in range(10)]
    rows[5]["train/loss"] = "0.25"
    rows.append({"_step": 10, "eval/loss": 0.7})
    return rows

"""A guarded run's telemetry and decisions in TensorBoard (any `SummaryWriter`).

    from torch.utils.tensorboard import SummaryWriter
    from lbw_sim.integrations.tensorboard import write_trace
    writer = SummaryWriter("runs/guarded")
    done = 0
    for step, batch in enumerate(loader):
        ...; opt.step(loss=loss)
        if step % 100 == 0:
            done = write_trace(writer, opt.trace(signals=True), opt.spec, start=done)

Tags: the telemetry under `train/…` names our TensorBoard reader maps back to canonical
columns, written in double precision so `load_trace(logdir)` + `replay` reproduce the live
decisions exactly; the guard's outputs and signals under `guard/…` (regime as its index in
the spec); a text entry `guard/transition` per transition, with its cause.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lbw_sim.guard.spec import GuardSpec
from lbw_sim.integrations import metrics

#: canonical column -> TensorBoard tag (each a synonym in `lbw_sim.traces.columns`)
TELEMETRY_TAGS = {"loss": "train/loss", "grad_norm": "train/grad_norm", "lr": "train/lr",
                  "update_ratio": "train/update_ratio", "update_norm": "train/update_norm",
                  "param_norm": "train/param_norm", "val_loss": "val/loss"}


def write_trace(writer: Any, trace: pd.DataFrame, spec: GuardSpec | None = None, *,
                start: int = 0) -> int:
    """Write rows `start:` of a guarded trace (`GuardedOptimizer.trace(signals=True)` or
    `replay`'s output) to `writer`; returns the number of rows written so far (the next
    `start`).

    Signals are the trace's own columns (the values the live decisions saw); a trace
    without them (`trace()`, a file) gets them from `replay` over the whole trace (they
    are causal, so earlier rows do not change). The writer is flushed, not closed."""
    spec = spec or GuardSpec.default()
    frame = metrics.annotated(trace, spec)
    for row in frame.iloc[start:].itertuples(index=False):
        r = row._asdict()
        step = int(r["step"])
        for col, tag in TELEMETRY_TAGS.items():
            if col in r and r[col] is not None:
                writer.add_scalar(tag, float(r[col]), step, new_style=True,
                                  double_precision=True)
        for tag, value in metrics.row_metrics(pd.Series(r), spec, telemetry=()).items():
            writer.add_scalar(tag, value, step)
        if r.get("transition"):
            writer.add_text("guard/transition",
                            f"**{r['transition']}** → `{r['regime']}`: {r['cause']}", step)
    writer.flush()
    return len(frame)

"""The guard in a Lightning `Trainer`: one callback.

    from lbw_sim.integrations.lightning import GuardCallback
    trainer = L.Trainer(callbacks=[GuardCallback(spec)], …)

How it sits in Lightning's loop (lightning 2.6):
- **optimizer** (automatic optimization): at `on_fit_start` — after `configure_optimizers`,
  before a checkpoint's optimizer state is restored — each of the strategy's optimizers is
  wrapped in a `GuardedOptimizer`; schedulers keep working (they share `param_groups`).
  Under manual optimization the module returns a `ClosureGuard` itself and calls
  `self.optimizers().step(loss=loss)` (Lightning's wrapper counts the step, and its no-op
  closure does not replace the loss); the callback then only logs and watches.
- **loss**: `on_before_backward` sees each micro-batch's loss divided by
  `accumulate_grad_batches` (and multiplied by the AMP scale); undone, it goes to
  `observe_loss`, so the guard decides on the mean micro-batch loss. Lightning calls
  `optimizer.step(closure)`; the guard runs the closure (forward, backward, clipping) first
  and then decides on the observed losses and the gradient.
- **stop**: a stop regime sets `trainer.should_stop`, with the reason in a warning.
- **metrics**: regime, lr_scale, skipped, update_ratio and signals through
  `pl_module.log_dict` on the steps Lightning writes its logs.
- **checkpoints**: the guard's state is in each optimizer's `state_dict`, hence in the
  checkpoint's `optimizer_states`, and comes back with `ckpt_path=`.
- **precision**: `bf16-mixed` needs nothing; under `16-mixed` the plugin's GradScaler calls
  the guard on every step, the overflow steps it skips included (the guard unscales, as
  torch's fused optimizers do, so Lightning refuses `gradient_clip_val` there as it does
  for them).
Gradient clipping (`gradient_clip_val`) runs inside the closure, before the guard looks:
its gradient-norm signals then see clipped norms. A rollback's `skip_batches` is not
applied (a callback cannot drop batches); the rollback itself is.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lbw_sim.guard.optim import GuardedOptimizer
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.integrations import metrics

#: Lightning logs none of the guard's telemetry itself (the module logs its own loss)
LOGGED_TELEMETRY = ("grad_norm", "update_ratio", "update_norm", "param_norm")


class ClosureGuard(GuardedOptimizer):
    """A `GuardedOptimizer` that runs Lightning's closure before it observes: the closure's
    return value is one micro-batch's scaled loss, the losses come from `observe_loss`."""

    def _run_closure(self, closure: Any, loss: Any) -> tuple[Any, Any]:
        out = None
        if closure is not None:
            with torch.enable_grad():
                out = closure()
        return loss, out


class GuardCallback(Callback):
    """Guard the module's optimizer(s); see the module docstring."""

    def __init__(self, spec: GuardSpec | None = None, *, decide_on: str = "auto"):
        self.spec = spec or GuardSpec.default()
        self.decide_on = decide_on
        self._logged = 0          # guard steps already logged
        self._stopped = False

    def guards(self, trainer: Any) -> list[GuardedOptimizer]:
        return [g for g in map(metrics.find_guard, trainer.optimizers) if g is not None]

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if pl_module.automatic_optimization:
            trainer.strategy.optimizers = [
                opt if metrics.find_guard(opt) is not None
                else ClosureGuard(opt, self.spec, decide_on=self.decide_on)
                for opt in trainer.strategy.optimizers]
        if not self.guards(trainer):
            rank_zero_warn("GuardCallback: no GuardedOptimizer found (manual optimization "
                           "needs configure_optimizers to return one)")
        if trainer.gradient_clip_val:
            rank_zero_warn("GuardCallback: gradient_clip_val clips before the guard sees the "
                           "gradient; its gradient-norm signals saturate there")

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        guards = self.guards(trainer)
        if not guards or not pl_module.automatic_optimization:
            return                  # manual optimization hands the loss to step(loss=…)
        loss = loss.detach() * trainer.accumulate_grad_batches
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            loss = loss / scaler.get_scale()
        guards[0].observe_loss(loss)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        guards = self.guards(trainer)
        if not guards:
            return
        guard = guards[0]
        if guard.should_stop and not self._stopped:
            self._stopped = trainer.should_stop = True
            rank_zero_warn(f"guard stopped training at step {guard.step_count}: "
                           f"{guard.stop_reason}")
        writes = getattr(trainer._logger_connector, "should_update_logs", True)
        if guard.step_count > self._logged and (writes or trainer.should_stop):
            new = guard.trace(signals=True, start=self._logged)   # only the new rows
            if len(new):
                pl_module.log_dict(metrics.row_metrics(new.iloc[-1], guard.spec,
                                                       skipped=int(new["skipped"].sum()),
                                                       telemetry=LOGGED_TELEMETRY),
                                   on_step=True, on_epoch=False)
            self._logged += len(new)

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        states = checkpoint.get("optimizer_states") or []
        self._logged = int(states[0].get("step_count", 0)) if states else 0

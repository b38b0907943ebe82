"""The guard in a Hugging Face `transformers.Trainer`.

    from lbw_sim.integrations.hf import GuardedTrainer
    trainer = GuardedTrainer(model=model, args=args, train_dataset=ds, guard_spec=spec)
    trainer.train()                  # or class MyTrainer(GuardMixin, SFTTrainer): …

How it sits in the Trainer's loop (transformers 5):
- **optimizer**: `create_optimizer` wraps whatever the Trainer built (or was given through
  `optimizers=`) in a `GuardedOptimizer`; Accelerate then wraps that in its
  `AcceleratedOptimizer`, whose `step()` only reaches the guard on the step that syncs
  gradients — one guard decision per optimizer step, whatever the accumulation.
- **loss**: `training_step` returns each micro-batch's share of the step's loss (divided by
  the accumulation count, or normalised by the tokens of the whole accumulated batch);
  multiplied back by the count it is handed to `observe_loss`, whose mean over the window is
  then exactly the step's loss (the mean micro-batch loss) that the Trainer logs.
- **gradient clipping**: the Trainer clips before `optimizer.step()`, which would hide a
  gradient spike from the guard (a clipped norm sits at `max_grad_norm`). The mixin measures
  the norm there instead (the Trainer still logs the pre-clip norm) and clips in a pre-step
  hook of the inner optimizer: same clip, applied after the guard has looked. That hook
  runs where the inner `step()` runs (the host engine), so with clipping on the guard decides
  on the host; under DeepSpeed/FSDP the Trainer keeps its own clipping.
- **stop**: a stop regime sets `control.should_training_stop`; the reason goes to the logger
  and into `log_history`.
- **logs**: every Trainer log row gets the guard's regime, lr_scale, skipped steps since the
  last row, update_ratio and signals (`guard/…`), so they reach every `report_to` and
  `trainer_state.json`; transitions are logged with their cause. With `logging_steps=1`,
  `load_trace("trainer_state.json")` replays to the live regimes.
- **checkpoints**: the guard's state is part of the optimizer's `state_dict`, so it is in each
  checkpoint's `optimizer.pt` and comes back with `resume_from_checkpoint`.
- **rollback**: the batches a rollback asks to skip are drawn and dropped in
  `get_batch_samples`.
- **schedule**: a step whose update the guard withheld (a skip, a non-finite or overflow
  gradient, a rollback, a stop) does not advance the LR scheduler, as the Trainer already
  does for an AMP overflow: the callback sets the flag it reads
  (`accelerator.optimizer_step_was_skipped`) from `GuardedOptimizer.step_was_skipped`.
- **mixed precision**: `fp16=True` runs through GradScaler, which calls the guard on every
  step (overflow steps included); `bf16=True` needs nothing more.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from lbw_sim.guard.optim import GuardedOptimizer
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.integrations import metrics

logger = logging.getLogger("lbw_sim.integrations.hf")


class GuardCallback(TrainerCallback):
    """Holds the LR schedule on a withheld update and ends training when the guard entered a
    stop regime (added by `GuardMixin`)."""

    def __init__(self, trainer: GuardMixin):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        guard, accelerated = self.trainer.guard, getattr(self.trainer, "optimizer", None)
        if guard is not None and hasattr(accelerated, "_is_overflow"):
            # the flag the Trainer reads before `lr_scheduler.step()` (Accelerate sets it for
            # AMP overflows only): a step the guard withheld does not advance the schedule
            accelerated._is_overflow = guard.step_was_skipped
        return control

    def on_step_end(self, args, state, control, **kwargs):
        guard = self.trainer.guard
        if guard is not None and guard.should_stop and not control.should_training_stop:
            control.should_training_stop = True
            control.should_log = True          # the stop step's row reaches the logs
            self.trainer._guard_stop_pending = guard.stop_reason
        return control


class GuardMixin:
    """Put before `Trainer` (or a subclass of it) in the bases; see the module docstring.

    Extra keyword arguments: `guard_spec` (default: `GuardSpec.default()`) and
    `guard_decide_on` ('auto', 'host' or 'device', as `GuardedOptimizer`).
    """

    def __init__(self, *args: Any, guard_spec: GuardSpec | None = None,
                 guard_decide_on: str = "auto", **kwargs: Any):
        self.guard_spec = guard_spec or GuardSpec.default()
        self.guard_decide_on = guard_decide_on
        self._guard_logged = 0          # guard steps already in a log row
        self._guard_stop_pending = ""
        super().__init__(*args, **kwargs)
        self.add_callback(GuardCallback(self))

    @property
    def guard(self) -> GuardedOptimizer | None:
        return metrics.find_guard(getattr(self, "optimizer", None))

    # --- optimizer and clipping -----------------------------------------------------------
    def _guard_clips(self) -> bool:
        """Whether the clip moves behind the guard (see the module docstring)."""
        return (self.args.max_grad_norm is not None and self.args.max_grad_norm > 0
                and not self.is_deepspeed_enabled and not self.is_fsdp_enabled
                and self.guard_decide_on != "device")

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        opt = super().create_optimizer(model)
        if metrics.find_guard(opt) is None:
            inner = opt
            decide_on = self.guard_decide_on
            if self._guard_clips():
                inner.register_step_pre_hook(_clip_hook(float(self.args.max_grad_norm)))
                decide_on = "host"
            elif self.args.max_grad_norm and self.args.max_grad_norm > 0:
                logger.warning("guard: the Trainer clips gradients to %s before the guard sees "
                               "them; gradient-norm signals saturate there",
                               self.args.max_grad_norm)
            self.optimizer = GuardedOptimizer(inner, self.guard_spec, decide_on=decide_on)
        return self.optimizer

    def _clip_grad_norm(self, model: Any) -> Any:
        if not self._guard_clips():
            return super()._clip_grad_norm(model)
        return self._get_grad_norm(model)     # measures only: the clip runs behind the guard

    # --- losses and skipped batches -------------------------------------------------------
    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        loss = super().training_step(model, inputs, num_items_in_batch)
        guard = self.guard
        if guard is not None:
            guard.observe_loss(loss.detach() * self.current_gradient_accumulation_steps)
        return loss

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        guard = self.guard
        drop = guard.take_skip_batches() * num_batches if guard is not None else 0
        for _ in range(drop):               # a rollback asked to skip these (PaLM recipe)
            if next(epoch_iterator, None) is None:
                break
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    # --- logs -----------------------------------------------------------------------------
    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        guard = self.guard
        if guard is not None and "loss" in logs and guard.step_count > self._guard_logged:
            new = guard.trace(signals=True, start=self._guard_logged)   # only the new rows
            if len(new):
                logs.update(metrics.row_metrics(new.iloc[-1], guard.spec,
                                                skipped=int(new["skipped"].sum())))
            for step, name, regime, cause in metrics.transitions(new):
                logger.info(metrics.transition_text(step, name, regime, cause))
                self.state.log_history.append({"step": step + 1, "guard/transition": name,
                                               "guard/to": regime, "guard/cause": cause})
            self._guard_logged += len(new)
        super().log(logs, *args, **kwargs)
        if self._guard_stop_pending:
            reason, self._guard_stop_pending = self._guard_stop_pending, ""
            logger.warning("guard stopped training at step %d: %s", self.state.global_step, reason)
            self.state.log_history.append({"step": self.state.global_step,
                                           "guard/stop_reason": reason})

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        guard = self.guard
        if guard is not None:
            self._guard_logged = guard.step_count


def _clip_hook(max_norm: float):
    """A pre-step hook that clips the gradients of the optimizer's parameters to `max_norm`."""
    def clip(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                       max_norm)
    return clip


class GuardedTrainer(GuardMixin, Trainer):
    """`transformers.Trainer` with the guard around its optimizer."""

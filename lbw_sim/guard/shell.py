"""The torch.optim surface of an optimizer that wraps another (the guard and the baselines).

A wrapper *is* a `torch.optim.Optimizer` (so LR schedulers and trainers accept it) that
shares the wrapped optimizer's `param_groups` and `state` rather than copying them.
Subclasses implement `step`; its step hooks (`register_step_pre_hook`, global hooks, the
profiler's `Optimizer.step#…` range) fire as on any torch optimizer. The runner also reads
`take_skip_batches`, `should_stop`, `stop_reason`, `set_spec` and `last_row`, which default
to "nothing to do" here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch.distributed.tensor import DTensor

HOOKS = ("step_pre", "step_post", "state_dict_pre", "state_dict_post", "load_state_dict_pre",
         "load_state_dict_post")


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """A norm as a plain 0-d tensor: a DTensor norm (partial or replicated over the mesh)
    is reduced to its global value."""
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


class WrappedOptimizer(torch.optim.Optimizer):
    """Shares `optimizer`'s param groups and state; `step_count` counts calls to `step`."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        # Deliberately not Optimizer.__init__: the wrapped optimizer owns params and state.
        self.defaults = optimizer.defaults
        for hooks in HOOKS:
            setattr(self, f"_optimizer_{hooks}_hooks", OrderedDict())
        self.optimizer = optimizer
        self.step_count = 0
        self._patch_step_function()        # step hooks and the profiler's step range

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property  # type: ignore[override]
    def state(self) -> Any:
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(group)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self._params() if p.grad is not None]

    def grad_norm(self) -> torch.Tensor:
        """Global L2 norm of the gradients (float32, on their device; foreach, no sync).

        Sharded gradients (FSDP2's DTensors) give the norm over every shard, as
        `clip_grad_norm_` does; replicated ones (DDP) are already the global gradient."""
        grads = self._grads()
        if not grads:
            dev = self._params()[0].device if self._params() else None
            return torch.full((), float("nan"), device=dev)
        if any(isinstance(g, DTensor) for g in grads):
            return full_norm(torch.nn.utils.get_total_norm(grads, 2.0, foreach=True)).float()
        norms = torch._foreach_norm(grads, 2.0)       # one device, one dtype: the common case
        if norms[0].dtype != torch.float32 or len({n.dtype for n in norms}) > 1:
            norms = [n.float() for n in norms]
        return torch.linalg.vector_norm(torch.stack(norms))

    @staticmethod
    def _closure_loss(closure: Any, loss: Any) -> Any:
        if closure is not None:
            with torch.enable_grad():
                return closure()
        return loss

    def take_skip_batches(self) -> int:
        """Batches the runner should skip now (after a rollback); none here."""
        return 0

    def set_spec(self, spec: Any) -> None:
        """Only the guard has a spec; live edits do not apply to other optimizers."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer.__class__.__name__})"

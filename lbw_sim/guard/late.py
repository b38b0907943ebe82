"""Device values the host learns one step late, without ever waiting for the device.

The device path decides every step on the device; the rare actions that need the host
(restoring a snapshot, skipping batches, stopping the loop) are read from a small vector of
running totals that each step copies, non-blocking, into pinned host memory. The host reads
the newest copy that has arrived (a CUDA event says so; on the CPU every copy has arrived)
and never forces one: the values are cumulative, so a copy read late loses nothing.

Reading uses numpy views of the host buffers, so no ATen op (no `_local_scalar_dense`)
runs on the read side either.
"""

from __future__ import annotations

import numpy as np
import torch


class LateMirror:
    """A host mirror of a small float64 device vector, two buffers deep."""

    def __init__(self, width: int, device: torch.device):
        self.device = device
        cuda = device.type == "cuda"
        self.host = [torch.zeros(width, dtype=torch.float64, pin_memory=cuda)
                     for _ in range(2)]
        self.views = [h.numpy() for h in self.host]
        self.events: list[torch.cuda.Event | None] = [None, None]
        self.written = [-1, -1]           # the step each buffer holds (or is receiving)
        self.slot = 0

    def push(self, step: int, values: torch.Tensor) -> None:
        """Start copying `values` (step `step`) to the host; returns at once."""
        i = self.slot
        self.host[i].copy_(values, non_blocking=self.device.type == "cuda")
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
            self.events[i] = event
        self.written[i] = step
        self.slot = 1 - i

    def _arrived(self, i: int) -> bool:
        event = self.events[i]
        return self.written[i] >= 0 and (event is None or event.query())

    def latest(self, wait: bool = False) -> tuple[int, np.ndarray] | None:
        """(step, values) of the newest copy that has arrived, or None; `wait` blocks on the
        newest copy instead (a sync: only for reads outside the training step)."""
        order = sorted((0, 1), key=lambda i: self.written[i], reverse=True)
        if wait and self.written[order[0]] >= 0 and self.events[order[0]] is not None:
            self.events[order[0]].synchronize()
        for i in order:
            if self._arrived(i):
                return self.written[i], self.views[i]
        return None

"""Live training: a guarded and a plain run of one scenario, stepped in a worker thread.

    live = LiveSession("quickstart", lr=3e-3, steps=300).start()
    snap = live.snapshot()             # rows so far: snap.guarded, snap.plain (DataFrames)
    live.set_spec(spec.with_values({"thresholds.spike_z": 6.0}))   # applies at the next step
    live.stop()                        # sets the stop event and joins the worker

One worker thread per session steps both arms alternately, one step each, so they start
from the same weights and see the same batches in the same order (`Run` builds both from
the seed). The worker never touches a UI: it appends each row to a lock-protected buffer
that `snapshot()` copies. Every guarded row carries `spec_hash`, the hash of the spec that
decided that step, so a live edit is visible in the trace. An exception in the worker ends
the run with status "error" and its message; nothing is lost silently.

`max_rate` caps the steps per second (to watch a run unfold); the training is the same.
The guarded arm decides where `decide_on` says (default: the scenario's, i.e. auto — the
torch backend on a GPU, where live spec edits work as on the host).
A session nobody polls (`touch()`, called by every `snapshot()`) for `idle_timeout` seconds
stops itself, so a closed browser tab leaves no thread behind.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.device import describe_device, pick_device
from lbw_sim.sim.runner import GUARD_TRACE_COLUMNS, TRACE_COLUMNS, Run
from lbw_sim.sim.scenarios import Scenario, load_scenario

ARMS = ("guarded", "plain")
LIVE_COLUMNS = ["arm", *TRACE_COLUMNS, *GUARD_TRACE_COLUMNS, "spec_hash"]
THREAD_PREFIX = "lbw-live"
#: Weights are initialised from torch's global RNG: one session seeds and builds at a time.
_SEED_LOCK = threading.Lock()
_ids = itertools.count(1)
#: torch keeps the last `set_num_threads` as the default of threads started later; the
#: worker puts this back when it ends so other users of torch are not left at one thread.
_DEFAULT_THREADS = torch.get_num_threads()


def device_label(device: torch.device) -> str:
    """What a live run trains on, for display (on the CPU: one intra-op thread)."""
    return "cpu (1 intra-op thread)" if device.type == "cpu" else describe_device(device)


@dataclass(frozen=True)
class LiveStatus:
    """Where a session stands: idle, running, finished, stopped or error, and why."""

    state: str
    message: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class SpecChange:
    """A spec swapped in mid-run: the first guarded step it decided, and what changed."""

    step: int
    old_hash: str
    new_hash: str
    changes: tuple[str, ...] = ()


@dataclass
class Snapshot:
    """Copies of the rows so far, one DataFrame per arm, and the status when taken."""

    guarded: pd.DataFrame
    plain: pd.DataFrame
    status: LiveStatus
    spec_changes: list[SpecChange] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)  # arm -> why its run ended early

    @property
    def steps(self) -> int:
        """Steps done by the arm that is furthest along."""
        return max(len(self.guarded), len(self.plain))


class LiveSession:
    """A guarded and a plain run (same scenario, seed, LR, data order) in one worker thread."""

    def __init__(self, scenario: Scenario | str, lr: float | None = None, *, seed: int = 0,
                 steps: int | None = None, device: str | torch.device = "auto",
                 spec: GuardSpec | None = None, idle_timeout: float | None = None,
                 max_rate: float | None = None, decide_on: str | None = None):
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.spec = spec or sc.guard
        self.scenario = sc.replace(guard=self.spec)
        self.lr = float(sc.lrs[0] if lr is None else lr)
        self.seed, self.steps = int(seed), int(steps or sc.steps)
        self.device = pick_device(device)
        self.device_label = device_label(self.device)
        self.idle_timeout = idle_timeout
        self.max_rate = max_rate  # steps per second per arm; None = as fast as it goes
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._rows: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
        self._changes: list[SpecChange] = []
        self._ended: dict[str, str] = {}
        self._specs = {self.spec.hash: self.spec}  # every spec the guarded arm has used
        self._status = LiveStatus("idle")
        self._last_touch = time.monotonic()
        plain = "adamw" if sc.optimizer.kind == "adamw" else "plain"
        cache: dict = {}
        self.runs = {arm: Run(self.scenario, name, self.lr, self.seed, self.device,
                              steps=self.steps, stop_event=self.stop_event, cache=cache,
                              decide_on=decide_on)
                     for arm, name in zip(ARMS, ("guard", plain))}
        self.thread = threading.Thread(target=self._work, daemon=True,
                                       name=f"{THREAD_PREFIX}-{next(_ids)}")

    # --- control (any thread) ---------------------------------------------------------------
    def start(self) -> LiveSession:
        """Start the worker (once); returns self."""
        with self._lock:
            if self._status.state != "idle":
                raise RuntimeError("a LiveSession runs once; make a new one to run again")
            self._status = LiveStatus("running", f"training on {self.device_label}")
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the worker to stop after its current step and join it; True if it ended."""
        self.stop_event.set()
        with self._lock:
            if self._status.state == "idle":
                self._status = LiveStatus("stopped", "stopped before it started")
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def set_spec(self, spec: GuardSpec) -> None:
        """Swap the guarded arm's spec; it decides from the next step on (see `spec_hash`)."""
        self.spec = spec
        self.runs["guarded"].set_spec(spec)

    def touch(self) -> None:
        """Someone is watching: reset the idle clock."""
        self._last_touch = time.monotonic()

    # --- reading (any thread) ---------------------------------------------------------------
    @property
    def status(self) -> LiveStatus:
        with self._lock:
            return self._status

    @property
    def running(self) -> bool:
        return self.status.running

    def snapshot(self) -> Snapshot:
        """Copies of every row so far (safe while the worker appends)."""
        self.touch()
        with self._lock:
            rows = {a: list(r) for a, r in self._rows.items()}
            status, changes, ended = self._status, list(self._changes), dict(self._ended)
        frames = {a: _frame(r) for a, r in rows.items()}
        return Snapshot(frames["guarded"], frames["plain"], status, changes, ended)

    def trace(self) -> pd.DataFrame:
        """Both arms in one long table (`arm` column), the guarded rows first."""
        snap = self.snapshot()
        parts = [df.assign(arm=arm) for arm, df in (("guarded", snap.guarded),
                                                   ("plain", snap.plain)) if len(df)]
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        return df.reindex(columns=LIVE_COLUMNS)

    def trace_csv(self) -> str:
        """The trace so far as CSV text (for a download button)."""
        buf = io.StringIO()
        self.trace().to_csv(buf, index=False)
        return buf.getvalue()

    # --- the worker -------------------------------------------------------------------------
    def _work(self) -> None:
        torch.set_num_threads(1)  # this thread only (OpenMP): the UI thread keeps a core
        try:
            self._train()
            self._finish()
        except Exception as exc:  # noqa: BLE001 — surfaced as status, never lost
            last = traceback.extract_tb(exc.__traceback__)[-1]
            where = f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
            self._set_status("error", f"{type(exc).__name__}: {exc}{where}")
        finally:
            torch.set_num_threads(_DEFAULT_THREADS)

    def _train(self) -> None:
        iters = {arm: iter(run) for arm, run in self.runs.items()}
        with _SEED_LOCK:  # both arms' weights come from the same seed, undisturbed
            for arm in ARMS:
                self._step(arm, iters)
        while iters and not self.stop_event.is_set():
            t0 = time.monotonic()
            for arm in ARMS:
                if arm in iters:
                    self._step(arm, iters)
            if self._idle():
                self.stop_event.set()
                self._set_status("stopped", f"no page polled this run for "
                                            f"{self.idle_timeout:g} s")
            if self.max_rate:
                self.stop_event.wait(max(0.0, 1.0 / self.max_rate - (time.monotonic() - t0)))

    def _step(self, arm: str, iters: dict) -> None:
        try:
            row = next(iters[arm])
        except StopIteration:
            del iters[arm]
            reason = self.runs[arm].stop_reason
            if reason and reason != "stopped by request":
                with self._lock:
                    self._ended[arm] = reason
            return
        if arm == "guarded":
            row["spec_hash"] = self._spec_hash(row["step"])
        with self._lock:
            self._rows[arm].append(row)

    def _spec_hash(self, step: int) -> str:
        """Hash of the spec that decided this guarded step; a change is logged once."""
        spec = self.runs["guarded"].arm.spec
        with self._lock:
            rows = self._rows["guarded"]
            old = rows[-1]["spec_hash"] if rows else spec.hash
            if old != spec.hash:
                before = self._specs.get(old)
                diff = tuple(f"{k}: {a} → {b}" for k, a, b in before.diff(spec)) if before \
                    else ()
                self._changes.append(SpecChange(step, old, spec.hash, diff))
            self._specs[spec.hash] = spec
        return spec.hash

    def _idle(self) -> bool:
        return (self.idle_timeout is not None
                and time.monotonic() - self._last_touch > self.idle_timeout)

    def _finish(self) -> None:
        if self.status.state != "running":
            return
        reasons = [f"{arm}: {why}" for arm, why in self._ended.items()]
        if self.stop_event.is_set():
            self._set_status("stopped", "stopped by request")
        else:
            done = max(len(r) for r in self._rows.values())
            self._set_status("finished", f"{done} steps" + (f" ({'; '.join(reasons)})"
                                                            if reasons else ""))

    def _set_status(self, state: str, message: str) -> None:
        with self._lock:
            self._status = LiveStatus(state, message)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=[c for c in LIVE_COLUMNS if c != "arm"])
    return pd.DataFrame(rows)

"""TraceRecorder: incremental, crash-safe writing that load_trace reads back."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lbw_sim.errors import TraceError
from lbw_sim.traces import TraceRecorder, load_trace

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_round_trip_with_nan_inf_and_numpy(tmp_path, suffix):
    path = tmp_path / f"trace{suffix}"
    with TraceRecorder(path, flush_every=3) as rec:
        for s in range(10):
            rec.record(step=np.int64(s), loss=np.float32(2.0 - s / 10),
                       grad_norm=math.nan if s == 4 else (math.inf if s == 5 else 1.0), lr=1e-3)
        assert len(load_trace(path)) == 9  # three flushes so far
    df = load_trace(path)
    assert list(df.step) == list(range(10)) and df.loss[9] == pytest.approx(1.1)
    assert math.isnan(df.grad_norm[4]) and math.isinf(df.grad_norm[5])
    assert df.attrs["format"] == ("csv" if suffix == ".csv" else "jsonl")


def test_reopen_appends_after_torn_line(tmp_path):
    path = tmp_path / "t.jsonl"
    with TraceRecorder(path) as rec:
        rec.record_many({"step": s, "loss": 1.0} for s in range(5))
    with open(path, "a") as f:
        f.write('{"step": 5, "lo')  # a crash mid-line
    with TraceRecorder(path) as rec:  # a resumed run continues from its checkpoint at 3
        rec.record_many({"step": s, "loss": 0.5} for s in range(3, 8))
    df = load_trace(path)
    assert list(df.step) == list(range(8)) and list(df.loss[3:]) == [0.5] * 5
    assert df.attrs["events"] == [{"step": 3, "kind": "resume", "previous_step": 4}]


def test_csv_columns_are_fixed(tmp_path):
    rec = TraceRecorder(tmp_path / "t.csv", flush_every=1)
    rec.record(step=0, loss=1.0)
    with pytest.raises(TraceError, match="not in the CSV header"):
        rec.record(step=1, loss=1.0, extra=2)
    rec.close()
    with pytest.raises(TraceError, match="closed"):
        rec.record(step=2, loss=1.0)
    with pytest.raises(TraceError, match="jsonl or .csv"):
        TraceRecorder(tmp_path / "t.txt")


CHILD = textwrap.dedent("""
    import sys, time
    from lbw_sim.traces import TraceRecorder
    rec = TraceRecorder(sys.argv[1], flush_every=10)
    step = 0
    while True:
        rec.record(step=step, loss=1.0 / (step + 1), grad_norm=0.5, lr=1e-3)
        if step == 100:
            print("flushed", flush=True)
        step += 1
        time.sleep(0.0005 if step < 105 else 0.01)
""")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_sigkill_leaves_every_flushed_step(tmp_path, suffix):
    path = tmp_path / f"killed{suffix}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "flushed"
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    df = load_trace(path)
    n = len(df)
    assert n >= 100 and n % 10 == 0  # whole flushes only
    assert list(df.step) == list(range(n))
    assert df.loss.iloc[-1] == pytest.approx(1.0 / n)

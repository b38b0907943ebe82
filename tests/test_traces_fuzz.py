"""Hypothesis fuzz of every trace parser: truncated, binary and hostile input.

The only exception allowed out of load_trace/list_runs is TraceError with a one-line message.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import trace_files as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbw_sim.errors import TraceError
from lbw_sim.traces import list_runs, load_trace
from lbw_sim.traces.readers import FORMATS

NAMES = ["trainer_state.json", "metrics.csv", "history.jsonl", "output.log", "x.parquet",
         "events.out.tfevents.1.host", "wandb_export.csv", "upload"]


def valid_samples() -> list[bytes]:
    with tempfile.TemporaryDirectory() as d:
        state = tf.trainer_state(Path(d) / "s.json").read_bytes()
        parquet = Path(d) / "p.parquet"
        pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]}).to_parquet(parquet)
        pq_bytes = parquet.read_bytes()
    rows = "".join(json.dumps(r) + "\n" for r in tf.wandb_history_rows())
    return [state, pq_bytes, rows.encode(), tf.HF_CONSOLE.encode(), tf.LIGHTNING.encode(),
            tf.WANDB_CSV.encode(), tf.NANOGPT.encode(), tf.BUILD_NANOGPT.encode()]


SAMPLES = valid_samples()
FRAGMENTS = [b"{", b"}", b"[", b'"', b"'", b",", b"\n", b"nan", b"NaN", b"inf", b"-", b"\x00",
             b"\xff\xfe", b"iter 3: loss ", b"step", b"{'loss': ", b'{"step": ', b"1e999",
             b" - ", b"__MIN", b"log_history", b"PAR1", b"\r", b"9" * 50, b"\xe9"]



def truncate(sample: bytes, frac: float) -> bytes:
    return sample[:int(len(sample) * frac)]


def splice(sample: bytes, at: int, junk: bytes) -> bytes:
    at %= len(sample)
    return sample[:at] + junk + sample[at + len(junk):]


hostile = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(b"".join),
    st.builds(truncate, st.sampled_from(SAMPLES), st.floats(0, 1)),
    st.builds(splice, st.sampled_from(SAMPLES), st.integers(0, 10**6),
              st.binary(min_size=1, max_size=8)),
)


def check(call) -> None:
    try:
        result = call()
    except TraceError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)
        return
    assert isinstance(result, (pd.DataFrame, list))
    if isinstance(result, pd.DataFrame):
        assert result["step"].is_monotonic_increasing and result["step"].is_unique


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile, name=st.sampled_from(NAMES))
def test_auto_detection_survives_hostile_bytes(data, name):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        check(lambda: load_trace(path))
        check(lambda: list_runs(path))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile, fmt=st.sampled_from([f for f in FORMATS if f != "regex"]))
def test_every_parser_survives_hostile_bytes(data, fmt):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "upload"
        path.write_bytes(data)
        check(lambda: load_trace(path, format=fmt))
        check(lambda: load_trace(path, pattern=r"(?P<step>\d+)\D+(?P<loss>[-\d.e]+)"))

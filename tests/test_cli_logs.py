"""The CLI on real training logs, directories, mappings, scoring and sweeps (in-process)."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbw_sim.cli import main
from lbw_sim.traces import write_table
from lbw_sim.traces.synthetic import demo_trace, labels

ROOT = Path(__file__).resolve().parents[1]
LOGS = sorted(p.name for p in (ROOT.parent / "shared" / "traces").glob("*")
              if p.name != "README.md") or ["(no shared logs)"]
WANDB = "wandb_EvergreenTree_di-f-fu-sion_wandb_export.csv"
HF = "hf_syGOAT_Mistral-v0.2-Translator-bf16_trainer_state.json"


def run(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def assert_bad(code: int, err: str) -> None:
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.fixture
def traces(shared_dir) -> Path:
    folder = shared_dir / "traces"
    if not folder.is_dir():
        pytest.skip("../shared/traces is absent")
    return folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    trace, incidents = demo_trace()
    write_table(trace, folder / "demo.csv")
    labels(incidents).to_csv(folder / "labels.csv", index=False)
    return folder


@pytest.mark.parametrize("name", LOGS)
def test_replay_each_shared_log(traces, name, tmp_path):
    code, out, err = run("replay", traces / name, "--out", tmp_path / "a.parquet")
    assert code == 0, err
    assert "steps [" in out and "regimes: " in out and "transitions: " in out
    assert len(pd.read_parquet(tmp_path / "a.parquet")) > 500


def test_multi_run_file_names_its_runs(traces):
    code, out, _ = run("replay", traces / WANDB)
    assert code == 0 and "2 runs in" in out and "--run NAME" in out
    code, out, _ = run("replay", traces / WANDB, "--run", "oxford_flowers102-relu-conv2d")
    assert code == 0 and "runs in" not in out
    assert_bad(*run("replay", traces / WANDB, "--run", "nope")[::2])


def test_directories_are_traces(traces, tmp_path):
    ckpt = tmp_path / "hf" / "checkpoint-500"
    ckpt.mkdir(parents=True)
    shutil.copy(traces / HF, ckpt / "trainer_state.json")
    code, out, err = run("replay", tmp_path / "hf")
    assert code == 0 and "866 steps" in out, err
    lightning = tmp_path / "lightning_logs" / "version_0"
    lightning.mkdir(parents=True)
    shutil.copy(traces / "lightning_0Xero7_slm_training_version_0_metrics.csv",
                lightning / "metrics.csv")
    code, out, err = run("replay", tmp_path / "lightning_logs")
    assert code == 0 and "2814 steps" in out, err


def write_events(logdir: Path, tags: dict[str, list[float]]) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(logdir))
    for i in range(len(next(iter(tags.values())))):
        values = [Summary.Value(tag=t, simple_value=v[i]) for t, v in tags.items()]
        writer.add_event(Event(step=i, wall_time=1000.0 + i, summary=Summary(value=values)))
    writer.close()


def test_tensorboard_directory_with_runs_and_mapping(tmp_path):
    pytest.importorskip("tensorboard")
    loss = list(2 + np.sin(np.arange(300)) / 10)
    write_events(tmp_path / "a", {"train/loss": loss, "train/grad_norm": [1.0] * 300})
    write_events(tmp_path / "b", {"my/loss": loss[:250]})
    code, out, err = run("replay", tmp_path)
    assert code == 0 and "2 runs in" in out and "300 steps" in out, err
    code, out, err = run("replay", tmp_path, "--run", "b", "--map", "loss=my/loss")
    assert code == 0 and "250 steps" in out, err


def test_map_format_and_pattern(tmp_path):
    p = tmp_path / "custom.csv"
    pd.DataFrame({"it": np.arange(300), "objective": 2 + np.sin(np.arange(300)) / 10}).to_csv(
        p, index=False)
    code, out, err = run("replay", p, "--format", "csv", "--map", "step=it",
                         "--map", "loss=objective")
    assert code == 0 and "300 steps [0..299]" in out, err
    log = tmp_path / "train.log"
    log.write_text("".join(f"epoch 0 | batch {i} | objective={2 + i % 7 / 100:.3f}\n"
                           for i in range(250)))
    code, out, err = run("replay", log, "--pattern",
                         r"batch (?P<step>\d+) \| objective=(?P<loss>[\d.]+)")
    assert code == 0 and "250 steps" in out, err


@pytest.mark.parametrize("args", [
    ["--map", "loss"], ["--map", "bogus=x"], ["--map", "loss=missing_col"],
    ["--format", "nope"], ["--pattern", "("], ["--format", "csv", "--pattern", "x"],
    ["--spec", "missing.yaml"], ["--no-such-flag"],
])
def test_bad_options_exit_2_with_one_line(demo, args):
    assert_bad(*run("replay", demo / "demo.csv", *args)[::2])


def test_score_prints_quality_and_cost(demo):
    code, out, err = run("score", demo / "demo.csv", "--labels", demo / "labels.csv",
                         "--horizon", "5")
    assert code == 0, err
    assert "precision 1.000; recall 1.000 (2/2)" in out
    assert "false alarms per 1,000 steps:" in out and "intervention cost:" in out
    assert out.count("  incident ") == 2
    assert_bad(*run("score", demo / "demo.csv", "--labels", demo / "demo.csv")[::2])
    assert_bad(*run("score", demo / "demo.csv", "--labels", demo / "labels.csv",
                    "--horizon", "-1")[::2])


def test_sweep_writes_table_with_pareto(demo, tmp_path):
    out_csv = tmp_path / "t.csv"
    # on v1, whose thresholds the counts are read from (watch_z = 4)
    code, out, err = run("sweep", demo / "demo.csv", "--spec", "lbw-v1",
                         "--grid", "thresholds.spike_z=4:10:2",
                         "--grid", "thresholds.calm_z=1,2,5", "--labels", demo / "labels.csv",
                         "--out", out_csv)
    assert code == 0, err
    table = pd.read_csv(out_csv)
    assert len(table) == 8 and table["pareto"].any()  # calm_z=5 breaks hysteresis: skipped
    assert {"thresholds.spike_z", "spec_hash", "recall", "precision", "out_share"} <= set(table)
    assert "4 invalid combinations skipped" in out and "skipped thresholds.spike_z=4" in out
    code, out, err = run("sweep", demo / "demo.csv", "--grid", "thresholds.spike_z=4:10:0.5",
                         "--random", "3", "--seed", "1", "--out", out_csv)
    assert code == 0 and len(pd.read_csv(out_csv)) == 3, err


@pytest.mark.parametrize("grid", ["thresholds.spike_z=10:4:1", "thresholds.nope=1,2",
                                  "transitions.spike.for"])
def test_sweep_bad_grid_names_the_field(demo, tmp_path, grid):
    code, _, err = run("sweep", demo / "demo.csv", "--grid", grid, "--out", tmp_path / "t.csv")
    assert_bad(code, err)
    assert grid.split("=")[0] in err


def test_sweep_bad_out_suffix_fails_before_sweeping(demo, tmp_path):
    code, out, err = run("sweep", demo / "demo.csv", "--grid", "thresholds.spike_z=4,5",
                         "--out", tmp_path / "t.txt")
    assert_bad(code, err)
    assert "suffix" in err and out == "" and not (tmp_path / "t.txt").exists()


def test_replay_of_a_real_log_does_not_import_torch(traces):
    code = ("import sys, lbw_sim.cli as c; "
            f"rc = c.main(['replay', {str(traces / HF)!r}]); "
            "bad = [m for m in ('torch', 'streamlit') if m in sys.modules]; "
            "sys.exit(rc or (1 if bad else 0))")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# --- fuzz: hostile files never escape as exceptions ------------------------------------------

def _valid_files() -> dict[str, bytes]:
    trace = demo_trace(400)[0]
    state = {"log_history": [{"step": int(s), "loss": float(x), "grad_norm": float(g)}
                             for s, x, g in trace[["step", "loss", "grad_norm"]].head(300)
                             .itertuples(index=False)]}
    buf = io.BytesIO()
    trace.to_parquet(buf, index=False)
    return {"t.csv": trace.to_csv(index=False).encode(),
            "t.jsonl": trace.to_json(orient="records", lines=True).encode(),
            "trainer_state.json": json.dumps(state).encode(),
            "t.parquet": buf.getvalue(),
            "out.log": "".join(f"iter {s}: loss {x:.4f}, time 10ms\n" for s, x in
                               trace[["step", "loss"]].itertuples(index=False)).encode()}


VALID = _valid_files()
NAMES = [*VALID, "x.txt", "events.out.tfevents.1", "metrics.csv", "x.bin"]


@st.composite
def hostile(draw) -> tuple[str, bytes, bool]:
    """(file name, content, must the replay fail?)"""
    kind = draw(st.sampled_from(["truncated", "binary", "garbled", "text"]))
    if kind == "truncated":
        name = draw(st.sampled_from(list(VALID)))
        data = VALID[name]
        cut = draw(st.integers(0, len(data) - 1))
        # a cut JSON document or Parquet file (footer at the end) cannot be valid, nor a
        # table cut inside its header; a text log is valid from its first `loss <number>`
        head = data[:cut]
        if name == "out.log":
            must_fail = re.search(rb"loss \d", head) is None
        else:
            must_fail = name in ("trainer_state.json", "t.parquet") or cut < 40
        return name, head, must_fail
    name = draw(st.sampled_from(NAMES))
    if kind == "binary":
        return name, b"\0" + draw(st.binary(min_size=1, max_size=2000)), True
    if kind == "garbled":
        data = bytearray(VALID[draw(st.sampled_from(list(VALID)))][:3000])
        for _ in range(draw(st.integers(1, 20))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return name, bytes(data), False
    text = draw(st.text(alphabet=st.sampled_from("step,loss=:{}[]\"' \n0123456789.e-nanif"),
                        max_size=500))
    return name, text.encode(), False


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile())
def test_fuzz_replay_never_raises(case):
    name, data, must_fail = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        code, out, err = run("replay", path)
    assert code in (0, 2)
    if code == 2 or must_fail:
        assert_bad(code, err)
        assert "Traceback" not in err
    else:
        assert "regimes:" in out

import math
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from patience import patience

from lbw_sim.bench.scenario import SUMMARY_COLUMNS
from lbw_sim.cli import main
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.runner import (
    GUARD_TRACE_COLUMNS,
    TRACE_COLUMNS,
    Run,
    diverged_step,
    fault_label,
    iter_run,
)
from lbw_sim.sim.scenarios import load_scenario

torch.set_num_threads(1)
QUICK = load_scenario("quickstart")
STORM = load_scenario("nan_storm")


def params_finite(run):
    return all(torch.isfinite(p).all() for p in run.task.module.parameters())


@pytest.mark.slow
def test_quickstart_runs_end_to_end_through_the_cli(tmp_path, capsys):
    out = tmp_path / "qs"
    steps = 82        # up to the last fault (NaN gradients at 80-81); evals at 0, 50 and 81
    assert steps < QUICK.steps
    assert main(["run", "quickstart", "--out", str(out), "--quiet", "--steps", str(steps)]) == 0
    printed = capsys.readouterr().out
    assert "guard" in printed and "summary.csv" in printed
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert summary["arm"].tolist() == ["adamw", "clip", "zclip", "skipstep", "guard"]
    traces = sorted(p.name for p in out.glob("*_seed0.csv"))
    assert len(traces) == 5
    guard = pd.read_csv(out / "guard_lr0.003_seed0.csv")
    assert list(guard.columns) == TRACE_COLUMNS + GUARD_TRACE_COLUMNS
    assert (summary["steps_run"] == steps).all()                  # --steps reaches every arm
    assert len(guard) == steps and guard["val_loss"].notna().sum() == 3
    assert set(guard.loc[guard["fault"].notna(), "step"]) == {70, 80, 81}
    plain = pd.read_csv(out / "adamw_lr0.003_seed0.csv")
    assert list(plain.columns) == TRACE_COLUMNS
    row = summary.set_index("arm").loc["guard"]
    assert np.isfinite(row["final_val_loss"]) and row["best_loss"] < row["final_val_loss"]


def test_cli_run_rejects_bad_input_with_one_line(capsys):
    assert main(["run", "no_such_scenario"]) == 2
    assert main(["run", "quickstart", "--arms", "adamw,bogus"]) == 2
    assert main(["run", "quickstart", "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_same_seed_gives_the_same_init_and_batches_in_every_arm():
    first = {}
    for arm in ("adamw", "clip", "zclip", "skipstep", "guard"):
        run = Run(QUICK, arm, 3e-3, seed=1, device="cpu", steps=3)
        rows = list(run)
        x, y = run.task.batches.get(2)
        first[arm] = (rows[0]["loss"], [r["batch"] for r in rows], x, y)
    ref = first["adamw"]
    for loss, batches, x, y in first.values():
        assert loss == ref[0] and batches == [0, 1, 2]
        assert torch.equal(x, ref[2]) and torch.equal(y, ref[3])
    other = list(Run(QUICK, "adamw", 3e-3, seed=2, device="cpu", steps=1))
    assert other[0]["loss"] != ref[0]


def test_nan_storm_rollback_skips_batches_and_keeps_weights_finite():
    storm = next(f for f in STORM.faults if f["kind"] == "nonfinite")
    # the storm outlasts the spec's patience before a rollback, but not the one before a stop
    assert patience(STORM.guard, "rollback") < storm["duration"] < patience(STORM.guard, "stop")
    steps = storm["at"] + storm["duration"] + 15
    guard = Run(STORM, "guard", STORM.lrs[0], device="cpu", steps=steps)
    rows = list(guard)
    rb = [i for i, r in enumerate(rows) if r["rollback"]]
    assert len(rb) == 1
    i = rb[0]
    skip = STORM.guard.regimes[rows[i]["regime"]].skip_batches      # the rollback regime's
    assert rows[i + 1]["batch"] == rows[i]["batch"] + 1 + skip
    assert rows[-1]["batch"] == rows[-1]["step"] + skip
    assert params_finite(guard) and not guard.stop_reason

    plain = Run(STORM, "adamw", STORM.lrs[0], device="cpu", steps=steps)
    plain_rows = list(plain)
    assert not params_finite(plain)
    assert "non-finite" in plain.stop_reason and len(plain_rows) < steps


def test_stop_event_ends_a_live_run_promptly():
    stop = threading.Event()
    run = iter_run(QUICK, "guard", seed=0, device="cpu", steps=100_000, stop_event=stop)
    rows, started = [], threading.Event()

    def work():
        for row in run:
            rows.append(row)
            started.set()

    t = threading.Thread(target=work)
    t.start()
    assert started.wait(30)
    t0 = time.perf_counter()
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive() and time.perf_counter() - t0 < 5
    assert run.stop_reason == "stopped by request" and len(rows) < 100_000


def test_set_spec_between_steps_reaches_the_guard():
    run = iter_run(QUICK, "guard", device="cpu", steps=12)
    lax = GuardSpec.default().with_values({"thresholds.spike_z": 50.0})
    for row in run:
        if row["step"] == 5:
            run.set_spec(lax)
    hashes = run.arm.trace()["spec_hash"].tolist()
    assert hashes[:6] == [QUICK.guard.hash] * 6 and hashes[6:] == [lax.hash] * 6


def test_schedules_faults_and_divergence():
    sc = QUICK.replace(faults=({"kind": "lr_spike", "factor": 10.0, "at": 20},))
    cos = Run(sc, "adamw:cosine", 1e-2, steps=100)
    matched = Run(sc, "adamw:lr_matched=1e-3", 1e-2, steps=100)
    assert cos.base_lr(10) == pytest.approx(1e-2) and cos.base_lr(99) < 2e-3
    assert matched.base_lr(50) == pytest.approx(1e-3)
    rows = list(Run(sc, "adamw", 1e-2, device="cpu", steps=22))
    assert rows[20]["lr"] == pytest.approx(0.1) and rows[20]["fault"] == "lr_spike"
    sched = sc.fault_schedule()
    assert fault_label(sched, 20, 35) == "lr_spike" and fault_label(sched, 5, 20) == ""
    assert diverged_step(np.array([4.0, 9.0, 3.0, 9.0]), warmup=2, factor=2.0) == 3
    assert diverged_step(np.array([4.0, 3.0, math.nan]), warmup=5, factor=2.0) == 2
    assert diverged_step(np.array([4.0, 3.0, 2.0]), warmup=0, factor=2.0) is None


GUARD_ROW = TRACE_COLUMNS + GUARD_TRACE_COLUMNS


def compare_rows(host: list[dict], dev: list[dict]) -> None:
    assert len(host) == len(dev)
    for h, d in zip(host, dev):
        assert set(d) == set(h) == set(GUARD_ROW)
        for key in ("step", "batch", "regime", "lr_scale", "skipped", "safety_skip",
                    "momentum_scale", "rollback", "stop", "transition", "cause", "clipped"):
            assert d[key] == h[key], (h["step"], key)
        for key in ("loss", "model_loss", "grad_norm", "update_ratio", "update_scale"):
            assert d[key] == pytest.approx(h[key], rel=1e-4, abs=1e-7, nan_ok=True), key


def test_device_path_rows_are_complete_and_equal_the_host_rows():
    """The torch backend (the GPU path, here on CPU tensors) through the runner."""
    # v1: it intervenes on the quickstart's one-step corrupted batch (the default rides it)
    quick_v1 = QUICK.replace(guard=GuardSpec.named("lbw-v1"))
    host = iter_run(quick_v1, "guard", device="cpu", steps=90, decide_on="host")
    dev = iter_run(quick_v1, "guard", device="cpu", steps=90, decide_on="device")
    h_rows, d_rows = list(host), list(dev)
    assert host.arm.mode == "host" and dev.arm.mode == "device"
    compare_rows(h_rows, d_rows)
    assert all(np.isfinite(r["grad_norm"]) or r["safety_skip"] or r["skipped"]
               for r in d_rows)
    regimes = [r["regime"] for r in d_rows]
    assert "intervene" in regimes and "skip" in regimes and all(regimes)


def test_device_path_takes_a_live_spec_edit_through_the_runner():
    run = iter_run(QUICK, "guard", device="cpu", steps=12, decide_on="device")
    lax = GuardSpec.default().with_values({"thresholds.spike_z": 50.0})
    for row in run:
        if row["step"] == 5:
            run.set_spec(lax)
    assert run.arm.mode == "device"
    hashes = run.arm.trace()["spec_hash"].tolist()
    assert hashes[:6] == [QUICK.guard.hash] * 6 and hashes[6:] == [lax.hash] * 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runner_decides_on_the_device_with_complete_rows():
    host = list(iter_run(QUICK, "guard", device="cuda", steps=90, decide_on="host"))
    run = iter_run(QUICK, "guard", device="cuda", steps=90)        # auto
    rows = list(run)
    assert run.arm.mode == "device"
    compare_rows(host, rows)

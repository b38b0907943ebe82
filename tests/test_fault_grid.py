"""The fault benchmark: the grid's definition, the new faults, metrics on synthetic curves,
resume, the goals, and the Ray backend's parity with the local pool."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lbw_sim.bench.fault_grid import (
    FAULT_ARMS,
    FAULT_NAMES,
    SEVERITIES,
    TASKS,
    FaultCell,
    build_fault_grid,
    fault_arms,
    first_at_or_after,
    own_metrics,
    run_fault_grid,
    settled_after,
    smooth,
    steps_lost,
)
from lbw_sim.bench.fault_report import goals, read_fault_summary, table_markdown
from lbw_sim.errors import SpecError, TraceError
from lbw_sim.sim.faults import FaultSchedule

# --- the grid's definition ---------------------------------------------------------------------


def test_grid_covers_every_fault_severity_task_arm_and_seed():
    grid = build_fault_grid()
    assert grid.seeds == (1, 2, 3) and build_fault_grid(quick=True).seeds == (1,)
    # the issue's arms, StableAdamW included now that the suite's competitors exist
    assert set(grid.tasks) == {"gpt", "mlp"} and grid.arms == (*FAULT_ARMS, "stableadamw")
    cells = grid.cells()
    per_task = 1 + sum(len(SEVERITIES[f]) for f in FAULT_NAMES)
    assert len(cells) == len(set(c.key for c in cells)) == 2 * per_task * 6 * 3
    assert len(per_task * [0]) == 13  # six kinds x two severities + the fault-free run
    first_faulted = next(i for i, c in enumerate(cells) if c.fault != "none")
    assert all(c.fault == "none" for c in cells[:first_faulted])  # references go first
    assert {c.clean.key for c in cells} <= {c.key for c in cells[:first_faulted]}


def test_each_task_trains_at_its_recorded_lr_and_faults_start_mid_run():
    grid = build_fault_grid(quick=True)
    for task, t in TASKS.items():
        assert t["lr"] in t["find_lrs"]  # chosen from its own seed-0 sweep
        for fault in FAULT_NAMES:
            for sev in SEVERITIES[fault]:
                cell = FaultCell(task, fault, sev, "guard", 1)
                sc = grid.scenario(cell)  # validates the fault list like any scenario
                assert sc.lrs == (t["lr"],) and sc.guard.name
                sched = sc.fault_schedule(10)
                start, end = grid.fault_window(cell)
                assert start == sc.steps // 2 == min(sched.fault_steps)
                if fault == "shift":
                    assert end is None and max(sched.fault_steps) >= 2 * sc.steps - 1
                else:
                    assert max(sched.fault_steps) == end - 1
    none = grid.scenario(FaultCell("gpt", "none", 0.0, "adamw", 1))
    assert none.faults == ()


def test_severities_are_the_issues():
    grid = build_fault_grid()
    items = {f: [grid.fault_items(FaultCell("gpt", f, s, "adamw", 1))[0]
                 for s in SEVERITIES[f]] for f in FAULT_NAMES}
    assert [i["duration"] for i in items["corrupt"]] == [5, 50]
    assert [(i["factor"], i["duration"]) for i in items["lr_spike"]] == [(10, 20), (100, 20)]
    assert [i["duration"] for i in items["overflow"]] == [3, 30]
    assert [i["scale"] for i in items["grad_noise"]] == [10, 100]
    assert all(i["tail_dof"] >= 3 for i in items["grad_noise"])  # heavy-tailed
    assert [i["factor"] for i in items["poison"]] == [1e2, 1e4]
    mlp = grid.fault_items(FaultCell("mlp", "corrupt", 5, "adamw", 1))[0]
    assert mlp["mode"] == "flip_labels" and items["corrupt"][0]["mode"] == "random_tokens"


def test_bad_grid_options_name_the_flag():
    with pytest.raises(SpecError, match="--seeds"):
        build_fault_grid(seeds=0)
    with pytest.raises(SpecError, match="--tasks"):
        build_fault_grid(tasks=["resnet"])
    with pytest.raises(SpecError, match="--faults"):
        build_fault_grid(faults=["meteor"])
    with pytest.raises(SpecError, match="--arms"):
        build_fault_grid(arms=["sgd"])


# --- the new faults ----------------------------------------------------------------------------

def _grads(n: int = 4000) -> list[torch.Tensor]:
    p = torch.nn.Parameter(torch.zeros(n))
    p.grad = torch.ones(n)
    return [p]


def test_poison_multiplies_the_gradient_once():
    sched = FaultSchedule.from_list([{"kind": "poison", "factor": 1e4, "at": 3}])
    params = _grads(10)
    sched.perturb_grads(params, 2)
    assert torch.equal(params[0].grad, torch.ones(10))
    sched.perturb_grads(params, 3)
    assert torch.equal(params[0].grad, torch.full((10,), 1e4))
    assert sched.label(3) == "poison" and sched.label(4) == ""


def test_heavy_tailed_noise_has_the_asked_scale_and_fat_tails():
    def noise(dof: int) -> torch.Tensor:
        sched = FaultSchedule.from_list([{"kind": "grad_noise", "scale": 10.0,
                                          "tail_dof": dof, "at": 0}])
        params = _grads(200_000)
        sched.perturb_grads(params, 0, torch.Generator().manual_seed(0))
        return params[0].grad - 1.0

    gauss, heavy = noise(0), noise(3)
    for x in (gauss, heavy):  # std = scale x rms(grad) = 10, so norm ~ 10x the grad's
        assert float(x.std()) == pytest.approx(10.0, rel=0.1)
    kurt = [float(((x / x.std()) ** 4).mean()) for x in (gauss, heavy)]
    assert kurt[0] == pytest.approx(3.0, abs=0.2) and kurt[1] > 6.0
    with pytest.raises(SpecError, match=r"faults\[0\].tail_dof"):
        FaultSchedule.from_list([{"kind": "grad_noise", "tail_dof": 2, "at": 0}])


def test_shift_corrupts_its_fraction_of_rows_for_good():
    sched = FaultSchedule.from_list([{"kind": "shift", "fraction": 0.25, "at": 5,
                                      "duration": 100}], n_classes=10)
    x, y = torch.arange(24.0).view(8, 3), torch.zeros(8, dtype=torch.long)
    same = sched.corrupt_batch(x, y, 4, torch.Generator().manual_seed(0))
    assert same[0] is x
    for step in (5, 104):
        cx, cy = sched.corrupt_batch(x, y, step, torch.Generator().manual_seed(step))
        assert int((cx != x).any(1).sum()) == 2  # 25 % of 8 rows
    assert sched.label(50) == "shift" and sched.label(105) == ""


# --- metrics on synthetic curves ---------------------------------------------------------------

def test_steps_lost_counts_until_back_within_one_percent_for_good():
    clean = np.full(300, 2.0)
    hit = clean.copy()
    hit[100:140] = 3.0                 # 40 bad steps from the fault's start at 100
    lost = steps_lost(hit, clean, 100, window=1)
    assert lost == 40
    assert steps_lost(hit, clean, 100, window=21) == 50  # the centred mean adds half a window
    slow = clean * (1 + 0.05 * np.exp(-np.maximum(np.arange(300) - 100, 0) / 20.0))
    slow[:100] = 2.0                   # decays below 1 % at 100 + 20 ln 5 = 132.2
    assert steps_lost(slow, clean, 100, window=1) == 33
    assert math.isnan(steps_lost(clean * 1.05, clean, 100))      # never back
    assert math.isnan(steps_lost(clean[:200], clean, 100))       # stopped early
    assert steps_lost(clean * 0.9, clean, 100) == 0              # lower is fine


def test_smoothing_keeps_a_nonfinite_step_out_of_recovery():
    loss = np.full(50, 1.0)
    loss[20] = np.nan
    s = smooth(loss, 5)
    assert np.isinf(s[18:23]).all() and np.isfinite(s[:18]).all() and np.isfinite(s[23:]).all()


def test_latency_and_lr_back_from_a_guard_trace():
    steps = np.arange(100)
    regime = np.array(["nominal"] * 100, dtype=object)
    regime[10] = "watch"                 # a false alarm before the fault
    regime[53:70] = "intervene"          # the fault starts at 50, detected 3 steps later
    scale = np.ones(100)
    scale[55:80] = 0.5
    trace = pd.DataFrame({"step": steps, "regime": regime, "lr_scale": scale,
                          "skipped": False, "clipped": False})
    trace.loc[10, "skipped"] = True
    m = own_metrics(trace, 50)
    assert m["detection_latency"] == 3 and m["false_interventions"] == 1
    assert m["final_lr_scale"] == 1.0 and m["lr_recovered"] and m["lr_back_steps"] == 30
    trace.loc[95:, "lr_scale"] = 0.25    # a cut that lasts to the end: a scar
    m = own_metrics(trace, 50)
    assert m["final_lr_scale"] == 0.25 and not m["lr_recovered"]
    assert math.isnan(m["lr_back_steps"])
    assert math.isnan(first_at_or_after(np.zeros(5, bool), np.arange(5), 0))
    assert settled_after(np.ones(5, bool), np.arange(5), 2) == 0


# --- goals --------------------------------------------------------------------------------------

def _summary(guard_ratio: float, adamw_ratio: float, guard_scale: float = 1.0,
             quiet: int = 0, guard_clean: float = 1.0) -> pd.DataFrame:
    rows = []
    for arm, clean, ratio in (("adamw", 1.0, adamw_ratio), ("guard", guard_clean, guard_ratio)):
        rows.append({"task": "t", "fault": "none", "severity": 0.0, "arm": arm, "seed": 1,
                     "final_val_loss": clean, "clean_final_val_loss": clean, "ratio": 1.0,
                     "interventions": quiet if arm == "guard" else 0, "final_lr_scale": 1.0})
        for fault in ("poison", "shift"):
            rows.append({"task": "t", "fault": fault, "severity": 100.0, "arm": arm, "seed": 1,
                         "final_val_loss": clean * ratio, "clean_final_val_loss": clean,
                         "ratio": ratio, "interventions": 3,
                         "final_lr_scale": guard_scale if arm == "guard" else 1.0})
    return read_fault_summary(pd.DataFrame(rows).to_csv(index=False).encode())


def test_goals_met_when_the_guard_rides_out_the_fault():
    v = goals(_summary(1.01, 1.30)).set_index("goal")["met"]
    assert v.tolist() == [True, True, True, True, True]


def test_goals_name_each_miss():
    v = goals(_summary(1.50, 1.10, guard_scale=0.25, quiet=4, guard_clean=1.01))
    by = v.set_index(v["goal"].str.split(":").str[0])
    assert by.loc["recovery", "met"] is False and "t/poison 100: 1.500" in \
        by.loc["recovery", "detail"]
    assert by.loc["dominance", "met"] is False and "adamw" in by.loc["dominance", "detail"]
    assert by.loc["no scar", "met"] is False and by.loc["no scar", "measured"] == 0.25
    assert by.loc["quiet", "met"] is False and by.loc["quiet", "measured"] == 4
    assert by.loc["cost", "met"] is False and by.loc["cost", "measured"] == pytest.approx(1.01)
    md = table_markdown(_summary(1.50, 1.10))
    assert "| poison | 100 | 1.100 | 1.500 |" in md and "✘" in md


def test_a_run_the_guard_stopped_counts_as_not_recovered():
    s = _summary(1.01, 1.30).assign(steps_run=100)
    stop = (s["arm"] == "guard") & (s["fault"] == "poison")
    s.loc[stop, "steps_run"] = 40  # its last val loss is from step 40: not comparable
    v = goals(s).set_index(goals(s)["goal"].str.split(":").str[0])
    assert v.loc["recovery", "met"] is False and "stopped early" in v.loc["recovery", "detail"]
    assert v.loc["dominance", "met"] is False
    assert "1.010 (stopped)" in table_markdown(s)


def test_goals_cannot_tell_without_the_cells():
    s = _summary(1.0, 1.0)
    v = goals(s[s["arm"] == "adamw"])
    assert v["met"].isna().all() or all(m is None for m in v["met"])


def test_bad_summaries_are_refused_with_the_reason():
    with pytest.raises(TraceError, match="missing column"):
        read_fault_summary(b"arm,lr\nadamw,1\n")
    good = _summary(1.0, 1.0).to_csv(index=False)
    with pytest.raises(TraceError, match="unknown fault"):
        read_fault_summary(good.replace("poison", "meteor").encode())
    with pytest.raises(TraceError, match="not a CSV"):
        read_fault_summary(b"\x00\xff" * 100)


# --- running and resuming --------------------------------------------------------------------

def _tiny_grid(**kw):
    args = {"seeds": 1, "steps": 24, "tasks": ["mlp"], "faults": ["poison"],
            "arms": ["adamw", "guard"]}
    return build_fault_grid(**{**args, **kw})


def _rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_s"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "tiny"
    grid = _tiny_grid()
    return grid, run_fault_grid(grid, out, workers=1, progress=False), out


def test_tiny_grid_summary_has_a_row_per_cell(tiny):
    grid, summary, out = tiny
    assert len(summary) == len(grid.cells()) == 6
    assert set(summary["fault"]) == {"none", "poison"}
    clean = summary[summary["fault"] == "none"].set_index("arm")["final_val_loss"]
    hit = summary[summary["fault"] == "poison"]
    for r in hit.itertuples():
        assert r.clean_final_val_loss == clean[r.arm]
        assert r.ratio == pytest.approx(r.final_val_loss / clean[r.arm])
    for c in grid.cells():
        assert (out / c.trace_file).is_file()
    assert read_fault_summary(out / "summary.csv").shape == summary.shape


def test_resume_skips_finished_cells_and_reruns_a_lost_one(tiny):
    grid, summary, out = tiny
    ran: list[dict] = []
    again = run_fault_grid(grid, out, workers=1, progress=False,
                           callback=lambda d, t, r: ran.append(r))
    assert ran == [] and len(again) == len(summary)
    kept = read_fault_summary(out / "summary.csv")
    kept = kept[~((kept["fault"] == "poison") & (kept["arm"] == "guard"))]
    kept.to_csv(out / "summary.csv", index=False)
    resumed = run_fault_grid(grid, out, workers=1, progress=False,
                             callback=lambda d, t, r: ran.append(r))
    assert [(r["fault"], r["severity"], r["arm"]) for r in ran] == [
        ("poison", 1e2, "guard"), ("poison", 1e4, "guard")]
    pd.testing.assert_frame_equal(_rows(resumed), _rows(summary), check_dtype=False)
    with pytest.raises(SpecError, match="--out.*another grid.*tasks"):
        run_fault_grid(_tiny_grid(steps=30), out, workers=1, progress=False)


def test_write_outputs_and_figures(tiny):
    from lbw_sim.bench.fault_report import load_fault_results
    from lbw_sim.viz.faults import write_report as write_outputs

    grid, summary, out = tiny
    files = write_outputs(out, {"mlp": 1e-2})
    assert {f.name for f in files} >= {"table.md", "fault_curves.html", "guard_regimes.html"}
    md = (out / "table.md").read_text(encoding="utf-8")
    assert "## Goals" in md and "AdamW-best lr 0.01" in md and "| poison | 100 |" in md
    res = load_fault_results(out)
    assert set(res.curves["arm"]) == {"adamw", "guard"} and "regime" in res.curves
    assert "plotly" in (out / "fault_curves.html").read_text(encoding="utf-8")[:200_000]


# --- Ray ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")  # pinned in requirements-dev.txt: CI runs this
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_gives_the_local_rows(tiny, ray_local, tmp_path):
    grid, summary, _ = tiny
    on_ray = run_fault_grid(grid, tmp_path / "ray", workers=2, backend="ray", progress=False)
    pd.testing.assert_frame_equal(_rows(on_ray), _rows(summary), check_dtype=False)
    again = run_fault_grid(grid, tmp_path / "ray", backend="ray", progress=False)
    pd.testing.assert_frame_equal(_rows(again), _rows(on_ray))  # resumes: nothing re-run


@pytest.mark.slow
def test_ray_backend_runs_the_stress_grid_like_the_pool(ray_local, tmp_path):
    from test_stress import TINY

    from lbw_sim.bench.stress import build_grid, run_stress

    grid = build_grid(overrides={**TINY, "lrs": [1e-2]}, arms=["adamw", "guard"])
    local = run_stress(grid, tmp_path / "local", workers=2, progress=False).summary
    on_ray = run_stress(grid, tmp_path / "ray", workers=2, backend="ray",
                        progress=False).summary
    cols = [c for c in local.columns if c != "wall_s"]
    pd.testing.assert_frame_equal(on_ray[cols], local[cols])


def test_unknown_backend_names_the_flag(tiny):
    grid, _, out = tiny
    with pytest.raises(SpecError, match="--backend"):
        run_fault_grid(grid, out, backend="dask")
    with pytest.raises(SpecError, match="--address"):
        run_fault_grid(grid, out, address="auto")


def test_cli_refuses_a_bad_backend_before_running(capsys):
    from lbw_sim.cli import main

    assert main(["faults", "--quick", "--address", "auto", "--out", "/nonexistent/x"]) == 2
    assert "--address" in capsys.readouterr().err
    assert main(["stress", "--backend", "dask"]) == 2
    assert "invalid choice" in capsys.readouterr().err


# --- the studio's miniature grid ---------------------------------------------------------------

def test_mini_grid_is_one_task_three_faults_three_arms_seed_one():
    from lbw_sim.bench.fault_grid import MINI

    grid = build_fault_grid(mini=True)
    assert list(grid.tasks) == ["gpt"] and grid.seeds == (1,) and grid.steps("gpt") == 240
    assert grid.arms == ("adamw", "skipstep", "guard")
    assert {f: grid.levels(f) for f in grid.faults} == {
        f: tuple(float(v) for v in vals) for f, vals in MINI["severities"].items()}
    cells = grid.cells()
    assert len(cells) == 3 + 3 * 3 and [c.fault for c in cells[:3]] == ["none"] * 3
    for cell in cells[3:]:  # every fault is over before the run ends
        start, end = grid.fault_window(cell)
        assert start == 120 and end <= 240 and grid.scenario(cell).steps == 240
    # the user's picks override the preset; the full grid is untouched by it
    picked = build_fault_grid(mini=True, tasks=["mlp"], severities={"corrupt": [50, 5]},
                              arms=["guard", "adamw"], steps=120)
    assert picked.levels("corrupt") == (5.0, 50.0) and picked.faults == ("corrupt",)
    assert picked.arms == ("adamw", "guard") and len(picked.cells()) == 2 + 2 * 2
    assert len(build_fault_grid(quick=True).cells()) == 2 * 13 * len(fault_arms())


@pytest.mark.parametrize("kw, field, words", [
    ({"severities": {"meteor": [1]}}, "--faults", "unknown fault 'meteor'"),
    ({"severities": {"lr_spike": [30]}}, "severities.lr_spike", "unknown severity 30"),
    ({"severities": {"poison": ["a lot"]}}, "severities.poison", "must be numbers"),
    ({"severities": {}}, "--faults", "at least one"),
    ({"arms": ["sgd"]}, "--arms", "unknown arm 'sgd'"),
    ({"arms": []}, "--arms", "at least one arm"),
    ({"tasks": ["resnet"]}, "--tasks", "unknown task"),
    ({"severities": {"overflow": [30]}, "steps": 40}, "--steps", "use at least 60 steps"),
    ({"steps": 0}, "--steps", "whole number"),
])
def test_mini_grid_bad_choices_name_the_field(kw, field, words):
    with pytest.raises(SpecError) as err:
        build_fault_grid(mini=True, **kw)
    assert err.value.field == field and words in str(err.value)


def test_mini_fault_job_runs_end_to_end_into_a_temp_folder():
    import gc

    from lbw_sim.bench.fault_job import FaultJob
    from lbw_sim.guard.spec import GuardSpec

    spec = GuardSpec.named("lbw-v1")        # a spec other than the default
    job = FaultJob(task="mlp", severities={"poison": [1e4], "lr_spike": [100]},
                   arms=["adamw", "guard"], steps=40, spec=spec)
    job.start()
    job.join(300)
    snap = job.snapshot()
    assert snap["error"] is None and not snap["running"] and snap["done"] == snap["total"] == 6
    assert snap["last"] and snap["elapsed_s"] > 0
    res = snap["result"]
    s = res.summary
    assert len(s) == len(job.grid.cells()) == 6  # one row per cell
    assert set(map(tuple, s[["fault", "severity"]].drop_duplicates().to_numpy())) == {
        ("none", 0.0), ("lr_spike", 100.0), ("poison", 1e4)}
    clean = s[s["fault"] == "none"].set_index("arm")
    assert (clean["ratio"] == 1.0).all()
    for r in s[s["fault"] != "none"].itertuples():  # the same arm's fault-free run is the ref
        assert r.clean_final_val_loss == pytest.approx(clean.loc[r.arm, "final_val_loss"])
        assert r.fault_start == 20 and r.steps_run == 40
    # what the figures and the table need: every cell's curve, the report files, the spec
    assert len(res.curves.groupby(["fault", "severity", "arm"])) == 6
    assert {"table.md", "summary.csv", "curves.csv.gz"} <= {p.name for p in job.out.iterdir()}
    assert "| poison | 10000 |" in (job.out / "table.md").read_text(encoding="utf-8")
    assert res.spec.hash == spec.hash != GuardSpec.default().hash
    assert json.loads((job.out / "grid.json").read_text())["guard"] == spec.hash
    folder = job.out.parent
    del job, snap
    gc.collect()
    assert not folder.exists()  # the temp folder goes with the job (its browser session)

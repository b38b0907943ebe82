"""The LR stress suite: grid building, the lr_matched control, resume, outputs, CLI errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from lbw_sim.bench.stress import (
    QUICK,
    arm_spec,
    build_grid,
    effective_lr_scales,
    mean_lr_scale,
    reuse_cells,
    run_stress,
)
from lbw_sim.bench.stress_grid import LR_FREE, STRESS_ARMS, SUMMARY_COLUMNS, Cell
from lbw_sim.bench.stress_job import StressJob
from lbw_sim.bench.stress_report import (
    OUTPUT_FILES,
    goals,
    goals_markdown,
    load_results,
    nominal_fractions,
    read_summary,
    report_table,
    worst_ratios,
)
from lbw_sim.cli import main
from lbw_sim.errors import SpecError, TraceError
from lbw_sim.sim.runner import Run
from lbw_sim.viz.stress import write_report

torch.set_num_threads(1)
#: A grid that trains in about a second per arm: 20 steps of a 1-layer, width-16 GPT.
TINY = {"steps": 20, "lrs": [1e-2, 1e-1], "seeds": 1, "schedule": {"warmup": 5},
        "eval_every": 10, "eval_batches": 2, "batch_size": 8,
        "data": {"n_train": 20_000, "n_val": 5_000},
        "model": {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The CLI's process pool on a tiny grid: two spawned workers, ~30-45 s (tests: slow)."""
    out = tmp_path_factory.mktemp("stress") / "tiny"
    grid = build_grid(overrides=TINY)
    result = run_stress(grid, out, workers=2, progress=False)  # the CLI's process pool
    write_report(result, out)
    return grid, result, out


def test_grid_has_every_arm_and_both_controls():
    grid = build_grid()
    assert grid.arms == STRESS_ARMS
    sc = grid.scenario
    cells = grid.cells()
    free = [c for c in cells if c.arm in LR_FREE]  # Prodigy: once per seed at its own lr
    assert len(cells) - len(free) == (len(STRESS_ARMS) - len(LR_FREE)) * len(sc.lrs) * len(
        sc.seeds)
    assert sorted((c.arm, c.lr, c.seed) for c in free) == [
        ("prodigy", 1.0, s) for s in sc.seeds]
    arms = [c.arm for c in cells if c.lr == sc.lrs[0]]
    assert arms.index("guard") < arms.index("lr_matched")
    assert arm_spec("cosine", 0.1).label == "adamw:cosine"


def test_quick_grid_is_short_and_reaches_far_past_adamws_best():
    sc = build_grid(quick=True, seeds=None).scenario
    assert (sc.steps, sc.schedule.warmup, sc.seeds) == (500, 50, (1,))
    assert max(sc.lrs) / 3.16e-2 >= 30  # covers AdamW at its best up to 3.16e-2
    assert build_grid(quick=True, seeds=3).scenario.seeds == (1, 2, 3)  # 0 is for tuning
    assert sc.lrs == tuple(QUICK["lrs"])


def test_lr_matched_replays_the_guards_effective_scale_step_by_step():
    trace = pd.DataFrame({"step": range(8), "lr_scale": [1, 1, 1, 0.5, 0.5, 1.0, 0.25, 1],
                          "skipped": [0, 0, 0, 0, 0, 1, 0, 0],
                          "safety_skip": [0, 0, 0, 0, 0, 0, 0, 1]})
    # a skipped step and a safety skip ran at no LR
    assert effective_lr_scales(trace) == [1, 1, 1, 0.5, 0.5, 0, 0.25, 0]
    # steps 3..7 after a warm-up of 3: 0.5, 0.5, 0 (skipped), 0.25, 0 (safety skip)
    assert mean_lr_scale(trace, warmup=3) == pytest.approx(1.25 / 5)
    assert mean_lr_scale(trace, warmup=50) == pytest.approx(4.25 / 8)  # stopped in warm-up
    # a capped update counts as that step at a lower LR; NaN = the cap did not apply
    trace["update_scale"] = [1, 1, 1, 0.5, float("nan"), 1, 1, 1]
    assert mean_lr_scale(trace, warmup=3) == pytest.approx(1.0 / 5)
    gappy = pd.DataFrame({"step": [0, 2, 3], "lr_scale": [1.0, 0.5, 0.25], "skipped": 0})
    assert effective_lr_scales(gappy) == [1.0, 1.0, 0.5, 0.25]   # step 1 takes step 0's
    spec = arm_spec("lr_matched", 0.1, [1.0, 0.5, 0.25])
    assert (spec.name, spec.schedule, spec.lr) == ("adamw", "lr_matched", 0.1)
    sc = build_grid(overrides=TINY).scenario
    run = Run(sc, spec, 0.1, 0, "cpu")
    sched = [0.1 * sc.schedule.factor(k, sc.steps) for k in range(5)]
    assert [run.base_lr(k) for k in range(5)] == pytest.approx(
        [sched[0], sched[1] * 0.5, sched[2] * 0.25, sched[3] * 0.25, sched[4] * 0.25])
    with pytest.raises(SpecError, match="guard"):
        arm_spec("lr_matched", 0.1)
    with pytest.raises(SpecError, match="add guard"):
        build_grid(overrides=TINY, arms=["adamw", "lr_matched"])
    with pytest.raises(SpecError, match="unknown stress arm"):
        build_grid(overrides=TINY, arms=["adamw", "sgd"])


@pytest.mark.slow
def test_tiny_grid_writes_summary_table_and_figures(tiny_run):
    grid, result, out = tiny_run
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    assert len(summary) == len(grid.cells()) == tiny_cells()  # arms x LRs, one Prodigy
    assert {Cell(r.arm, r.lr, r.seed).key for r in summary.itertuples()} == {
        c.key for c in grid.cells()}
    assert summary["final_val_loss"].notna().all() and (summary["wall_s"] > 0).all()
    by = summary.set_index(["arm", "lr"])
    for lr in TINY["lrs"]:
        scale = by.loc[("guard", lr), "mean_lr_scale"]
        assert 0 <= scale <= 1
        assert by.loc[("lr_matched", lr), "run_lr"] == pytest.approx(lr * scale)
        guard = pd.read_csv(out / f"guard_lr{lr:g}_seed0.csv")
        matched = pd.read_csv(out / f"lr_matched_lr{lr:g}_seed0.csv")
        assert matched["lr"].to_numpy() == pytest.approx(      # the guard's LR, replayed
            (guard["lr"] * effective_lr_scales(guard)[:len(guard)]).to_numpy())
    assert all((out / name).stat().st_size > 0 for name in OUTPUT_FILES)
    table = (out / "table.md").read_text()
    assert "entropy floor" in table and "Worst ratio per arm" in table and "| guard |" in table
    assert "Goals:" in table and "issue" not in table and "| LR | adamw | clip |" in table
    assert len(result.curves) == tiny_cells() * TINY["steps"]
    assert summary.loc[summary["arm"] == "prodigy", "lr"].tolist() == [1.0]
    assert (out / "guard-schedulefree_lr0.01_seed0.csv").is_file()
    assert "prodigy (learning-rate-free, at its default lr 1)" in table


def tiny_cells() -> int:
    """Cells of the tiny grid: every LR-bound arm at each LR, the LR-free ones once."""
    return (len(STRESS_ARMS) - len(LR_FREE)) * len(TINY["lrs"]) + len(LR_FREE)


def test_report_ratios_to_adamws_best():
    summary = pd.DataFrame({"arm": ["adamw", "adamw", "guard", "guard", "guard"],
                            "lr": [0.01, 0.1, 0.01, 0.1, 0.1], "seed": [0, 0, 0, 0, 1],
                            "final_train_loss": 1.0,
                            "final_val_loss": [2.0, 4.0, 2.2, 2.4, math.nan],
                            "diverged_step": [None, 30, None, None, 12],
                            "interventions": 0, "skips": 0, "wall_s": 1.0})
    rep = report_table(summary).set_index(["arm", "lr"])
    assert rep.loc[("adamw", 0.1), "ratio"] == pytest.approx(2.0)
    assert rep.loc[("guard", 0.01), "ratio"] == pytest.approx(1.1)
    assert math.isinf(rep.loc[("guard", 0.1), "ratio"])  # one seed blew up
    assert rep.loc[("guard", 0.1), "diverged"] == 1
    worst = worst_ratios(rep.reset_index()).set_index("arm")
    assert worst.loc["adamw", "worst_ratio"] == pytest.approx(2.0)
    assert math.isinf(worst.loc["guard", "worst_ratio"]) and worst.loc["guard", "at_lr"] == 0.1


@pytest.mark.slow
def test_resume_skips_finished_cells_and_reruns_a_killed_one(tiny_run):
    grid, _, out = tiny_run
    calls = []
    again = run_stress(grid, out, progress=False, callback=lambda *a: calls.append(a))
    assert calls == [] and len(again.summary) == tiny_cells()
    summary = pd.read_csv(out / "summary.csv")
    killed = Cell("clip", 0.1, 0)
    keep = ~((summary["arm"] == killed.arm) & (summary["lr"] == killed.lr))
    summary[keep].to_csv(out / "summary.csv", index=False)
    trace = out / killed.trace_file
    trace.write_text("\n".join(trace.read_text().splitlines()[:6]))  # torn, partial trace
    calls.clear()
    resumed = run_stress(grid, out, progress=False, callback=lambda *a: calls.append(a))
    finished = [row for *_, row in calls if row is not None]
    assert [(r["arm"], r["lr"]) for r in finished] == [("clip", 0.1)]
    assert len(resumed.summary) == tiny_cells()
    assert len(pd.read_csv(trace)) == TINY["steps"]
    with pytest.raises(SpecError, match="another grid"):
        run_stress(build_grid(overrides={**TINY, "steps": 21}), out, progress=False)


@pytest.mark.slow
def test_one_process_gives_the_same_results_as_the_pool(tiny_run, tmp_path):
    _, pooled, pooled_out = tiny_run
    import torch

    grid = build_grid(overrides={**TINY, "lrs": [0.1]}, arms=["adamw", "guard", "lr_matched"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the pool's workers: float reductions depend on threads
    try:
        here = run_stress(grid, tmp_path / "here", progress=False).summary
    finally:
        torch.set_num_threads(threads)
    by = pooled.summary.set_index(["arm", "lr"])
    for row in here.itertuples():
        assert row.final_val_loss == by.loc[(row.arm, row.lr), "final_val_loss"]
        assert row.run_lr == by.loc[(row.arm, row.lr), "run_lr"]
    assert len(load_results(tmp_path / "here").curves) == 3 * TINY["steps"]
    # the pool's workers write nothing: the driver writes the traces they send back
    for arm in ("adamw", "guard", "lr_matched"):
        name = Cell(arm, 0.1, 0).trace_file
        here_t, pooled_t = pd.read_csv(tmp_path / "here" / name), pd.read_csv(pooled_out / name)
        assert len(pooled_t) == TINY["steps"]
        assert list(here_t.columns) == list(pooled_t.columns)
        pd.testing.assert_frame_equal(here_t.drop(columns="wall_time"),
                                      pooled_t.drop(columns="wall_time"))


def test_background_job_reports_progress_and_result():
    job = StressJob(build_grid(overrides={**TINY, "lrs": [0.1]}, arms=["adamw", "guard"]))
    job.start()
    job.join(120)
    snap = job.snapshot()
    assert not snap["running"] and snap["error"] is None
    assert snap["done"] == snap["total"] == 2 and len(snap["result"].summary) == 2


@pytest.mark.parametrize("data, problem", [
    (b"\x00\x01\x02garbage\xff" * 50, "not a"),
    (b"arm,lr\nadamw,0.1\n", "missing column"),
    (b"arm,lr,seed,final_train_loss,final_val_loss,diverged_step,interventions,skips,wall_s\n"
     b"adamw,-1,0,1,1,,0,0,1\n", "lr must be"),
    (b"", "not a CSV"),
])
def test_bad_summary_is_refused_with_a_message(data, problem):
    with pytest.raises(TraceError, match=problem):
        read_summary(data, "up.csv")


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00" * 100)
    (tmp_path / "short.txt").write_text("hi there")
    (tmp_path / "file").write_text("x")
    assert main(["stress", "--seeds", "0"]) == 2
    assert main(["stress", "--quick", "--text", str(tmp_path / "missing.txt")]) == 2
    assert main(["stress", "--quick", "--text", str(tmp_path / "bin.txt")]) == 2
    assert main(["stress", "--quick", "--text", str(tmp_path / "short.txt")]) == 2
    assert main(["stress", "--quick", "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)


def _grid_summary(guard: list[float], clip: list[float]) -> pd.DataFrame:
    """AdamW best at 1e-2 (loss 2.0); LRs in half-decades up to 3.16e-1."""
    lrs = [1e-2, 3.16e-2, 1e-1, 3.16e-1]
    arms = {"adamw": [2.0, 2.5, 3.0, 3.3], "clip": clip, "zclip": [2.1, 2.4, 3.0, 3.3],
            "skipstep": [2.0, 2.5, 3.1, 3.4], "guard": guard}
    rows = [{"arm": a, "lr": lr, "seed": 1, "final_train_loss": v, "final_val_loss": v,
             "diverged_step": None, "interventions": 0, "skips": 0, "wall_s": 1.0}
            for a, vals in arms.items() for lr, v in zip(lrs, vals)]
    return pd.DataFrame(rows)


def test_goals_judge_each_claim_on_the_grid():
    rep = report_table(_grid_summary(guard=[2.01, 2.2, 2.1, 2.15], clip=[2.0, 2.4, 3.0, 3.3]))
    v = goals(rep, {1e-2: 0.99}).set_index("goal")
    assert v.loc["no harm at AdamW's best LR", "measured"] == pytest.approx(1.005)
    assert v.loc["no harm at AdamW's best LR", "met"]
    assert v.loc["rescue at 10x (lr 0.1)", "measured"] == pytest.approx(1.05)
    assert v.loc["rescue at 30x (lr 0.316)", "met"]
    assert v.loc["dominance at every LR >= 3x", "met"]
    assert v.loc["smallest worst ratio of all arms", "met"]
    assert v.loc["quiet: nominal after warm-up, LR <= best", "met"]
    assert v.loc["stretch: better than AdamW at its best LR", "met"] is False
    md = goals_markdown(goals(rep))
    assert "| dominance at every LR >= 3x | 0 | 0 losses | ✔ |" in md


def test_goals_name_what_is_missed():
    rep = report_table(_grid_summary(guard=[2.05, 2.45, 2.3, 2.5], clip=[2.0, 2.4, 3.0, 3.3]))
    v = goals(rep, {1e-2: 0.9}).set_index("goal")
    assert v.loc["no harm at AdamW's best LR", "met"] is False
    assert v.loc["rescue at 30x (lr 0.316)", "met"] is False       # 2.5 / 2.0 = 1.25
    dom = v.loc["dominance at every LR >= 3x"]
    assert dom["met"] is False
    assert dom["detail"] == "clip beats guard at 0.0316; zclip beats guard at 0.0316"
    assert v.loc["quiet: nominal after warm-up, LR <= best", "met"] is False


def test_nominal_fractions_read_the_guard_traces_after_warmup(tmp_path):
    steps = list(range(10))
    regimes = ["watch"] * 5 + ["nominal"] * 4 + ["intervene"]  # 4 of the 5 after warm-up
    pd.DataFrame({"step": steps, "regime": regimes}).to_csv(
        tmp_path / Cell("guard", 0.01, 1).trace_file, index=False)
    summary = _grid_summary(guard=[2.0] * 4, clip=[2.0] * 4)
    assert nominal_fractions(tmp_path, summary, warmup=5) == {0.01: pytest.approx(0.8)}


def test_a_tie_on_the_worst_ratio_is_missed_and_named():
    """lr_matched runs the guard's own mean LR: where the guard is quiet they are one run."""
    guard = [2.01, 2.2, 2.1, 2.15]
    summary = _grid_summary(guard=guard, clip=[2.0, 2.4, 3.0, 3.3])
    matched = summary[summary["arm"] == "guard"].assign(arm="lr_matched")
    matched.loc[matched["lr"] != 3.16e-2, "final_val_loss"] = 2.0   # better elsewhere
    v = goals(report_table(pd.concat([summary, matched])), {}).set_index("goal")
    row = v.loc["smallest worst ratio of all arms"]
    assert row["met"] is False and row["measured"] == pytest.approx(1.1)
    assert row["detail"] == ("lr_matched ties (1.100 at lr 0.0316; guard's worst at lr 0.0316); "
                             "rivals' smallest worst ratio 1.650 (adamw)")


@pytest.mark.slow
def test_loaded_results_carry_quiet_fractions_and_curves_stay_in_view(tiny_run):
    from lbw_sim.viz import stress_curves_figure

    grid, _, out = tiny_run
    loaded = load_results(out)
    warmup = grid.scenario.schedule.warmup
    assert warmup > 0 and loaded.nominal == nominal_fractions(out, loaded.summary, warmup)
    assert set(loaded.nominal) == set(TINY["lrs"])
    goal = goals(report_table(loaded.summary), loaded.nominal).set_index("goal")
    assert "quiet: nominal after warm-up, LR <= best" in goal.index
    # a text run has no entropy floor: the y axis must still reach the lowest curve
    fig = stress_curves_figure(loaded.curves, {"unigram": 99.0})
    lowest = min(min(t.y) for t in fig.data if len(t.y))
    assert fig.layout.yaxis.range[0] <= lowest


def test_every_guard_arm_writes_the_guards_columns_and_its_mean_lr_scale(tmp_path):
    """`guard:schedulefree` is a guard arm (built around the spec): its trace carries the
    regime, cause and rollback columns filled, and its summary row the mean LR scale."""
    grid = build_grid(overrides={**TINY, "steps": 6, "lrs": [1e-2]},
                      arms=["adamw", "guard:schedulefree"])
    result = run_stress(grid, tmp_path, progress=False)
    seed = int(result.summary["seed"].iloc[0])
    trace = pd.read_csv(tmp_path / Cell("guard:schedulefree", 1e-2, seed).trace_file)
    assert {"regime", "cause", "rollback", "momentum_scale"} <= set(trace.columns)
    assert trace["regime"].notna().all() and trace["rollback"].notna().all()
    plain = pd.read_csv(tmp_path / Cell("adamw", 1e-2, seed).trace_file)
    assert "regime" not in plain.columns
    rows = result.summary.set_index("arm")
    assert rows.loc["guard:schedulefree", "mean_lr_scale"] == pytest.approx(1.0)
    assert pd.isna(rows.loc["adamw", "mean_lr_scale"])


def test_reuse_takes_the_guard_free_cells_of_the_same_grid_under_another_spec(tmp_path):
    grid = build_grid(overrides=TINY, arms=["adamw", "cosine", "guard"])   # + lr_matched
    other = build_grid(overrides={**TINY, "guard": "lbw-active"}, arms=["adamw", "guard"])
    src = tmp_path / "src"
    src.mkdir()
    (src / "grid.json").write_text(json.dumps(other.fingerprint(), default=str))
    rows = [{**dict.fromkeys(SUMMARY_COLUMNS, 0.0), "arm": c.arm, "lr": c.lr, "seed": c.seed,
             "final_val_loss": 1.0 + i} for i, c in enumerate(other.cells())]
    pd.DataFrame(rows).to_csv(src / "summary.csv", index=False)
    for c in other.cells():
        (src / c.trace_file).write_text(f"step,loss\n0,{c.arm}\n")
    out = tmp_path / "out"
    assert reuse_cells(grid, out, src) == len(TINY["lrs"])         # adamw's cells only
    got = pd.read_csv(out / "summary.csv")
    assert set(got["arm"]) == {"adamw"}
    want = pd.DataFrame(rows).query("arm == 'adamw'")["final_val_loss"].tolist()
    assert got["final_val_loss"].tolist() == want
    assert sorted(p.name for p in out.glob("*_seed*.csv")) == sorted(
        c.trace_file for c in grid.cells() if c.arm == "adamw")
    assert reuse_cells(grid, out, src) == 0                        # already there
    longer = build_grid(overrides={**TINY, "steps": 21}, arms=["adamw", "guard"])
    with pytest.raises(SpecError, match="differs in steps"):
        reuse_cells(longer, tmp_path / "out2", src)

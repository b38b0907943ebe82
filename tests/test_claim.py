"""The Stress page's claim view and side-by-side specs, from tiny synthetic suite folders:
the table, the sentences and the LR-matched control are computed from the numbers given."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lbw_sim.bench.stress_grid import summary_frame
from lbw_sim.guard.spec import DEFAULT_SPEC, GuardSpec
from lbw_sim.studio.claim import (
    ACTIVE_SPEC,
    ClaimTask,
    absent_text,
    claim_cells,
    claim_grid,
    claim_summary,
    committed_suites,
    control_lines,
    goals_side_by_side,
    load_claim,
    lr_matched_control,
    missed_lines,
    spec_mismatch,
    task_sentence,
)
from lbw_sim.studio.results import spec_ref

BEST_LR, START = 0.01, 2.5
FACTORS = (0.1, 1.0, 10.0, 31.6, 100.0)
#: AdamW's final loss per factor: best at 1x, destroyed (above the start) at 100x.
ADAMW = {0.1: 1.4, 1.0: 1.0, 10.0: 1.3, 31.6: 1.9, 100.0: 3.1}


def summary(arms: dict[str, dict[float, float]], prodigy: float = 1.05,
            seeds=(1, 2, 3)) -> pd.DataFrame:
    """A fine-tune summary: each arm's final val loss per LR factor, +-0.001 per seed."""
    rows = []
    for arm, by in arms.items():
        for f, loss in by.items():
            for s in seeds:
                rows.append(_row(arm, float(f"{BEST_LR * f:.3g}"), s, loss + 0.001 * (s - 2)))
    rows += [_row("prodigy", 1.0, s, prodigy) for s in seeds]
    return summary_frame(rows)


def _row(arm, lr, seed, loss):
    return {"arm": arm, "lr": lr, "seed": seed, "final_train_loss": loss,
            "final_val_loss": loss, "diverged_step": None, "interventions": 0,
            "skips": 0, "wall_s": 1.0, "start_val_loss": START}


def write_folder(folder: Path, task_summaries: dict[str, pd.DataFrame], spec: str,
                 text: tuple[str, ...] = ("won",)) -> None:
    """A suite folder as `run_suite` leaves it (summaries only): suite.json, per task a
    grid.json recording the guard's hash (and text data for the tasks in `text`) and a
    summary.csv."""
    folder.mkdir(parents=True)
    (folder / "suite.json").write_text(json.dumps(
        {"tasks": [{"name": t} for t in task_summaries]}), encoding="utf-8")
    for task, s in task_summaries.items():
        (folder / task).mkdir()
        (folder / task / "grid.json").write_text(
            json.dumps({"guard": GuardSpec.named(spec).hash,
                        "data": "text:logbook.txt" if task in text else "teacher"}),
            encoding="utf-8")
        s.to_csv(folder / task / "summary.csv", index=False)


def arms(guard: dict[float, float], matched: dict[float, float]) -> dict:
    return {"adamw": ADAMW, "cosine": {f: v * 0.99 for f, v in ADAMW.items()},
            "guard": guard, "lr_matched": matched,
            "schedulefree": {f: 1.02 for f in FACTORS}}


#: The default guard follows AdamW; the active controller rescues every high LR; in task
#: "won" lr_matched trails the controller, in task "lost" it beats it everywhere.
QUIET = {f: v * 1.001 for f, v in ADAMW.items()}
ACTIVE = {0.1: 1.35, 1.0: 0.98, 10.0: 1.05, 31.6: 1.06, 100.0: 1.08}
WORSE = {f: v + 0.05 for f, v in ACTIVE.items()}
BETTER = {f: v - 0.05 for f, v in ACTIVE.items()}


@pytest.fixture()
def results(tmp_path):
    write_folder(tmp_path / "finetune", {"won": summary(arms(QUIET, QUIET)),
                                         "lost": summary(arms(QUIET, QUIET))}, DEFAULT_SPEC)
    write_folder(tmp_path / "finetune_active", {"won": summary(arms(ACTIVE, WORSE)),
                                                "lost": summary(arms(ACTIVE, BETTER))},
                 ACTIVE_SPEC)
    return tmp_path


def test_claim_table_reads_ratios_and_marks_cells_above_the_start(results):
    tasks = load_claim(results / "finetune", results / "finetune_active")
    assert list(tasks) == ["won", "lost"]          # suite.json order
    ct = tasks["won"]
    assert (ct.default_ref.name, ct.active_ref.name) == (DEFAULT_SPEC, ACTIVE_SPEC)
    cells = claim_cells(ct)
    assert sorted(cells["factor"].unique()) == [1.0, 10.0, 31.6, 100.0]   # 0.1x not shown
    assert claim_cells(ct, (1.0, 1000.0))["factor"].unique().tolist() == [1.0]  # no 1000x LR
    # Prodigy's own lr 1.0 is 100x this grid's best 0.01: no row of its own there
    short = load_claim(None, None)
    assert short == {}
    d = ct.default
    trimmed = ClaimTask("t", d[(d["lr"] < 0.5) | (d["arm"] == "prodigy")], None, ct.default_ref)
    assert "prodigy" in set(trimmed.default["arm"])
    assert 100.0 not in set(claim_cells(trimmed)["factor"])
    c = cells.set_index(["factor", "column"])
    assert c.loc[(100.0, "AdamW"), "ratio"] == pytest.approx(3.1)
    assert c.loc[(100.0, ACTIVE_SPEC), "ratio"] == pytest.approx(1.08)
    assert c.loc[(1.0, "Prodigy"), "ratio"] == pytest.approx(1.05)
    above = set(cells.loc[cells["above_start"].astype(bool), "column"])
    assert above == {"AdamW", "cosine", DEFAULT_SPEC}          # 3.1 / 3.069 / 3.103 > 2.5
    grid = claim_grid(cells)
    assert list(grid.columns) == ["× AdamW's best LR", "AdamW", "cosine", DEFAULT_SPEC,
                                  ACTIVE_SPEC, "lr_matched", "Schedule-Free", "Prodigy"]
    row = grid.set_index("× AdamW's best LR").loc["100×"]
    assert row["AdamW"] == "3.100× ▲" and row[ACTIVE_SPEC] == "1.080×"


def test_claim_sentences_follow_the_numbers(results):
    tasks = load_claim(results / "finetune", results / "finetune_active")
    text = task_sentence(tasks["won"], claim_cells(tasks["won"]))
    assert "started from 2.5000" in text and "At 100× that LR AdamW ended at 3.10×" in text
    assert "above where it started" in text and f"{ACTIVE_SPEC} 1.08×" in text
    lines = claim_summary(tasks)
    # a language model's loss gap read as perplexity too: exp(0.98 - 1.0) - 1 = -2.0 %
    assert "won 0.980× (perplexity -2.0%)" in lines[0] and "lost 0.980×." in lines[0]
    assert "ends below AdamW on 2 of 2 tasks" in lines[0]
    # AdamW above 1.10x at 10x, 31.6x, 100x on both tasks: 6 cells, the active rescues all
    assert "6 cells" in lines[1] and f"{ACTIVE_SPEC} 6 of 6" in lines[1]
    assert f"{DEFAULT_SPEC} 0 of 6" in lines[1]
    assert f"{ACTIVE_SPEC} 0 of 8" in lines[2] and f"{DEFAULT_SPEC} 2 of 8" in lines[2]


def test_lr_matched_control_says_yes_where_the_controller_wins_and_no_where_it_loses(results):
    tasks = load_claim(results / "finetune", results / "finetune_active")
    won, lost = lr_matched_control(tasks["won"]), lr_matched_control(tasks["lost"])
    assert won["beats"].all() and not lost["beats"].any()
    assert won["margin"].to_numpy() == pytest.approx([0.05] * 4)
    assert not won["within_noise"].any()            # 0.05 apart, seeds +-0.001
    by = dict(zip(tasks, control_lines(tasks)))
    assert "**yes**" in by["won"] and "**no**" in by["lost"]
    assert "100×: 1.0800 vs 1.1300" in by["won"] and "100×: 1.0800 vs 1.0300" in by["lost"]


def test_a_close_race_is_called_partial_and_within_noise(tmp_path):
    mixed = {f: v + {1.0: 0.0005, 10.0: 0.0}.get(f, -0.05) for f, v in ACTIVE.items()}
    write_folder(tmp_path / "a", {"t": summary(arms(ACTIVE, mixed))}, ACTIVE_SPEC)
    ct = load_claim(None, tmp_path / "a")["t"]
    quiet_only = load_claim(tmp_path / "a", None)
    assert "run of this task is not here" in control_lines(quiet_only)[0]
    control = lr_matched_control(ct)
    assert int(control["beats"].sum()) == 1
    assert control.set_index("factor").loc[1.0, "within_noise"]
    line = control_lines({"t": ct})[0]
    assert "**at 1 of 4 LRs**" in line and "1×: 0.9800 vs 0.9805 (within one seed std)" in line
    assert "10×: 1.0500 vs 1.0500 (equal)" in line and "31.6×: 1.0600 vs 1.0100;" in line


def test_absent_folders_are_named_and_nothing_is_read(tmp_path):
    folders = committed_suites(tmp_path)
    assert [f.name for f in folders] == ["suite", "suite_active", "finetune", "finetune_active"]
    text = absent_text(folders)
    for name in ("suite", "suite_active", "finetune", "finetune_active"):
        assert f"/{name}` (" in text
    assert (f"`python -m lbw_sim stress --suite --finetune --spec {ACTIVE_SPEC} --out "
            f"{tmp_path / 'finetune_active'}`") in text
    assert f"`python -m lbw_sim stress --suite --out {tmp_path / 'suite'}`" in text
    assert committed_suites()[0].shown == "benchmarks/results/suite"
    assert load_claim(tmp_path / "finetune", tmp_path / "finetune_active") == {}
    assert claim_summary({}) == ["AdamW needed no rescue at 10×, 31.6× or 100× on any task "
                                 "measured."]
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "suite.json").write_text('{"tasks": []}')
    assert "/suite` (" not in absent_text(committed_suites(tmp_path))


def test_side_by_side_goals_name_each_spec_and_warn_on_a_wrong_folder(results):
    table = pd.DataFrame([{"goal": "no harm", "met_tasks": 2, "judged_tasks": 2, "met": True,
                           "missed_on": ""},
                          {"goal": "rescue at 10x", "met_tasks": 0, "judged_tasks": 2,
                           "met": False, "missed_on": "a, b"}])
    side = goals_side_by_side({"lbw-adaptive (x)": table, "lbw-active (y)": table})
    by = side.set_index("goal")
    assert by.loc["no harm", "lbw-active (y)"] == "2/2 ✔"
    assert by.loc["rescue at 10x", "lbw-adaptive (x)"] == "0/2 ✘"
    assert missed_lines({"lbw-active (y)": table}) == [
        "lbw-active (y): *rescue at 10x* missed on a, b"]
    assert by.loc["dominance", "lbw-active (y)"] == "n/a"
    active = committed_suites(results)[3]
    ref = spec_ref(GuardSpec.named(DEFAULT_SPEC).hash)
    assert spec_mismatch(active, {"won": ref}).startswith("`finetune_active` is meant to hold")
    assert spec_mismatch(active, {"won": spec_ref(GuardSpec.named(ACTIVE_SPEC).hash)}) == ""


# --- the Stress page (AppTest) -----------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def stress_page(monkeypatch, results_dir: Path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LBW_RESULTS_DIR", str(results_dir))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    return at.switch_page("pages/stress.py").run()


def test_stress_page_opens_on_both_specs_and_shows_the_claim(results, monkeypatch):
    at = stress_page(monkeypatch, results)
    assert not at.exception and not at.error
    assert at.radio(key="stress_source").value == "Default and active controller"
    absent = at.info[0].value                      # the from-scratch folders are not there
    assert "/suite` (" in absent and "/suite_active` (" in absent
    assert "/finetune` (" not in absent and "/finetune_active` (" not in absent
    side = next(d.value for d in at.dataframe if "goal" in d.value.columns)
    for name in (DEFAULT_SPEC, ACTIVE_SPEC):
        assert f"{name} ({GuardSpec.named(name).hash})" in side.columns
    at = at.radio(key="stress_source").set_value("The paper's claim").run()
    assert not at.exception and not at.error
    assert any("arXiv 2605.19008" in m.value for m in at.markdown)
    grids = [d.value for d in at.dataframe if "× AdamW's best LR" in d.value.columns]
    assert len(grids) == 2 and "3.100× ▲" in set(grids[0]["AdamW"])
    control = next(m.value for m in at.markdown if "does lbw-active beat" in m.value)
    assert "won: does" in control and "lost: does" in control
    assert "**yes**" in control and "**no**" in control
    assert len(at.get("plotly_chart")) == 1


def test_stress_page_says_plainly_when_no_committed_folder_is_there(tmp_path, monkeypatch):
    at = stress_page(monkeypatch, tmp_path)
    assert not at.exception and not at.error
    assert "Not in this checkout yet" in at.info[0].value
    at = at.radio(key="stress_source").set_value("The paper's claim").run()
    assert not at.exception and not at.error
    assert "nothing to test the claim against" in at.warning[0].value
    assert not at.get("plotly_chart")


def test_the_active_controller_is_named_as_what_it_is():
    active = spec_ref(GuardSpec.named(ACTIVE_SPEC).hash)
    assert active.name == ACTIVE_SPEC and "active controller" in active.label
    assert "not the default" in active.role and not active.retired
    assert spec_ref(GuardSpec.named(DEFAULT_SPEC).hash).role == "the shipped default"

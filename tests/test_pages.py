"""Streamlit AppTest for each page's logic: edits, validation, imports, uploads, comparisons.

AppTest runs the scripts without a browser (no chart rendering; see test_e2e.py for that).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lbw_sim.guard.spec import GuardSpec

ROOT = Path(__file__).resolve().parents[1]
GOOD_CSV = b"step,loss,grad_norm\n" + b"".join(
    f"{i},{2.0 + 0.001 * (i % 7)},{1.0 + 0.01 * (i % 5)}\n".encode() for i in range(300))


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    return at.switch_page(f"pages/{name}.py").run()


def edit(at: AppTest, key: str, rows: dict[int, dict]) -> AppTest:
    """Seed a keyed data_editor's edit state the way the browser would send it."""
    at.session_state[key] = {"edited_rows": rows, "added_rows": [], "deleted_rows": []}
    return at.run()


#: A read-only table is found by a column only it has (st.dataframe keys are not exposed).
TABLES = {"preview_fired": "cause", "regimes_fired": "cause", "designer_diff": "setting",
          "regimes_time": "share", "replay_summary": "min LR scale",
          "traj_summary": "left the window", "replay_scores": "recall",
          "home_demo_actions": "cause"}


def frame(at: AppTest, key: str):
    column = TABLES[key]
    return next(d.value for d in at.dataframe
                if d.editing_mode == "read_only" and column in d.value.columns)


def charts(at: AppTest, kind: str = "plotly_chart") -> list:
    return at.get(kind)


# --- Guard designer --------------------------------------------------------------------------

def test_designer_renders_tables_diagram_and_preview():
    at = page("designer")
    assert not at.exception
    assert {d.key for d in at.data_editor} >= {"ed_thresholds_0", "ed_regimes_0",
                                               "ed_transitions_0", "ed_bounds_0"}
    assert charts(at, "graphviz_chart") and charts(at)
    assert at.session_state["spec"].hash == GuardSpec.default().hash
    assert "No changes yet." in [c.value for c in at.caption]


def test_edited_threshold_changes_the_preview_regimes():
    at = page("designer")
    before = frame(at, "preview_fired")
    names = list(GuardSpec.default().thresholds)
    touchy = {"calm_z": 0.5, "watch_z": 0.75, "spike_z": 1.0}   # inside the healthy noise
    at = edit(at, "ed_thresholds_0", {names.index(k): {"value": f"{v:g}"}
                                      for k, v in touchy.items()})
    assert not at.exception and not at.error
    spec = at.session_state["spec"]
    assert {k: spec.thresholds[k] for k in touchy} == touchy
    after = frame(at, "preview_fired")
    assert len(after) > len(before)
    diff = frame(at, "designer_diff")
    changed = [k for k, v in touchy.items() if GuardSpec.default().thresholds[k] != v]
    assert changed and list(diff["setting"]) == sorted(f"thresholds.{k}" for k in changed)


def test_invalid_edit_is_reported_and_last_valid_spec_kept():
    at = page("designer")
    th = GuardSpec.default().thresholds       # an exit above every entry threshold
    at = edit(at, "ed_thresholds_0", {list(th).index("calm_z"): {
        "value": f"{2 * max(th.values()):g}"}})
    assert not at.exception
    messages = " ".join(e.value for e in at.error)
    assert "transitions." in messages and "hysteresis" in messages
    assert at.session_state["spec"].hash == GuardSpec.default().hash


def test_unknown_regime_in_a_transition_names_the_field():
    at = page("designer")
    at = edit(at, "ed_transitions_0", {3: {"to": "nowhere"}})
    name = GuardSpec.default().transitions[3].name        # the table's row 3
    assert any(f"transitions.{name}.to" in e.value for e in at.error)
    assert at.session_state["spec"].hash == GuardSpec.default().hash


def test_malformed_yaml_import_shows_error_and_keeps_the_design():
    at = page("designer")
    at.text_area(key="spec_paste").input("regimes: [unclosed\n  - : :")
    at = at.button(key="spec_paste_load").click().run()
    assert not at.exception
    assert any("Import failed" in e.value and "YAML" in e.value for e in at.error)
    assert at.session_state["spec"].hash == GuardSpec.default().hash
    at.file_uploader(key="spec_upload").upload("bad.yaml", b"name: x\nregimes: 3\n",
                                               "application/x-yaml")
    at = at.run()
    assert any("Import failed" in e.value and "bad.yaml" in e.value for e in at.error)
    assert at.session_state["spec"].hash == GuardSpec.default().hash


def test_valid_yaml_import_replaces_the_design():
    spec = GuardSpec.default().with_values({"thresholds.spike_z": 8.0}).renamed("imported")
    at = page("designer")
    at.file_uploader(key="spec_upload").upload("mine.yaml", spec.to_yaml().encode(),
                                               "application/x-yaml")
    at = at.run()
    assert not at.exception and not at.error
    assert at.session_state["spec"].name == "imported"
    assert {d.key for d in at.data_editor} >= {"ed_thresholds_1"}  # editors reset


# --- Regimes ---------------------------------------------------------------------------------

def test_regimes_page_shows_signals_controls_transitions():
    at = page("regimes")
    assert not at.exception
    assert len(charts(at)) == 2
    fired = frame(at, "regimes_fired")
    spec = GuardSpec.default()              # the example's spike cuts the LR, its NaNs skip
    led_to = [spec.regimes[r] for r in fired["regime"]]
    assert any(r.lr_scale < 1 and not r.skip for r in led_to)
    assert any(r.skip and not r.rollback for r in led_to)
    assert fired["cause"].str.contains(r"\(for \d+\)").all()
    share = frame(at, "regimes_time")["share"].sum()
    assert share == pytest.approx(1.0)


def test_regimes_uses_the_designers_spec():
    at = page("designer")
    th = GuardSpec.default().thresholds
    between = (th["watch_z"] + th["spike_z"]) / 2   # keeps watch_z < spike_z < grad_spike_z
    at = edit(at, "ed_thresholds_0", {list(th).index("spike_z"): {"value": f"{between:g}"}})
    edited = at.session_state["spec"]
    assert edited.thresholds["spike_z"] == between and edited.hash != GuardSpec.default().hash
    at = at.switch_page("pages/regimes.py").run()
    assert any(edited.hash in c.value for c in at.caption)


# --- Replay ----------------------------------------------------------------------------------

def test_replay_compares_two_specs_on_an_example():
    at = page("replay")
    assert not at.exception
    summary = frame(at, "replay_summary")
    assert len(summary) == 2 and len(charts(at)) == 2


def test_replay_scores_specs_against_labelled_incidents():
    at = page("replay")
    scores = frame(at, "replay_scores")          # the example's own incidents
    assert len(scores) == 2 and {"recall", "precision", "out_share"} <= set(scores.columns)
    assert scores["recall"].iloc[0] == 1.0       # the default spec catches both incidents
    at.file_uploader(key="replay_labels").upload("labels.csv", b"\x00\xff garbage")
    at = at.run()
    assert not at.exception and any("labels" in e.value for e in at.error)
    assert len(frame(at, "replay_summary")) == 2  # the rest of the page still works
    at.file_uploader(key="replay_labels").clear()
    at.file_uploader(key="replay_labels").upload("labels.csv", b"start,end\n1200,1202\n")
    at = at.run()
    assert not at.exception and not at.error
    assert frame(at, "replay_scores")["recall"].iloc[0] == 1.0


def test_bad_upload_shows_error_and_page_stays_usable():
    at = page("replay")
    at = at.radio(key="replay_source").set_value("Upload a log").run()
    at.file_uploader(key="replay_upload").upload("weights.bin", os.urandom(4096))
    at = at.run()
    assert not at.exception
    assert any("Could not read the upload" in e.value for e in at.error)
    at.file_uploader(key="replay_upload").clear()
    at.file_uploader(key="replay_upload").upload("run.csv", GOOD_CSV, "text/csv")
    at = at.run()
    assert not at.exception and not at.error
    assert len(frame(at, "replay_summary")) == 2
    at.radio(key="replay_source").set_value("Built-in example")
    at = at.run()
    assert not at.exception and len(charts(at)) == 2


def test_a_failed_upload_after_a_good_one_keeps_the_good_log_and_says_so():
    at = page("replay")
    at = at.radio(key="replay_source").set_value("Upload a log").run()
    at.file_uploader(key="replay_upload").upload("run.csv", GOOD_CSV, "text/csv")
    at = at.run()
    at.file_uploader(key="replay_upload").clear()
    at.file_uploader(key="replay_upload").upload("weights.bin", os.urandom(4096))
    at = at.run()
    assert not at.exception
    assert any("Could not read the upload" in e.value and "Still using your log **run.csv**"
               in e.value for e in at.error)
    assert len(frame(at, "replay_summary")) == 2            # the page goes on with run.csv
    assert at.radio(key="replay_source").value == "Upload a log"


def test_upload_without_known_columns_asks_for_a_mapping():
    at = page("replay")
    at = at.radio(key="replay_source").set_value("Upload a log").run()
    data = b"it,my_objective,gn\n" + b"".join(f"{i},{2.0 + (i % 3) * 0.01},1.0\n".encode()
                                             for i in range(200))
    at.file_uploader(key="replay_upload").upload("odd.csv", data, "text/csv")
    at = at.run()
    assert not at.exception and at.warning
    at.selectbox(key="replay_upload_map_step").set_value("it")
    at.selectbox(key="replay_upload_map_loss").set_value("my_objective")
    at = at.button[-1].click().run()  # the form's submit button
    assert not at.exception
    assert len(frame(at, "replay_summary")) == 2


# --- Trajectories and Home -------------------------------------------------------------------

def test_trajectories_edge_of_stability_plain_leaves_guard_holds():
    at = page("trajectories")
    assert not at.exception and charts(at)
    summary = frame(at, "traj_summary")
    high = summary[summary["lr"] > 0.2].set_index("arm")
    assert high.loc["plain", "left the window"]
    assert not high.loc["guarded", "left the window"]
    assert any("(here: 0.35)" in i.value and "LR 0.1:" in i.value for i in at.info)
    at.multiselect(key="traj_lrs_edge_of_stability").set_value([0.1]).run()
    assert any("none of the chosen LRs" in i.value for i in at.info)     # follows the choice


def test_home_demo_runs_and_shows_both_outcomes():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at = at.button(key="home_demo").click().run()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["Unguarded"].startswith("diverged")
    assert values["Guarded"] == "held stable"
    # the demo teaches what it claims: while the plain run is healthy (LR below the edge,
    # steps < 17) the guarded loss is as good; the chart shows the signal and its threshold
    runs, _ = at.session_state["home_demo_runs"]
    plain, guarded = (runs[runs["arm"] == a].set_index("step")["loss"] for a in ("plain",
                                                                                  "guarded"))
    assert (guarded.loc[1:16] <= 1.1 * plain.loc[1:16]).all()
    acts = frame(at, "home_demo_actions")
    assert "update cap" in set(acts["transition"]) and "too_fast_1" in set(acts["transition"])
    assert any("update/weight ratio" in c.value for c in at.caption)


# --- Live training ---------------------------------------------------------------------------

def wait_for(cond, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_live_page_renders_controls_and_device():
    at = page("live")
    assert not at.exception and not at.error
    assert at.selectbox(key="live_scenario").value == "quickstart"
    assert any("Runs on" in c.value and "cpu" in c.value for c in at.caption)
    assert at.button(key="live_stop").disabled and not at.button(key="live_start").disabled
    assert "live_session" not in at.session_state


def test_live_start_thresholds_stop():
    """Start → a session in session_state; a threshold applied mid-run; Stop ends the thread.

    AppTest does not run `run_every` fragments; the browser test covers the live redraw."""
    at = page("live")
    at.number_input(key="live_steps_quickstart").set_value(20_000)
    at = at.button(key="live_start").click().run()
    assert not at.exception
    live = at.session_state["live_session"]
    assert live.running and live.steps == 20_000 and at.button(key="live_start").disabled
    wait_for(lambda: len(live.snapshot().guarded) >= 5)
    at = at.run()
    assert int(next(m.value for m in at.metric if m.label == "Step")) >= 5
    at.number_input(key=f"live_thr_{live.thread.name}_spike_z").set_value(8.0)
    at = next(b for b in at.button if b.label == "Apply thresholds").click().run()
    assert not at.exception and not at.error and live.spec.thresholds["spike_z"] == 8.0
    wait_for(lambda: live.snapshot().spec_changes)
    at = at.button(key="live_stop").click().run()
    assert not at.exception
    assert live.status.state == "stopped" and not live.thread.is_alive()
    assert not at.button(key="live_start").disabled


def test_live_run_that_finishes_leaves_no_thread_and_can_restart():
    at = page("live")
    at.number_input(key="live_steps_quickstart").set_value(20)
    at = at.button(key="live_start").click().run()
    first = at.session_state["live_session"]
    first.thread.join(60)
    at = at.run()  # in the browser the fragment sees the end and reruns the page
    assert first.status.state == "finished" and not first.thread.is_alive()
    assert any("Finished" in s.value for s in at.success)
    assert not at.button(key="live_start").disabled and at.button(key="live_stop").disabled
    at = at.button(key="live_start").click().run()
    second = at.session_state["live_session"]
    assert second is not first and second.running
    assert second.stop() and not at.exception


def _chart_dataset(chart, name: str):
    import pyarrow as pa

    data, = (d.data.data for d in chart.proto.datasets if d.name == name)
    return pa.ipc.open_stream(data).read_pandas()


def test_live_page_marks_where_the_plain_run_died():
    """Quickstart's NaN gradients at step 80 kill the plain run: the drawn charts say so
    (label and marker data), every regime of the spec is in the legend's scale, and the
    legends sit below the plot."""
    import json

    at = page("live")
    at.number_input(key="live_steps_quickstart").set_value(140)
    at = at.button(key="live_start").click().run()
    live = at.session_state["live_session"]
    live.thread.join(120)
    at = at.run()
    assert not at.exception and live.status.state == "finished"
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3
    for chart in charts[:2]:
        ends = _chart_dataset(chart, "ends")
        assert ends["label"].tolist() == ["plain: non-finite from step 80, stopped at step 130"]
    loss = json.loads(charts[0].proto.spec)
    colors = [lay["encoding"]["color"] for lay in loss["layer"]
              if (lay["encoding"].get("color") or {}).get("legend")]
    assert [c["legend"]["orient"] for c in colors] == ["bottom", "top"]  # outside the plot
    assert colors[0]["scale"]["domain"] == list(live.spec.regimes)

# --- Stress suite ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stress_runs(tmp_path_factory):
    """A runs folder holding one tiny finished grid, as `python -m lbw_sim stress` leaves it."""
    from test_stress import TINY

    from lbw_sim.bench.stress import build_grid, run_stress
    from lbw_sim.viz.stress import write_report

    root = tmp_path_factory.mktemp("runs")
    grid = build_grid(overrides=TINY, arms=["adamw", "clip", "guard"])
    write_report(run_stress(grid, root / "tiny", progress=False), root / "tiny")
    return root


def test_stress_page_loads_results_from_the_runs_folder(stress_runs, monkeypatch):
    monkeypatch.setenv("LBW_RUNS_DIR", str(stress_runs))
    at = page("stress")
    assert not at.exception
    at = at.radio(key="stress_source").set_value("Earlier results (runs/)").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="stress_folder").options == ["tiny"]
    assert len(charts(at)) == 3  # loss vs LR, divergence + interventions, curves
    rep = next(d.value for d in at.dataframe if "ratio" in d.value.columns)
    assert set(rep["arm"]) == {"adamw", "clip", "guard"} and len(rep) == 6
    verdict = next(d.value for d in at.dataframe if "goal" in d.value.columns)
    assert verdict["goal"].iloc[0] == "no harm at AdamW's best LR"
    assert set(verdict["met"]) <= {"✔", "✘", "n/a"} and verdict["measured"].notna().any()
    import json

    ran = json.loads((stress_runs / "tiny" / "grid.json").read_text())["guard"]
    assert f"`{ran}`" in at.info[0].value  # the takeaway names the spec that ran it


def test_stress_page_opens_on_the_suite_and_names_the_spec_of_every_result():
    import re

    from lbw_sim.bench.stress import MINI
    from lbw_sim.bench.stress_report import COMMITTED, read_summary

    at = page("stress")
    assert not at.exception and not at.error
    assert at.radio(key="stress_source").value == "Default and active controller"
    default = GuardSpec.default()
    side = next(d.value for d in at.dataframe if "goal" in d.value.columns)
    assert f"{default.name} ({default.hash})" in side.columns   # the committed suite's spec
    at = at.radio(key="stress_source").set_value("Task suite").run()
    assert not at.exception and not at.error
    assert all(default.name in i.value and default.hash in i.value for i in at.info)
    at = at.radio(key="stress_source").set_value("The committed Tiny Shakespeare grid").run()
    assert not at.exception and not at.error
    committed = read_summary(COMMITTED / "summary.csv")
    rep = next(d.value for d in at.dataframe if "ratio" in d.value.columns)
    assert set(rep["arm"]) == set(committed["arm"]) and len(charts(at)) >= 2
    v1 = GuardSpec.named("lbw-v1")
    takeaway = at.info[0].value
    assert "lbw-v1" in takeaway and v1.hash in takeaway and "retired" in takeaway
    assert all(v1.hash in m.value for m in at.markdown if m.value.startswith("**Goals"))
    # the radio's help names only the arms the miniature grid runs
    helptext = at.radio(key="stress_source").help
    assert all(a in helptext for a in MINI["arms"]) and "ZClip" not in helptext
    # no internal words on any page
    for path in [*(ROOT / "pages").glob("*.py"), ROOT / "app.py"]:
        shown = " ".join(re.findall(r'"[^"\n]*"', path.read_text(encoding="utf-8")))
        assert not re.search(r"\bissue \d", shown, re.I), path.name


def test_stress_events_figure_has_no_empty_divergence_panel():
    import pandas as pd

    from lbw_sim.viz.stress import stress_events_figure

    rep = pd.DataFrame({"arm": ["adamw", "guard"], "lr": [0.01, 0.01],
                        "first_diverged_step": [None, None], "interventions": [0.0, 3.0]})
    fig = stress_events_figure(rep)
    assert "no cell diverged" in fig.layout.annotations[0].text
    assert {t.xaxis for t in fig.data} == {"x"}          # one panel only
    rep.loc[0, "first_diverged_step"] = 40
    assert {t.xaxis for t in stress_events_figure(rep).data} == {"x", "x2"}


def test_miniature_grid_can_be_shrunk_for_a_loaded_machine(monkeypatch):
    from lbw_sim.bench.stress import MINI
    from lbw_sim.bench.stress_job import mini_grid

    assert mini_grid().scenario.steps == MINI["steps"]
    monkeypatch.setenv("LBW_STRESS_MINI_STEPS", "24")
    monkeypatch.setenv("LBW_STRESS_MINI_LRS", "0.01,1")
    sc = mini_grid().scenario
    assert sc.steps == 24 and sc.lrs == (0.01, 1.0)
    monkeypatch.setenv("LBW_STRESS_MINI_STEPS", "many")
    with pytest.raises(Exception, match="LBW_STRESS_MINI_STEPS"):
        mini_grid()


def test_stress_page_bad_summary_upload_shows_error_and_stays_usable(stress_runs, monkeypatch):
    monkeypatch.setenv("LBW_RUNS_DIR", str(stress_runs))
    at = page("stress")
    at = at.radio(key="stress_source").set_value("Upload a summary.csv").run()
    at.file_uploader(key="stress_upload").upload("summary.csv", os.urandom(2048), "text/csv")
    at = at.run()
    assert not at.exception
    assert any("Could not read the summary" in e.value for e in at.error)
    at.file_uploader(key="stress_upload").clear()
    at.file_uploader(key="stress_upload").upload(
        "summary.csv", (stress_runs / "tiny" / "summary.csv").read_bytes(), "text/csv")
    at = at.run()
    assert not at.exception and not at.error and len(charts(at)) == 2
    at = at.radio(key="stress_source").set_value("Earlier results (runs/)").run()
    assert not at.exception and len(charts(at)) == 3


def test_every_page_points_to_the_glossary_and_the_glossary_defines_the_words():
    from lbw_sim.studio.glossary import GLOSSARY

    assert {"regime", "transition", "robust z", "hysteresis", "dwell"} <= set(GLOSSARY)
    for path in (ROOT / "pages").glob("*.py"):
        if path.stem in ("common", "glossary"):
            continue
        assert "glossary_link()" in path.read_text(encoding="utf-8"), path.name
    app_text = (ROOT / "app.py").read_text(encoding="utf-8")
    assert '"pages/glossary.py"' in app_text
    at = page("glossary")
    assert not at.exception and all(term in at.markdown[1].value for term in GLOSSARY)


def test_a_shadow_trace_says_it_was_shadowed_on_replay():
    """A `GuardedOptimizer(act=False)` run's CSV: Replay says nothing was applied and what
    the guard would have done."""
    import math

    import torch
    import torch.nn.functional as F

    from lbw_sim import GuardedOptimizer, GuardSpec

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), GuardSpec.default(),
                           act=False)
    for step in range(120):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(32, 4, generator=g)
        loss = F.mse_loss(model(x), x[:, :1]) * (math.nan if step == 90 else 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
    data = opt.trace().to_csv(index=False).encode()
    at = page("replay")
    at = at.radio(key="replay_source").set_value("Upload a log").run()
    at.file_uploader(key="replay_upload").upload("shadow.csv", data, "text/csv")
    at = at.run()
    assert not at.exception
    note = next(i.value for i in at.info if "shadow mode" in i.value)
    skipped = int((opt.trace()["skipped"] | opt.trace()["safety_skip"]).sum())
    assert "applied nothing" in note and f"skipped on {skipped} step(s)" in note
    assert GuardSpec.default().hash in note

"""Through AppTest: the Tune page, the log that stays loaded across pages, the
Replay fixes (downloads, W&B run picker, mapping note) and edited-spec names."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lbw_sim.guard.spec import GuardSpec

ROOT = Path(__file__).resolve().parents[1]
SPIKY_CSV = b"step,loss,grad_norm\n" + b"".join(
    f"{i},{2.0 + 0.001 * (i % 7) + (3.0 if 400 <= i < 403 else 0)},"
    f"{1.0 + 0.01 * (i % 5) + (20.0 if 400 <= i < 403 else 0)}\n".encode() for i in range(800))


def app(spec: GuardSpec | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if spec is not None:                 # the studio's spec, as the designer would set it
        at.session_state["spec"] = spec
    return at.run()


#: The Tune page's trade-off needs false alarms to trade: the v1 spec has them on the demo
#: log (watch_z sweeps from 0 to many); the adaptive default has none at any watch_z.
V1 = GuardSpec.named("lbw-v1")


def open_page(at: AppTest, name: str) -> AppTest:
    return at.switch_page(f"pages/{name}.py").run()


def healthy(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def upload_on(at: AppTest, page: str, name: str = "my_run.csv", data: bytes = SPIKY_CSV):
    at = open_page(at, page)
    at = at.radio(key=f"{page}_source").set_value("Upload a log").run()
    at.file_uploader(key=f"{page}_upload").upload(name, data, "text/csv")
    return at.run()


def score_now(at: AppTest) -> dict:
    """The designer's spec's score, as the page's metrics show it."""
    return {m.label: m.value for m in at.metric}


def select(at: AppTest, key: str, **selection) -> AppTest:
    at.session_state[key] = {"selection": {"points": [], "point_indices": [], "box": [],
                                           "lasso": [], **selection}}
    return at.run()


# --- the log stays loaded ----------------------------------------------------------------

def test_a_log_uploaded_on_replay_is_offered_on_regimes_tune_and_the_designer():
    at = healthy(upload_on(app(), "replay"))
    assert at.session_state["user_log"].trace is not None
    at = healthy(open_page(at, "regimes"))
    radio = at.radio(key="regimes_source")
    assert radio.value == "Upload a log"                       # starts on your log
    assert any("my_run.csv" in c.value for c in at.caption)   # no re-upload
    assert len(at.get("plotly_chart")) == 2
    at = healthy(open_page(at, "tune"))
    assert at.radio(key="tune_source").value == "Upload a log"
    assert len(at.get("plotly_chart")) >= 2
    at = healthy(open_page(at, "designer"))
    assert at.selectbox(key="preview_example").value == "Your log"


def test_designer_edit_shows_on_regimes_on_the_uploaded_log():
    at = healthy(upload_on(app(), "regimes"))
    fired = lambda at: next(d.value for d in at.dataframe if "cause" in d.value.columns)  # noqa
    before = fired(at)
    at = open_page(at, "designer")
    names = list(GuardSpec.default().thresholds)
    at.session_state["ed_thresholds_0"] = {"edited_rows": {names.index("grad_spike_z"): {
        "value": "1e10"}, names.index("spike_z"): {"value": "1e9"}},   # in order: hysteresis
        "added_rows": [], "deleted_rows": []}
    at = healthy(at.run())
    spec = at.session_state["spec"]
    assert (spec.thresholds["spike_z"], spec.thresholds["grad_spike_z"]) == (1e9, 1e10)
    assert spec.name == f"{GuardSpec.default().name} (grad_spike_z 1e+10, spike_z 1e+09)"
    at = healthy(open_page(at, "regimes"))
    assert any(spec.hash in c.value for c in at.caption)
    assert any("my_run.csv" in c.value for c in at.caption)
    after = fired(at)
    assert len(before) > len(after)          # no spike fires: fewer transitions, by name or not


def test_wandb_export_with_two_runs_lets_the_user_pick_the_run():
    rows = "\n".join(f"{i},{2 + 0.01 * (i % 3)},{5 + 0.01 * (i % 3)}" for i in range(300))
    data = f"Step,run-a - train/loss,run-b - train/loss\n{rows}\n".encode()
    at = healthy(upload_on(app(), "replay", "wandb_export.csv", data))
    picker = at.selectbox(key="replay_upload_run")
    assert picker.options == ["run-a", "run-b"] and picker.value == "run-a"
    assert at.session_state["user_log"].trace["loss"].iloc[0] == pytest.approx(2.0)
    at = healthy(picker.set_value("run-b").run())
    assert at.session_state["user_log"].trace["loss"].iloc[0] == pytest.approx(5.0)
    assert any("run *run-b*" in c.value for c in at.caption)


def test_a_pending_column_mapping_is_what_the_page_asks_for():
    data = b"it,my_objective,gn\n" + b"".join(f"{i},{2.0 + (i % 3) * 0.01},1.0\n".encode()
                                             for i in range(200))
    at = upload_on(app(), "replay", "odd.csv", data)
    assert not at.exception and at.warning
    notes = " ".join(i.value for i in at.info)
    assert "Map the columns of **odd.csv**" in notes and "Pick an example" not in notes


def test_replay_downloads_are_ready_bytes_that_do_not_rerun():
    """A deferred download got a new file id on every rerun, so the second button's old
    id was gone ('Deferred file … not found'): both must be stored files, no rerun."""
    at = healthy(open_page(app(), "replay"))
    buttons = {d.proto.label: d.proto for d in at.get("download_button")}
    assert set(buttons) == {"Download annotated trace (CSV)", "Download chart (HTML)"}
    for proto in buttons.values():
        assert proto.url and proto.ignore_rerun


# --- Tune -----------------------------------------------------------------------------------

def test_tune_page_sweeps_and_a_click_makes_the_designers_spec():
    at = healthy(open_page(app(V1), "tune"))
    table = next(d.value for d in at.dataframe if "pareto" in d.value.columns)
    in_use = V1.thresholds["watch_z"]
    assert in_use in set(table["thresholds.watch_z"]) and table["pareto"].any()
    asked = at.number_input(key="tune_n_thresholds.watch_z_1").value
    assert len(table) == asked == 50    # asks for 50 values, sweeps 50 (the one in use among them)
    assert any("50 points swept." in c.value for c in at.caption)   # none refused by default
    assert "recall" in table and table["thresholds.watch_z"].is_monotonic_increasing
    assert table["false_alarms_per_1k"].nunique() > 1
    row = int(table.index[table["pareto"]][-1])
    at = healthy(select(at, "tune_tradeoff", points=[{"curve_number": 0, "point_index": row,
                                                      "customdata": row}]))
    spec = at.session_state["spec"]
    picked = table["thresholds.watch_z"].iloc[row]
    assert spec.thresholds["watch_z"] == pytest.approx(picked)
    assert spec.name == f"lbw-default (watch_z {picked:g})"
    diff = next(d.value for d in at.dataframe if "picked" in d.value.columns)
    assert list(diff["setting"]) == ["thresholds.watch_z"]
    at = healthy(open_page(at, "designer"))   # the designer starts from the picked spec
    assert at.session_state["spec"].hash == spec.hash
    changes = next(d.value for d in at.dataframe if "was" in d.value.columns)
    assert list(changes["setting"]) == ["thresholds.watch_z"]   # against the origin, not reset
    export = at.get("download_button")[0].proto
    assert export.label == "Export YAML" and "watch_z" in export.help


def test_tune_table_picks_a_point_and_choices_survive_a_page_change():
    at = healthy(open_page(app(V1), "tune"))
    at.number_input(key="tune_n_thresholds.watch_z_1").set_value(7)
    at = healthy(at.run())
    table = next(d.value for d in at.dataframe if "pareto" in d.value.columns)
    assert len(table) == 7
    at = healthy(open_page(at, "home"))
    at = healthy(open_page(at, "tune"))
    assert at.number_input(key="tune_n_thresholds.watch_z_1").value == 7   # kept
    row = 1 if table["thresholds.watch_z"].iloc[1] != V1.thresholds["watch_z"] else 2
    at.session_state["tune_table"] = {"selection": {"rows": [row], "columns": []}}
    at = healthy(at.run())
    spec = at.session_state["spec"]
    assert spec.thresholds["watch_z"] == pytest.approx(table["thresholds.watch_z"].iloc[row])


def test_tune_two_settings_draw_a_heat_map_three_parallel_coordinates():
    at = open_page(app(V1), "tune")
    at = healthy(at.multiselect(key="tune_params").set_value(
        ["thresholds.spike_z", "thresholds.spike_ratio"]).run())  # 12 x 12
    assert len(at.get("plotly_chart")) == 3                 # loss, trade-off, heat map
    table = next(d.value for d in at.dataframe if "pareto" in d.value.columns)
    total = 12 * 12                     # the values in use replace their nearest
    assert len(table) == total and any(f"{total} points swept." in c.value for c in at.caption)
    at.number_input(key="tune_lo_thresholds.spike_ratio").set_value(0.5)   # below calm_ratio
    at = healthy(at.run())
    table = next(d.value for d in at.dataframe if "pareto" in d.value.columns)
    refused = total - len(table)        # spike_ratio below calm_ratio: no hysteresis band
    assert refused > 0 and any(f"{total} points swept; {refused} refused" in c.value
                               for c in at.caption)
    at = healthy(at.multiselect(key="tune_params").set_value(
        ["thresholds.spike_z", "thresholds.spike_ratio", "transitions.spike.for"]).run())
    assert len(at.get("plotly_chart")) == 3                 # loss, trade-off, parallel
    table = next(d.value for d in at.dataframe if "pareto" in d.value.columns)
    assert set(table["transitions.spike.for"]) <= set(range(1, 3))


def test_tune_box_selection_becomes_a_label_and_changes_the_score():
    at = healthy(open_page(app(), "tune"))
    before = score_now(at)
    assert before["Incidents"] == "2" and before["Recall"] == "100%"
    at = select(at, "tune_loss", box=[{"xref": "x", "yref": "y", "x": [300.4, 340.6],
                                       "y": [0, 10]}])
    button = at.button(key="tune_add")
    assert button.label == "Add steps 301–340 as an incident"
    at = healthy(button.click().run())
    after = score_now(at)
    assert after["Incidents"] == "3" and after["Recall"] == "67%"
    labels = at.data_editor[0].value
    assert ((labels["start"] == 301) & (labels["end"] == 340)).any()
    download = next(d.proto for d in at.get("download_button")
                    if d.proto.label.startswith("Download labels"))
    assert download.url


def test_tune_without_labels_shows_the_cost_trade_off():
    at = upload_on(app(), "tune")
    at = healthy(at)
    table = next(d.value for d in at.dataframe if "pareto" in d.value.columns)
    assert "recall" not in table and {"out_share", "mean_lr_scale"} <= set(table)


def test_replay_ab_never_shows_two_specs_of_the_same_name():
    at = open_page(app(), "designer")
    default = GuardSpec.default()
    names = list(default.thresholds)
    at.session_state["ed_thresholds_0"] = {"edited_rows": {names.index("spike_z"): {
        "value": f"{1.5 * default.thresholds['spike_z']:g}"}}, "added_rows": [],
        "deleted_rows": []}
    at = healthy(at.run())
    at = healthy(open_page(at, "replay"))
    summary = next(d.value for d in at.dataframe if "min LR scale" in d.value.columns)
    names_shown = [m.value for m in at.markdown if m.value.startswith("**A:") or
                   m.value.startswith("**B:")]
    assert f"`{default.name}`" in names_shown[0]
    assert f"`{default.name} (spike_z {1.5 * default.thresholds['spike_z']:g})`" in \
        names_shown[1]
    assert len(summary) == 2

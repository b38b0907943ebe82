"""Numbers in the designer's tables round-trip exactly (scientific notation too).

The browser's number input turned `3e-2` into `-32`; the cells are now text read by the
editor's own parser, so these tests hold at the editor level and through the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lbw_sim.errors import SpecError
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.editor import format_number, parse_number, spec_from_tables, spec_tables

ROOT = Path(__file__).resolve().parents[1]


def with_cell(section: str, name: str, column: str, value) -> dict:
    tables = spec_tables(GuardSpec.named("lbw-v1"))
    frame = tables[section].copy()
    frame[column] = frame[column].astype(object)
    frame.loc[frame["name"] == name, column] = value
    return {**tables, section: frame}


@pytest.mark.parametrize("text, value", [("3e-2", 0.03), ("1E-3", 0.001), ("5.", 5.0),
                                         ("2.5e-2", 0.025), (" 0.04 ", 0.04), ("+1e-1", 0.1)])
def test_scientific_notation_round_trips(text, value):
    spec = spec_from_tables(GuardSpec.named("lbw-v1"),
                            with_cell("thresholds", "ratio_high", "value", text))
    assert spec.thresholds["ratio_high"] == value


def test_huge_negative_is_stored_as_typed_not_mangled():
    tables = with_cell("regimes", "nominal", "update_cap", "-1e308")
    with pytest.raises(SpecError) as err:
        spec_from_tables(GuardSpec.named("lbw-v1"), tables)
    assert err.value.field == "regimes.nominal.update_cap" and "-1e+308" in str(err.value)


@pytest.mark.parametrize("text", ["1,5", "3e", "--2", "0x10", "abc", "1e-3x"])
def test_anything_else_is_refused_naming_the_cell(text):
    with pytest.raises(SpecError) as err:
        spec_from_tables(GuardSpec.default(), with_cell("bounds", "lr_slew_down", "value", text))
    assert err.value.field == "bounds.lr_slew_down" and repr(text) in str(err.value)


def test_inf_parses_but_a_threshold_must_be_finite():
    assert parse_number("inf", "x") == float("inf")
    with pytest.raises(SpecError, match="thresholds.spike_z: must be a finite"):
        spec_from_tables(GuardSpec.default(), with_cell("thresholds", "spike_z", "value", "inf"))


def test_tables_show_numbers_that_read_back_exactly():
    spec = GuardSpec.named("lbw-v1").with_values({"thresholds.ratio_high": 0.1 + 0.2,
                                            "regimes.nominal.update_cap": 1e-7})
    tables = spec_tables(spec)
    assert spec_from_tables(spec, tables).hash == spec.hash
    cap = tables["regimes"].set_index("name").loc["nominal", "update_cap"]
    assert cap == "1e-07" and format_number(5) == "5"


def test_designer_page_stores_typed_scientific_notation():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at = at.switch_page("pages/designer.py").run()
    names = list(GuardSpec.default().thresholds)
    at.session_state["ed_thresholds_0"] = {
        "edited_rows": {names.index("watch_z"): {"value": "5e0"},
                        names.index("spike_z"): {"value": "1.2E1"}},
        "added_rows": [], "deleted_rows": []}
    at = at.run()
    assert not at.exception and not at.error
    spec = at.session_state["spec"]
    assert spec.thresholds["watch_z"] == 5.0 and spec.thresholds["spike_z"] == 12.0
    at.session_state["ed_thresholds_0"] = {
        "edited_rows": {names.index("watch_z"): {"value": "5e0x"}},
        "added_rows": [], "deleted_rows": []}
    at = at.run()
    assert "thresholds.watch_z" in " ".join(e.value for e in at.error)


def test_real_valued_cells_are_text_in_the_browser():
    """The mangling happened in the browser's number input: those cells must be text."""
    import json

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at = at.switch_page("pages/designer.py").run()
    config = {d.key: json.loads(d.proto.columns) for d in at.data_editor}
    for key, column in (("ed_thresholds_0", "value"), ("ed_bounds_0", "value"),
                        ("ed_regimes_0", "lr_scale"), ("ed_regimes_0", "update_cap")):
        assert config[key][column]["type_config"]["type"] == "text", (key, column)


def test_hysteresis_error_shows_on_the_thresholds_tab_in_plain_words():
    """Raising calm_z above spike_z breaks a check filed under transitions; the message is
    shown on the Thresholds tab (where the edit was made), names both thresholds with
    their values, and the last valid spec stays in use."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at = at.switch_page("pages/designer.py").run()
    names = list(GuardSpec.default().thresholds)
    at.session_state["ed_thresholds_0"] = {
        "edited_rows": {names.index("spike_z"): {"value": "11"}},
        "added_rows": [], "deleted_rows": []}
    at = at.run()
    valid = at.session_state["spec"]
    assert not at.error and valid.thresholds["spike_z"] == 11.0
    at.session_state["ed_thresholds_0"] = {
        "edited_rows": {names.index("spike_z"): {"value": "11"},
                        names.index("calm_z"): {"value": "20"}},
        "added_rows": [], "deleted_rows": []}
    at = at.run()
    assert not at.exception
    tabs = {t.label: t for t in at.tabs}
    on_tab = [e.value for e in tabs["Thresholds"].error]
    assert len(on_tab) == 1
    # read off the default's own pair of transitions, whichever entry threshold it meets first
    words = re.fullmatch(r"Exit threshold calm_z = 20 must be below the entry threshold "
                         r"(\w+) = ([0-9.e+]+) for `(\w+)`/`(\w+)` \((\w+): the guard enters "
                         r"above \2 and leaves below 20, so there is no hysteresis band between "
                         r"them\) \(checked in `transitions\.(\w+)\.when`\)\.", on_tab[0])
    assert words, on_tab[0]
    entry, value, into, out, signal, checked = words.groups()
    assert valid.thresholds[entry] == float(value) and signal in valid.signals
    assert {into, out, checked} <= {t.name for t in valid.transitions} and checked == into
    assert not tabs["Transitions"].error
    assert any("on the **Thresholds** tab" in e.value for e in at.error)
    assert at.session_state["spec"].hash == valid.hash  # the last valid spec stays in use


def test_an_error_filed_under_the_edited_section_stays_there():
    from lbw_sim.studio.editor import edited_sections, error_section

    before = spec_tables(GuardSpec.named("lbw-v1"))       # the spec with_cell edits
    after = with_cell("thresholds", "calm_z", "value", "20")
    assert edited_sections(before, after) == ["thresholds"]
    assert error_section("transitions.spike.when", ["thresholds"]) == "thresholds"
    assert error_section("transitions.spike.when", ["transitions"]) == "transitions"
    assert error_section("bounds.lr_scale_min", []) == "bounds"
    assert error_section("regimes.watch.lr_scale", ["thresholds", "regimes"]) == "regimes"

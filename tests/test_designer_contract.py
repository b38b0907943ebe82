"""The spec contract in the studio: a value typed into any designer cell either shows the
validator's message (naming the field, the last valid spec kept) or previews; never an
exception box, never an edit dropped without a word. The cases are the hostile values of
tests/test_spec_contract.py, typed the way the browser sends them: every number cell is
text (an integer column would drop 1e308 or 2**63 silently).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.editor import spec_tables

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = GuardSpec.default()
ROWS = {section: list(frame["name"]) for section, frame in spec_tables(DEFAULT).items()}
SECTIONS = list(ROWS)
#: The cells that hold numbers, by section.
NUMBER_CELLS = {"thresholds": ("value",), "bounds": ("value",),
                "regimes": ("lr_scale", "momentum_scale", "update_cap", "skip_batches"),
                "transitions": ("for", "min_dwell", "priority")}

#: (section, row, column, typed value, the field a refusal names; None: it must preview)
CASES = [
    ("thresholds", "lr_back_x", "value", "0.03", "transitions.lr_back.when"),
    ("thresholds", "lr_back_x", "value", "1e999", "thresholds.lr_back_x"),
    ("thresholds", "spike_z", "value", "nan", "thresholds.spike_z"),
    ("thresholds", "spike_z", "value", "1e308", "transitions."),
    ("thresholds", "spike_z", "value", "", "thresholds.spike_z"),
    ("thresholds", "spike_z", "name", "", "thresholds["),
    ("thresholds", "spike_z", "name", "and", "thresholds.and"),
    ("thresholds", "spike_z", "name", "loss", "thresholds.loss"),
    ("thresholds", "spike_z", "name", "watch_z", "thresholds.watch_z"),
    ("thresholds", "lr_back_x", "value", "2", None),
    ("regimes", "watch", "lr_scale", "1e308", "regimes.watch.lr_scale"),
    ("regimes", "watch", "update_cap", "-inf", "regimes.watch.update_cap"),
    ("regimes", "rollback", "skip_batches", "1e308", "regimes.rollback.skip_batches"),
    ("regimes", "rollback", "skip_batches", str(2**63), "regimes.rollback.skip_batches"),
    ("regimes", "rollback", "skip_batches", "-1", "regimes.rollback.skip_batches"),
    ("regimes", "rollback", "skip_batches", "1.5", "regimes.rollback.skip_batches"),
    ("regimes", "watch", "name", "loss_z > 1e999", "regimes."),
    ("regimes", "watch", "name", "nominal", "regimes.nominal"),
    ("regimes", "rollback", "skip_batches", "1000000000", None),
    ("transitions", "settle", "name", "", "transitions["),
    ("transitions", "settle", "name", "loss_z > 1e999", "transitions["),
    ("transitions", "settle", "name", "unusual", "transitions.unusual"),
    ("transitions", "settle", "name", "and", "transitions["),
    ("transitions", "settle", "for", "1e308", "transitions.settle.for"),
    ("transitions", "settle", "for", "9223372036854775808", "transitions.settle.for"),
    ("transitions", "settle", "for", "0", "transitions.settle.for"),
    ("transitions", "settle", "for", "-1", "transitions.settle.for"),
    ("transitions", "settle", "min_dwell", "1e308", "transitions.settle.min_dwell"),
    ("transitions", "settle", "priority", "-9223372036854775809", "transitions.settle.priority"),
    ("transitions", "settle", "from", "", "transitions.settle.from"),
    ("transitions", "settle", "from", "nowhere", "transitions.settle.from"),
    ("transitions", "settle", "from", "nominal", "transitions.settle.from"),
    ("transitions", "settle", "to", "", "transitions.settle.to"),
    ("transitions", "settle", "when", "loss_z > 1e999", "transitions.settle.when"),
    ("transitions", "settle", "when", "1 > 2", "transitions.settle.when"),
    ("transitions", "settle", "when", "", "transitions.settle.when"),
    ("transitions", "settle", "for", "1e9", None),
    ("transitions", "settle", "name", "settle_down", None),
    ("bounds", "skip_window", "value", "1e9", "bounds.skip_window"),
    ("bounds", "skip_window", "value", "9223372036854775808", "bounds.skip_window"),
    ("bounds", "skip_window", "value", "0", "bounds.skip_window"),
    ("bounds", "snapshot_every", "value", "1e308", "bounds.snapshot_every"),
    ("bounds", "max_rollbacks", "value", "nan", "bounds.max_rollbacks"),
    ("bounds", "lr_scale_min", "value", "0", "bounds.lr_scale_min"),
    ("bounds", "skip_window", "value", "1000000", None),
]


def type_cell(at: AppTest, case: tuple) -> AppTest:
    """Seed one edit (and no other) in the editors, the way the browser sends it."""
    section, row, column, value, _ = case
    for s in SECTIONS:
        rows = {ROWS[s].index(row): {column: value}} if s == section else {}
        at.session_state[f"ed_{s}_0"] = {"edited_rows": rows, "added_rows": [],
                                         "deleted_rows": []}
    return at.run()


@pytest.fixture(scope="module")
def designer() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    return at.switch_page("pages/designer.py").run()


def test_every_number_cell_is_text(designer):
    """A typed value reaches the validator only if the cell keeps it: text does."""
    config = {d.key: json.loads(d.proto.columns) for d in designer.data_editor}
    for section, columns in NUMBER_CELLS.items():
        for column in columns:
            kind = config[f"ed_{section}_0"][column]["type_config"]["type"]
            assert kind == "text", (section, column)
    cells = {(c[0], c[2]) for c in CASES}
    assert {("transitions", k) for k in NUMBER_CELLS["transitions"]} <= cells
    assert ("regimes", "skip_batches") in cells and ("bounds", "value") in cells


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}.{c[1]}.{c[2]}={c[3]!r}"[:50]
                                             for c in CASES])
def test_a_typed_cell_shows_the_validators_message_or_previews(designer, case):
    at = type_cell(designer, case)
    assert not at.exception, [e.value for e in at.exception]
    field = case[4]
    errors = [e.value for e in at.error]
    if field is None:
        assert not errors, errors
        spec = at.session_state["spec"]
        assert spec.hash != DEFAULT.hash
        assert at.get("graphviz_chart") and at.get("plotly_chart")
        return
    assert any(f"(checked in `{field}" in e for e in errors), (field, errors)
    assert not any("an integer of" in e for e in errors), errors   # `1e308` quoted as typed
    assert any("last valid spec stays in use" in e for e in errors)
    assert at.get("graphviz_chart") and at.get("plotly_chart")   # the last valid preview

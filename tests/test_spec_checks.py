"""Hostile or meaningless specs are refused early, with the field named.

- a YAML alias bomb ("billion laughs") is refused before anything expands it;
- fields of the wrong type are SpecErrors, not TypeErrors deep inside validation;
- a condition that can never, or always, hold for the signal it tests is refused.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbw_sim.checks import load_yaml
from lbw_sim.errors import SpecError
from lbw_sim.guard import conditions
from lbw_sim.guard.spec import GuardSpec

ROOT = Path(__file__).resolve().parents[1]


def alias_bomb(levels: int = 8, width: int = 9) -> str:
    """About 1 kB of YAML that expands to width**levels strings once resolved."""
    lines = [f"b0: &b0 [{', '.join(['lol'] * width)}]"]
    lines += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels)]
    body = "\n".join("  " + line for line in lines)
    return f"name: bomb\ndescription:\n{body}\n  top: [{', '.join(['*b7'] * width)}]\n"


def test_alias_bomb_is_refused_fast_with_one_line(tmp_path):
    text = alias_bomb()
    assert len(text) < 1500
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        GuardSpec.from_yaml(text)
    assert time.perf_counter() - start < 1.0
    assert "aliases" in str(err.value) and "\n" not in str(err.value)


def test_alias_bomb_through_the_cli_finishes_fast(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lbw_sim", "validate", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert time.perf_counter() - start < 30
    assert proc.returncode != 0 and "anchors and aliases" in proc.stdout + proc.stderr


def test_plain_anchor_is_refused_too_and_plain_yaml_still_loads():
    with pytest.raises(SpecError, match="line 1"):
        load_yaml("a: &x 1\nb: 2\n")
    assert load_yaml("a: [1, 2]\nb: {c: 3}\n") == {"a": [1, 2], "b": {"c": 3}}


def test_scenario_and_ranges_files_use_the_same_loader(tmp_path):
    from lbw_sim.guard.sweep import load_ranges
    from lbw_sim.sim.scenarios import Scenario

    with pytest.raises(SpecError, match="aliases"):
        Scenario.from_yaml(alias_bomb())
    path = tmp_path / "ranges.yaml"
    path.write_text("a: &x [1, 2, 1]\nthresholds.spike_z: *x\n")
    with pytest.raises(SpecError, match="aliases"):
        load_ranges(path)


@pytest.mark.parametrize("key, value", [("initial", ["nominal"]), ("initial", {"a": 1}),
                                        ("description", ["x"]), ("name", ["x"])])
def test_top_level_field_of_the_wrong_type_is_named(key, value):
    data = GuardSpec.named("lbw-v1").to_dict()
    data[key] = value
    with pytest.raises(SpecError) as err:
        GuardSpec.from_dict(data)
    assert err.value.field == key


@pytest.mark.parametrize("key", ["name", "to", "description"])
def test_transition_field_of_the_wrong_type_is_named(key):
    data = GuardSpec.named("lbw-v1").to_dict()
    data["transitions"][0][key] = ["x"]
    with pytest.raises(SpecError) as err:
        GuardSpec.from_dict(data)
    assert err.value.field.startswith("transitions") and err.value.field.endswith(key)


def test_regime_reason_of_the_wrong_type_is_named():
    data = GuardSpec.named("lbw-v1").to_dict()
    data["regimes"]["stop"]["reason"] = {"a": 1}
    with pytest.raises(SpecError, match="regimes.stop.reason"):
        GuardSpec.from_dict(data)


@pytest.mark.parametrize("when, word", [
    ("update_ratio_ema > -0.01", "always"),      # an EMA of a non-negative source
    ("update_ratio_ema < -1e-3", "never"),
    ("loss_ratio > -2", "always"),               # a ratio
    ("grad_z > spike_z or loss_ratio < -1", "never"),
    ("update_ratio >= 0", "always"),             # a non-negative telemetry column
    ("nonfinite >= 0", "always"),
    ("nonfinite > 1", "never"),
    ("nonfinite > 0.5", "0 or 1"),
    ("nonfinite == 2", "0 or 1"),
])
def test_condition_that_cannot_vary_is_refused(when, word):
    with pytest.raises(SpecError) as err:
        GuardSpec.named("lbw-v1").with_values({"transitions.spike.when": when})
    assert err.value.field == "transitions.spike.when" and word in err.value.problem


@pytest.mark.parametrize("when", ["grad_z > spike_z or loss_ratio > 2", "nonfinite == 1",
                                  "update_ratio_ema > 0", "grad_z > 13 and grad_norm > 0"])
def test_conditions_that_can_vary_still_validate(when):
    GuardSpec.named("lbw-v1").with_values({"transitions.spike.when": when})


def test_threshold_sweep_into_a_meaningless_range_is_skipped_not_fatal():
    from lbw_sim.guard.sweep import build_specs

    specs, kept, skipped = build_specs(GuardSpec.named("lbw-v1"),
                                       [{"thresholds.ratio_high": v} for v in (-0.01, 0.02)])
    assert [p["thresholds.ratio_high"] for p in kept] == [0.02]
    assert "always holds" in skipped[0]["error"]


def test_every_shipped_spec_and_scenario_still_validates():
    from lbw_sim.sim.scenarios import load_scenario

    GuardSpec.named("lbw-v1")
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        load_scenario(path)
    for path in sorted(ROOT.glob("examples/**/*.yaml")):
        GuardSpec.load(path)


def test_progress_bars_stay_quiet_when_stderr_is_not_a_terminal(capsys):
    from lbw_sim.bench.scenario import _progress

    bar = _progress(1000, True, "quickstart")
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert "\r" not in capsys.readouterr().err


def test_sweep_cli_writes_no_progress_bar_into_a_log(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lbw_sim", "sweep", "examples/loss_spike.csv",
                           "--grid", "thresholds.spike_z=6:12:2", "--out",
                           str(tmp_path / "sweep.csv")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\r" not in proc.stderr and "spec/s" not in proc.stderr


# --- the spec contract: names, whole-number ranges, transitions that could never fire -------

DEFAULT = GuardSpec.default()


def refused(change: dict) -> SpecError:
    with pytest.raises(SpecError) as err:
        DEFAULT.with_values(change)
    return err.value


@pytest.mark.parametrize("name", ["", None, "loss_z > 1e999", "and", "1x", "a-b", "é", 7])
def test_a_transition_name_must_be_an_identifier(name):
    data = DEFAULT.to_dict()
    data["transitions"][2]["name"] = name
    with pytest.raises(SpecError) as err:
        GuardSpec.from_dict(data)
    assert err.value.field == "transitions[2].name" and "identifiers" in err.value.problem


def test_transition_names_are_unique_and_a_missing_one_is_made_up_unique():
    data = DEFAULT.to_dict()
    data["transitions"][3]["name"] = data["transitions"][2]["name"]
    with pytest.raises(SpecError, match="duplicate transition name"):
        GuardSpec.from_dict(data)
    spec = GuardSpec.from_dict({
        "signals": {"s": {"kind": "ratio", "source": "loss"}},
        "regimes": {"a": {}, "b": {}}, "initial": "a",
        "transitions": [{"from": "a", "to": "b", "when": "s > 3"},
                        {"from": "a", "to": "b", "when": "s > 4"},
                        {"from": "*", "to": "a", "when": "s < 2"}]})
    assert [t.name for t in spec.transitions] == ["a_to_b", "a_to_b_2", "any_to_a"]
    assert GuardSpec.from_yaml(spec.to_yaml()) == spec


@pytest.mark.parametrize("path, ok, bad", [
    ("transitions.spike_again.for", 10**9, 10**9 + 1),
    ("transitions.spike_again.min_dwell", 10**9, 10**9 + 1),
    ("transitions.spike_again.priority", -(10**6), 10**6 + 1),
    ("signals.loss_z.warmup", 10**9, 1e308),
    ("signals.loss_z.half_life", 1e9, 1e9 + 1),
    ("regimes.rollback.skip_batches", 10**9, 2**63),
    ("bounds.max_consecutive_skips", 10**9, 10**400),
    ("bounds.max_rollbacks", 0, -1),
    ("bounds.snapshot_every", 10**9, 2**64),
    ("bounds.skip_window", 10**6, 10**6 + 1),
])
def test_whole_numbers_have_a_documented_range(path, ok, bad):
    assert DEFAULT.with_values({path: ok}).flat()[path] == ok
    err = refused({path: bad})
    assert err.field == path and "\n" not in str(err)
    if isinstance(bad, int) and bad > 10**30:              # 10**400 is not spelled out
        assert "digits" in str(err) and len(str(err)) < 200


def test_an_int_too_large_for_a_float_is_a_spec_error_not_an_overflow():
    assert refused({"thresholds.spike_z": 10**400}).field == "thresholds.spike_z"
    assert "400 digits" in str(refused({"bounds.max_rollbacks": 10**399}))


def test_counts_of_regimes_and_transitions_are_bounded():
    data = DEFAULT.to_dict()
    data["transitions"] += [{**data["transitions"][-1], "name": f"extra_{i}"}
                            for i in range(1000)]
    with pytest.raises(SpecError) as err:
        GuardSpec.from_dict(data)
    assert err.value.field == "transitions" and "at most 1000" in err.value.problem


@pytest.mark.parametrize("source, words", [
    ([], "a regime name"), ("settle_from", None), ("watch_self", "to itself"),
    (["stop"], "stop regimes"), (["stop", "stop"], "stop regimes")])
def test_a_transition_needs_a_regime_it_can_fire_from(source, words):
    data = DEFAULT.to_dict()
    t = next(t for t in data["transitions"] if t["name"] == "settle")   # watch -> nominal
    named = {"settle_from": ["watch", "stop"], "watch_self": "nominal"}
    t["from"] = named[source] if isinstance(source, str) else source
    if words is None:                                 # one live source is enough
        assert GuardSpec.from_dict(data)
        return
    with pytest.raises(SpecError) as err:
        GuardSpec.from_dict(data)
    assert err.value.field == "transitions.settle.from" and words in err.value.problem


@pytest.mark.parametrize("when", ["1 > 2", "0", "not 1", "loss_z > 3 and 0", "(1 < 0) or 0"])
def test_a_condition_that_holds_for_no_value_is_refused(when):
    err = refused({"transitions.spike_again.when": when})
    assert err.field == "transitions.spike_again.when" and "never holds" in err.problem


def test_a_threshold_may_not_shadow_a_telemetry_column():
    data = DEFAULT.to_dict()
    data["thresholds"]["lr"] = 1.0
    with pytest.raises(SpecError) as err:
        GuardSpec.from_dict(data)
    assert err.value.field == "thresholds.lr"


@pytest.mark.parametrize("value", [0.03, 0.5, 1.0])
def test_an_lr_hold_that_cannot_release_at_rest_is_refused(value):
    """lr_jump is the LR over its own recent level: 1 once the LR is steady. An exit
    `lr_jump < lr_back_x` with lr_back_x <= 1 never holds there, so the hold never ends."""
    err = refused({"thresholds.lr_back_x": value})
    assert err.field == "transitions.lr_back.when"
    assert f"lr_back_x = {value:g} must be above lr_jump's rest value 1" in err.problem
    assert "lr_hold" in err.problem and "`lr_jumped`" in err.problem


def test_the_rest_rule_is_general_and_exempts_the_initial_regime():
    assert DEFAULT.with_values({"thresholds.lr_back_x": 1.01})            # just above rest
    err = refused({"thresholds.calm_z": 0.0})          # a z-score rests at 0: `< 0` is stuck
    assert err.field == "transitions.settle.when" and "rest value 0" in err.problem
    with pytest.raises(SpecError) as info:           # the failing leaf of `a and b` is named
        GuardSpec.named("lbw-v1").with_values({"thresholds.calm_ratio": 0.9})
    assert "calm_ratio = 0.9 must be above loss_ratio's rest value 1" in info.value.problem
    # nominal, the initial regime, is left only by alarms (all false at rest) and is valid
    rest = {"loss_z": 0.0, "grad_z": 0.0, "nonfinite": 0.0, "lr_jump": 1.0}
    exits = [t for t in DEFAULT.transitions if "nominal" in t.source and t.to != "nominal"]
    assert exits and not any(
        conditions.decided(conditions.bind(conditions.parse(t.when), DEFAULT.thresholds), rest)
        for t in exits)

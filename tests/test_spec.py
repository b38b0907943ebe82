import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scaling import scaled

from lbw_sim.errors import SpecError
from lbw_sim.guard.spec import DEFAULT_SPEC, NAMED_SPECS, GuardSpec

#: Validation messages are checked against a spec whose names and values stay put: v1.
V1 = GuardSpec.named("lbw-v1")


@pytest.fixture(scope="module")
def default():
    return GuardSpec.default()


def test_default_is_valid_and_complete(default):
    """Whatever its contents: it starts nominal, can cut the LR, skip, roll back and stop."""
    assert default.initial == "nominal"
    regimes = default.regimes.values()
    assert any(r.stop and r.reason for r in regimes)
    assert any(r.rollback for r in regimes)
    assert any(r.skip and not r.rollback and not r.stop for r in regimes)
    assert any(r.lr_scale < 1 and not r.skip for r in regimes)
    assert default.warnings() == []


def test_the_default_is_one_shipped_spec_and_lbw_default_names_it(default, tmp_path):
    assert DEFAULT_SPEC in NAMED_SPECS and DEFAULT_SPEC != "lbw-v1"
    assert default == GuardSpec.named(DEFAULT_SPEC) == GuardSpec.named("lbw-default")
    assert GuardSpec.resolve("default") == GuardSpec.resolve("lbw-default", tmp_path) == default
    assert GuardSpec.is_named("lbw-default") and GuardSpec.is_named("lbw-v1")
    assert default.name == DEFAULT_SPEC
    assert V1.hash == "e4f928a1441c"          # the spec the committed figures cite
    assert default.hash != V1.hash
    with pytest.raises(SpecError, match="lbw-default, lbw-v1"):
        GuardSpec.named("lbw-v0")


@pytest.mark.parametrize("name", ["lbw-default", *NAMED_SPECS])
def test_yaml_and_json_round_trip_exactly(name):
    spec = GuardSpec.named(name)
    text = spec.to_yaml()
    again = GuardSpec.from_yaml(text)
    assert again == spec and again.to_yaml() == text
    assert GuardSpec.from_json(spec.to_json()) == spec
    assert GuardSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_hash_tracks_behaviour_not_description(default):
    assert default.hash == GuardSpec.default().hash
    assert default.with_values({"description": "other words"}).hash == default.hash
    assert default.with_values({"thresholds.spike_z": 7.5}).hash != default.hash


def test_diff_lists_changed_paths(default):
    spike = default.thresholds["spike_z"]
    t = default.transitions[0]
    r, regime = next((n, r) for n, r in default.regimes.items() if r.lr_scale < 1)
    other = default.with_values({"thresholds.spike_z": 2 * spike, f"transitions.{t.name}.for":
                                 t.for_ + 1, f"regimes.{r}.lr_scale": regime.lr_scale / 2})
    diff = default.diff(other)
    assert ("thresholds.spike_z", spike, 2 * spike) in diff
    assert (f"transitions.{t.name}.for", t.for_, t.for_ + 1) in diff
    assert (f"regimes.{r}.lr_scale", regime.lr_scale, regime.lr_scale / 2) in diff
    assert len(diff) == 3


BAD = [
    ({"transitions.spike.when": "grad_zz > 3"}, "transitions.spike.when", "unknown name 'grad_zz'"),
    ({"transitions.spike.when": "grad_z >> 3"}, "transitions.spike.when", "unexpected"),
    ({"transitions.spike.when": "grad_z.real > 3"}, "transitions.spike.when", "unexpected"),
    ({"thresholds.calm_z": 9.0}, "transitions",
     "exit threshold calm_z = 9 must be below the entry threshold watch_z = 4"),
    ({"thresholds.calm_ratio": 1.6}, "transitions", "hysteresis"),
    ({"bounds.lr_scale_min": 0.0}, "bounds.lr_scale_min", "0 < lr_scale_min"),
    ({"bounds.lr_scale_max": 1.5}, "bounds.lr_scale_min", "<= 1"),
    ({"regimes.intervene.lr_scale": 1.5}, "regimes.intervene.lr_scale", "finite number"),
    ({"initial": "nope"}, "initial", "does not exist"),
    ({"transitions.spike.to": "nowhere"}, "transitions.spike.to", "unknown regime"),
    ({"transitions.spike.for": 0}, "transitions.spike.for", ">= 1"),
    ({"transitions.spike.for": 1.5}, "transitions.spike.for", "whole number"),
    ({"signals.grad_z.kind": "fft"}, "signals.grad_z.kind", "must be one of"),
    ({"signals.grad_z.source": "weights"}, "signals.grad_z.source", "unknown telemetry"),
    ({"signals.grad_z.half_life": -3}, "signals.grad_z.half_life", "finite number"),
    ({"regimes.intervene.lr_scal": 0.5}, "regimes.intervene", "unknown key 'lr_scal'"),
    ({"bounds.max_skip_fraction": 2}, "bounds.max_skip_fraction", "[0, 1]"),
]


@pytest.mark.parametrize("change,field,message", BAD)
def test_validation_names_the_field(change, field, message):
    with pytest.raises(SpecError) as info:
        V1.with_values(change)
    assert str(info.value).startswith(field), str(info.value)
    assert message in str(info.value)


def test_an_exit_above_every_entry_is_refused_on_the_default(default):
    with pytest.raises(SpecError) as info:
        default.with_values({"thresholds.calm_z": 1e6})
    assert str(info.value).startswith("transitions.")
    assert "exit threshold calm_z = 1e+06 must be below the entry threshold" in str(info.value)


def test_regime_lr_outside_bounds_is_clamped_with_a_warning(default):
    r = next(n for n, r in default.regimes.items() if r.lr_scale < 1 and not r.skip)
    spec = default.with_values({f"regimes.{r}.lr_scale": 0.01})
    lo = default.bounds.lr_scale_min
    assert spec.warnings() == [f"regimes.{r}.lr_scale: 0.01 is clamped to bounds [{lo:g}, 1]"]
    assert default.warnings() == []


def test_unreachable_regime_and_missing_initial(default):
    data = default.to_dict()
    data["regimes"]["orphan"] = {"lr_scale": 0.5}
    with pytest.raises(SpecError, match="regimes.orphan: cannot be reached"):
        GuardSpec.from_dict(data)
    data = default.to_dict()
    del data["initial"]
    with pytest.raises(SpecError, match="initial: no initial regime"):
        GuardSpec.from_dict(data)


@pytest.mark.parametrize("text", ["[1, 2", "{a: b", "- - -\n  x: [",
                                  "!!python/object/apply:os.system ['echo hi']"])
def test_malformed_yaml_is_a_spec_error(text):
    with pytest.raises(SpecError):
        GuardSpec.from_yaml(text)


def test_load_rejects_missing_and_non_text(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        GuardSpec.load(tmp_path / "missing.yaml")
    p = tmp_path / "binary.yaml"
    p.write_bytes(bytes(range(256)))
    with pytest.raises(SpecError):
        GuardSpec.load(p)


@settings(max_examples=60, deadline=None)
@given(factor=st.floats(0.2, 5.0), lr=st.floats(0.05, 1.0), for_=st.integers(1, 50),
       dwell=st.integers(0, 500), pick=st.integers(0, 1000))
def test_edited_defaults_round_trip(factor, lr, for_, dwell, pick):
    """The default with every threshold scaled about its signal's rest value (one factor
    keeps the bands open), a regime's LR and a transition's persistence and dwell changed,
    read back exactly."""
    base = GuardSpec.default()
    t = base.transitions[pick % len(base.transitions)]
    r = list(base.regimes)[pick % len(base.regimes)]
    spec = base.with_values({**scaled(base, factor),
                             f"regimes.{r}.lr_scale": lr, f"transitions.{t.name}.for": for_,
                             f"transitions.{t.name}.min_dwell": dwell})
    assert GuardSpec.from_yaml(spec.to_yaml()) == spec
    assert yaml.safe_load(spec.to_yaml())["thresholds"]["spike_z"] == base.thresholds[
        "spike_z"] * factor


@settings(max_examples=60, deadline=None)
@given(spike=st.floats(4.5, 20), ratio=st.floats(1.15, 3.0), calm=st.floats(0.1, 3.9),
       lr=st.floats(0.05, 1.0), for_=st.integers(1, 50), dwell=st.integers(0, 500))
def test_edited_v1_specs_round_trip(spike, ratio, calm, lr, for_, dwell):
    spec = V1.with_values({
        "thresholds.spike_z": spike, "thresholds.spike_ratio": ratio, "thresholds.calm_z": calm,
        "regimes.intervene.lr_scale": lr, "transitions.spike.for": for_,
        "transitions.recovered.min_dwell": dwell})
    assert GuardSpec.from_yaml(spec.to_yaml()) == spec
    assert yaml.safe_load(spec.to_yaml())["thresholds"]["spike_z"] == spike


def test_from_text_reads_uploads_and_pastes_as_load_reads_files(default, tmp_path):
    """One reader behind GuardSpec.load and the designer's import: bytes or text, JSON by
    name, and every bad input a SpecError."""
    assert GuardSpec.from_text(default.to_yaml().encode()) == default
    assert GuardSpec.from_text(default.to_json(), "spec.JSON") == default
    path = tmp_path / "s.json"
    path.write_text(default.to_json())
    assert GuardSpec.load(path) == GuardSpec.from_text(path.read_bytes(), path.name)
    with pytest.raises(SpecError, match="not valid JSON"):
        GuardSpec.from_text(default.to_yaml(), "spec.json")
    with pytest.raises(SpecError, match="not UTF-8 text"):
        GuardSpec.from_text(b"\xff\xfe name: x")
    with pytest.raises(SpecError, match="larger than 1 MB"):
        GuardSpec.from_text("#" * 1_000_001)

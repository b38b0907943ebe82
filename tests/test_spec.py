import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lbw_sim.errors import SpecError
from lbw_sim.guard.spec import GuardSpec


@pytest.fixture(scope="module")
def default():
    return GuardSpec.default()


def test_default_is_valid_and_complete(default):
    assert default.initial == "nominal"
    assert {"nominal", "intervene", "skip", "rollback", "stop"} <= set(default.regimes)
    assert any(r.stop for r in default.regimes.values())
    assert any(r.rollback for r in default.regimes.values())


def test_yaml_and_json_round_trip_exactly(default):
    text = default.to_yaml()
    again = GuardSpec.from_yaml(text)
    assert again == default and again.to_yaml() == text
    assert GuardSpec.from_json(default.to_json()) == default
    assert GuardSpec.from_dict(json.loads(json.dumps(default.to_dict()))) == default


def test_hash_tracks_behaviour_not_description(default):
    assert default.hash == GuardSpec.default().hash
    assert default.with_values({"description": "other words"}).hash == default.hash
    assert default.with_values({"thresholds.spike_z": 7.5}).hash != default.hash


def test_diff_lists_changed_paths(default):
    other = default.with_values({"thresholds.spike_z": 6.0, "transitions.spike.for": 2,
                                 "regimes.intervene.lr_scale": 0.5})
    diff = default.diff(other)
    assert ("thresholds.spike_z", 10.0, 6.0) in diff
    assert ("transitions.spike.for", 1, 2) in diff
    assert ("regimes.intervene.lr_scale", 0.25, 0.5) in diff
    assert len(diff) == 3


BAD = [
    ({"transitions.spike.when": "grad_zz > 3"}, "transitions.spike.when", "unknown name 'grad_zz'"),
    ({"transitions.spike.when": "grad_z >> 3"}, "transitions.spike.when", "unexpected"),
    ({"transitions.spike.when": "grad_z.real > 3"}, "transitions.spike.when", "unexpected"),
    ({"thresholds.calm_z": 9.0}, "transitions", "not above the entry threshold"),
    ({"thresholds.calm_z": 6.0}, "transitions", "hysteresis"),
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
def test_validation_names_the_field(default, change, field, message):
    with pytest.raises(SpecError) as info:
        default.with_values(change)
    assert str(info.value).startswith(field), str(info.value)
    assert message in str(info.value)


def test_regime_lr_outside_bounds_is_clamped_with_a_warning(default):
    spec = default.with_values({"regimes.intervene.lr_scale": 0.01})
    lo = default.bounds.lr_scale_min
    assert spec.warnings() == [f"regimes.intervene.lr_scale: 0.01 is clamped to bounds [{lo:g}, 1]"]
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
@given(spike=st.floats(4.5, 20), ratio=st.floats(1.15, 3.0), calm=st.floats(0.1, 3.9),
       lr=st.floats(0.05, 1.0), for_=st.integers(1, 50), dwell=st.integers(0, 500))
def test_edited_specs_round_trip(spike, ratio, calm, lr, for_, dwell):
    spec = GuardSpec.default().with_values({
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


@pytest.mark.parametrize("sig, field, text", [
    ({"kind": "ema", "source": "loss", "clip": 3}, "signals.s.clip",
     "a ema signal does not take clip"),
    ({"kind": "ref_ratio", "source": "update_ratio", "clip": 2}, "signals.s.clip",
     "does not take clip"),
    ({"kind": "robust_z", "source": "loss", "per": "lr"}, "signals.s.per",
     "a robust_z signal does not take per"),
    ({"kind": "ref_ratio", "source": "update_ratio", "per": "loss"}, "signals.s.per",
     "must be one of lr"),
    ({"kind": "robust_z", "source": "loss", "half_life": -1}, "signals.s.half_life", ""),
    ({"kind": "robust_zz", "source": "loss"}, "signals.s.kind", "robust_z, ref_ratio"),
])
def test_new_kinds_are_validated_field_by_field(sig, field, text):
    data = {"name": "x", "signals": {"s": sig}, "regimes": {"a": {}}, "initial": "a",
            "transitions": []}
    with pytest.raises(SpecError) as err:
        GuardSpec.from_dict(data)
    assert err.value.field == field and text in str(err.value)


def test_a_ref_ratio_of_a_norm_is_never_negative():
    data = {"name": "x", "signals": {"r": {"kind": "ref_ratio", "source": "update_ratio",
                                           "per": "lr"}},
            "regimes": {"a": {}, "b": {}}, "initial": "a",
            "transitions": [{"from": "a", "to": "b", "when": "r > -1"}]}
    with pytest.raises(SpecError, match="always holds"):
        GuardSpec.from_dict(data)


def test_the_v1_spec_is_shipped_with_its_hash_and_unknown_names_are_refused():
    assert GuardSpec.named("lbw-v1").hash == "e4f928a1441c"
    assert GuardSpec.named("lbw-default") == GuardSpec.default()
    assert GuardSpec.default().hash != "e4f928a1441c"
    with pytest.raises(SpecError, match="lbw-v1"):
        GuardSpec.named("lbw-v0")

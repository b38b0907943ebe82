import pytest
import yaml

from lbw_sim import SpecError
from lbw_sim.sim.scenarios import (
    SCENARIO_DIR,
    ArmSpec,
    Scenario,
    ScheduleSpec,
    list_scenarios,
    load_scenario,
)

BASE = {
    "name": "t",
    "model": {"kind": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8},
    "data": {"kind": "synthetic", "vocab_size": 8},
    "optimizer": {"lr": 1e-3},
    "steps": 5,
    "arms": ["adamw", "guard"],
}


def build(**changes):
    data = {**BASE, **changes}
    return Scenario.from_dict({k: v for k, v in data.items() if v is not None})


def test_shipped_scenarios_all_load():
    names = list_scenarios()
    assert {"quickstart", "lr_stress", "loss_spike", "nan_storm", "noisy_quadratic",
            "edge_of_stability"} <= set(names)
    for name in names:
        sc = load_scenario(name)
        assert sc.name == name and sc.arms and sc.description
        assert load_scenario(SCENARIO_DIR / f"{name}.yaml").name == name


def test_lr_stress_is_the_paper_grid_in_miniature():
    sc = load_scenario("lr_stress")
    assert sc.model == {"kind": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 64,
                        "block_size": 64}
    assert sc.batch_size == 32 and sc.schedule.warmup == 100 and sc.schedule.decay == "constant"
    assert sc.optimizer.betas == (0.9, 0.95) and sc.optimizer.weight_decay == 0.1
    assert sc.lrs[0] == 1e-3 and sc.lrs[-1] == pytest.approx(3.16e-1)
    assert all(b / a == pytest.approx(10**0.5, rel=0.01) for a, b in zip(sc.lrs, sc.lrs[1:]))
    assert [a.label for a in sc.arms] == ["adamw", "clip", "zclip", "skipstep", "schedulefree",
                                          "stableadamw", "guard", "guard:schedulefree",
                                          "adamw:cosine", "plateau", "prodigy"]


@pytest.mark.parametrize("changes, field", [
    ({"stepz": 3}, "stepz"),
    ({"steps": 0}, "steps"),
    ({"model": {"kind": "gpt", "n_layr": 2}}, "model.n_layr"),
    ({"model": {"kind": "gpt", "n_embd": 10, "n_head": 3}}, "model.n_head"),
    ({"model": {"kind": "transformer"}}, "model.kind"),
    ({"data": {"kind": "digits"}}, "data.kind"),
    ({"data": {"kind": "synthetic", "vocab_size": "many"}}, "data.vocab_size"),
    ({"data": {"kind": "text", "path": "missing.txt"}}, "data.path"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr"),
    ({"optimizer": {"kind": "adamw", "betas": [0.9]}}, "optimizer.betas"),
    ({"schedule": {"decay": "linear"}}, "schedule.decay"),
    ({"seeds": []}, "seeds"),
    ({"lrs": [1e-3, -1]}, "lrs[1]"),
    ({"arms": ["adamw", "sgdx"]}, "arms[1]"),
    ({"arms": ["adamw", "adamw"]}, "arms[1]"),
    ({"arms": ["adamw:lr_matched"]}, "arms[0]"),
    ({"arm_options": {"clipp": {}}}, "arm_options.clipp"),
    ({"faults": [{"kind": "lr_spike", "factor": -1, "at": 2}]}, "faults[0].factor"),
    ({"faults": [{"kind": "meteor", "at": 2}]}, "faults[0].kind"),
    ({"guard": {"spec": "default", "set": {"thresholds.spike_z": "x"}}},
     "guard.thresholds.spike_z"),
    ({"guard": "no_such_spec.yaml"}, "guard"),
    ({"divergence": {"factr": 2}}, "divergence.factr"),
])
def test_validation_names_the_field(changes, field):
    with pytest.raises(SpecError) as err:
        build(**changes)
    assert err.value.field == field, str(err.value)
    assert str(err.value).startswith(field)


def test_yaml_is_loaded_safely_and_reports_bad_yaml():
    with pytest.raises(SpecError, match="not valid YAML"):
        Scenario.from_yaml("name: [unclosed")
    with pytest.raises(SpecError, match="a scenario is a mapping"):
        Scenario.from_yaml("- 1\n- 2\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        Scenario.from_yaml("!!python/object/apply:os.system ['echo hacked']\n")


def test_unknown_scenario_name_lists_the_shipped_ones(tmp_path):
    with pytest.raises(SpecError, match="shipped: .*quickstart"):
        load_scenario("no_such_scenario")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**BASE, "name": "mine", "seeds": [3, 5],
                                    "guard": {"set": {"thresholds.spike_z": 8.0}}}))
    sc = load_scenario(path)
    assert sc.seeds == (3, 5) and sc.guard.thresholds["spike_z"] == 8.0
    assert sc.source == str(path)


def test_arm_labels_and_schedules():
    assert ArmSpec.parse("adamw:cosine", "a") == ArmSpec("adamw", "cosine")
    a = ArmSpec.parse("adamw:lr_matched=3e-3", "a")
    assert a.lr == 3e-3 and a.label == "adamw:lr_matched=0.003"
    assert ArmSpec.parse({"arm": "clip", "schedule": "constant"}, "a").label == "clip:constant"
    s = ScheduleSpec(warmup=10, decay="cosine", min_lr_ratio=0.1)
    assert s.factor(0, 110) == pytest.approx(0.1) and s.factor(9, 110) == 1.0
    assert s.factor(10, 110) == 1.0 and s.factor(110, 110) == pytest.approx(0.1)
    assert ScheduleSpec(warmup=0).factor(50, 100) == 1.0

"""The spec contract: whatever the validator accepts runs, everywhere, without an exception.

A spec is user input (typed into the designer, uploaded, passed to `GuardedOptimizer`). The
validator is the contract: a spec it refuses gets a SpecError naming the field; a spec it
accepts must run through every consumer. Hypothesis mutates fields of every shipped spec —
numbers (NaN, ±inf, 1e308, 2**63, negatives, 0), strings, names ('', None, keywords,
duplicates), conditions, deletions and list lengths — and each variant must either be
refused at load or run through `replay`, the batched sweep, the host backend
(`GuardedOptimizer`, a few steps of a tiny model), the torch backend (`TensorGuard`), the
designer's table round trip, the YAML round trip and the state diagram.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbw_sim import GuardedOptimizer
from lbw_sim.errors import SpecError
from lbw_sim.guard.diagram import to_dot
from lbw_sim.guard.engine import replay, replay_many
from lbw_sim.guard.spec import NAMED_SPECS, GuardSpec
from lbw_sim.guard.sweep import sweep
from lbw_sim.guard.torch_backend import TensorGuard
from lbw_sim.studio.editor import spec_from_tables, spec_tables

SHIPPED = {name: GuardSpec.named(name).to_dict() for name in NAMED_SPECS}

NUMBERS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 2**63, 2**64, -(2**63) - 1, 10**400,
           -1, -0.5, 0, 0.0, 1, 0.5, 1e-320, 1e-9, 10**6, 10**6 + 1, -(10**6), 10**9,
           10**9 + 1, 1e9, 1e9 + 0.5, 3.0, 0.03, 100, True, False]
STRINGS = ["", " ", "x", "loss_z > 1e999", "and", "not", "a b", "nominal", "*", "é", "1x",
           "#12345", "None"]
NAMES = ["", None, " ", "and", "or", "loss_z > 1e999", "a-b", "1abc", "loss", "lr", "step",
         "regime", "cause", "x", 7, True]
CONDITIONS = ["", "loss_z > 1e999", "loss_z > 1e308", "loss_z < -1e308", "1", "0", "not 1",
              "1 > 2", "nonfinite", "nonfinite > 0", "lr > 0", "lr < 0", "loss > -1e308",
              "loss_z != loss_z", "not (loss_z >= 2) and not (loss_z < 2)", "grad_norm >= 0",
              "(" * 70 + "loss_z > 1" + ")" * 70, "loss_z >" + " 1" * 10, "x" * 3000,
              "loss_z > 2 and grad_z", "lr_jump < 0.03", "lr_jump < 1", "loss_z < 0",
              "loss_z > 0 or not loss_z > 0"]
OTHER = [None, [], {}, [1, 2], {"a": 1}, "1e308", "nan"]
HOSTILE = st.sampled_from(NUMBERS + STRINGS + CONDITIONS + OTHER)


def leaf_paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value in nested dicts and lists (containers included, root excluded)."""
    out = [path] if path else []
    items = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out += leaf_paths(value, (*path, key))
    return out


def parent(data: Any, path: tuple) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


def set_value(data: dict, draw) -> None:
    path = draw(st.sampled_from(leaf_paths(data)))
    numeric = isinstance(parent(data, path)[path[-1]], (int, float))
    value = draw(st.sampled_from(NUMBERS)) if numeric and draw(st.booleans()) else draw(HOSTILE)
    parent(data, path)[path[-1]] = value


def delete(data: dict, draw) -> None:
    path = draw(st.sampled_from(leaf_paths(data)))
    del parent(data, path)[path[-1]]


def rename(data: dict, draw) -> None:
    section = draw(st.sampled_from(["signals", "regimes", "thresholds"]))
    if not data.get(section):
        return
    old = draw(st.sampled_from(sorted(data[section])))
    others = [k for s in ("signals", "regimes", "thresholds") for k in data.get(s) or {}]
    new = draw(st.sampled_from(NAMES + others))
    data[section] = {(new if k == old else k): v for k, v in data[section].items()}


def name_transition(data: dict, draw) -> None:
    trans = data["transitions"]
    i = draw(st.integers(0, len(trans) - 1))
    others = [t.get("name") for t in trans]
    trans[i]["name"] = draw(st.sampled_from(NAMES + others))
    if draw(st.booleans()):            # a second one named alike (or the key dropped)
        j = draw(st.integers(0, len(trans) - 1))
        if draw(st.booleans()):
            trans[j]["name"] = trans[i]["name"]
        else:
            trans[j].pop("name", None)


def count(data: dict, draw) -> None:
    """A transition's debounce, dwell or priority, a regime's skip_batches, a signal's
    warm-up or half-life, or a bound: the integer-valued fields."""
    spots = ([("transitions", i, k) for i in range(len(data["transitions"]))
              for k in ("for", "min_dwell", "priority")]
             + [("regimes", r, "skip_batches") for r in data["regimes"]]
             + [("signals", s, k) for s in data["signals"] for k in ("warmup", "half_life")]
             + [("bounds", k) for k in data["bounds"]])
    path = draw(st.sampled_from(spots))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = draw(st.sampled_from(NUMBERS))


def condition(data: dict, draw) -> None:
    trans = data["transitions"]
    i = draw(st.integers(0, len(trans) - 1))
    if draw(st.booleans()):
        trans[i]["when"] = draw(st.sampled_from(CONDITIONS))
        return
    names = [*data["signals"], *data.get("thresholds", {}), "loss", "lr", "grad_norm"]
    left = draw(st.sampled_from(names))
    op = draw(st.sampled_from([">", ">=", "<", "<=", "==", "!="]))
    right = draw(st.sampled_from([*names, "0", "-1", "1e308", "0.03", "1", "2", "1e-320"]))
    trans[i]["when"] = f"{left} {op} {right}"


def threshold(data: dict, draw) -> None:
    name = draw(st.sampled_from(sorted(data["thresholds"])))
    data["thresholds"][name] = draw(st.sampled_from(NUMBERS + [1.0, 1.5, 0.99, 1.01, -3.0]))


def resize(data: dict, draw) -> None:
    """List lengths: the transitions list, a `from` list, the regimes."""
    trans = data["transitions"]
    what = draw(st.sampled_from(["truncate", "duplicate", "from", "regime"]))
    if what == "truncate":
        del trans[draw(st.integers(0, len(trans))):]
    elif what == "duplicate":
        trans.append(copy.deepcopy(trans[draw(st.integers(0, len(trans) - 1))]))
    elif what == "from":
        t = trans[draw(st.integers(0, len(trans) - 1))]
        regimes = list(data["regimes"])
        t["from"] = draw(st.sampled_from([[], "*", regimes, [t["to"]], regimes[:1] * 2,
                                          [t["to"], "*"]]))
    else:
        del data["regimes"][draw(st.sampled_from(sorted(data["regimes"])))]


#: The mutations, in two families: what a spec names, and what it counts and compares.
NAMING = [rename, name_transition, resize, delete]
VALUES = [set_value, count, condition, threshold]


@st.composite
def variants(draw, mutations: list) -> dict:
    """A shipped spec with one or two hostile mutations drawn from `mutations`."""
    data = copy.deepcopy(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    for _ in range(draw(st.integers(1, 2))):
        try:
            draw(st.sampled_from(mutations))(data, draw)
        except (TypeError, KeyError, IndexError, AttributeError):
            break      # an earlier mutation broke the shape the next one edits: enough
    return data


def contract_trace(n: int = 300) -> pd.DataFrame:
    """Healthy noise with a loss and gradient spike, an LR jump and back, and NaN steps."""
    rng = np.random.default_rng(0)
    loss = 2.0 * np.exp(0.02 * rng.standard_normal(n)) - np.arange(n) * 1e-3
    grad = np.exp(0.1 * rng.standard_normal(n))
    lr = np.full(n, 1e-3)
    loss[120:124] *= 30.0
    grad[120:124] *= 500.0
    lr[150:200] *= 10.0
    loss[230:290] = np.nan
    grad[235:240] = np.inf
    return pd.DataFrame({"step": np.arange(n) * 2, "loss": loss, "grad_norm": grad, "lr": lr,
                         "update_ratio": 0.02 * np.exp(0.1 * rng.standard_normal(n))})


TRACE = contract_trace()


def run_everywhere(spec: GuardSpec) -> None:
    """Every consumer of a spec, briefly; any exception fails the contract."""
    out = replay(TRACE, spec, signals=True)
    assert len(out) == len(TRACE)
    assert len(replay_many(TRACE, [spec])[0]) == len(TRACE)
    assert len(sweep(TRACE, spec, points=[{}])) == 1
    guard = TensorGuard(spec)
    for r in TRACE.iloc[[0, 1, 2, 120, 121, 150, 230, 235]].itertuples():
        guard.observe(int(r.step), **{c: torch.tensor(getattr(r, c), dtype=torch.float64)
                                      for c in ("loss", "grad_norm", "lr", "update_ratio")})
    assert len(guard.trace()) == 8
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    opt = GuardedOptimizer(torch.optim.AdamW(net.parameters(), lr=1e-3), spec, decide_on="host")
    x = torch.randn(16, 4)
    for step in range(5):
        loss = net(x).pow(2).mean() * (math.nan if step == 3 else 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
    assert len(opt.trace()) == 5
    assert spec_from_tables(spec, spec_tables(spec)).hash == spec.hash
    assert GuardSpec.from_yaml(spec.to_yaml()).hash == spec.hash
    assert to_dot(spec).startswith("digraph")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_spec_runs_everywhere(name):
    run_everywhere(GuardSpec.named(name))


def refused_or_runs(data: dict) -> None:
    try:
        spec = GuardSpec.from_dict(data)
    except SpecError as exc:
        assert exc.field and "\n" not in str(exc), str(exc)
        return
    run_everywhere(spec)


CONTRACT = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@CONTRACT
@given(data=variants(NAMING))
def test_a_renamed_resized_or_pruned_spec_is_refused_or_runs_everywhere(data):
    """Names ('' / None / keywords / duplicates), renamed keys, list lengths, deletions."""
    refused_or_runs(data)


@CONTRACT
@given(data=variants(VALUES))
def test_a_spec_with_hostile_values_is_refused_or_runs_everywhere(data):
    """Numbers (NaN, inf, 1e308, 2**63, 10**400, negatives, 0), strings and conditions."""
    refused_or_runs(data)

"""Streamlit AppTest: every page renders without an exception (logic only, no browser)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lbw_sim.guard.spec import GuardSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home():
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()


def test_home_renders_replay_and_spec(home):
    assert not home.exception
    assert "LBW Studio" in home.title[0].value
    transitions = home.dataframe[0].value
    spec = GuardSpec.default()       # the example's spike cuts the LR, its NaN storm skips
    led_to = [spec.regimes[r] for r in transitions["regime"]]
    assert any(r.lr_scale < 1 and not r.skip for r in led_to)
    assert any(r.skip and not r.rollback for r in led_to)
    assert any("regime" in c.value for c in home.caption)

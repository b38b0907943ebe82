"""Streamlit AppTest: every page renders without an exception (logic only, no browser)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home():
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()


def test_home_renders_replay_and_spec(home):
    assert not home.exception
    assert "LBW Studio" in home.title[0].value
    transitions = home.dataframe[0].value
    assert {"nonfinite", "spike"} <= set(transitions["transition"])
    assert any("regime" in c.value for c in home.caption)

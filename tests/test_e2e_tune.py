"""End to end (issue 14): a log uploaded once serves every page; a brushed range is a label.

Headless Chromium against `streamlit run app.py` (fixtures and helpers from test_e2e.py).
Pages are changed through the sidebar, never by URL: a new URL is a new browser session.
Run alone with `python -m pytest -m e2e tests/test_e2e_tune.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_e2e import (  # noqa: F401 (fixtures)
    CHROMIUM,
    SHOTS,
    assert_healthy,
    browser,
    button,
    open_page,
    page,
    server,
    settle,
    upload,
)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")]
LOG = ROOT / "examples" / "loss_spike.csv"


def go(pg, title: str) -> None:
    """Open a page through the sidebar (same browser session, so session_state stays)."""
    pg.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    settle(pg)


def edit_threshold(pg, row: int, text: str) -> None:
    """Type into the `value` cell of a row of the designer's thresholds table (a canvas grid:
    double-click the cell to open its editor, replace the text, Enter)."""
    grid = pg.get_by_test_id("stDataFrame").first
    box = grid.bounding_box()
    pg.mouse.dblclick(box["x"] + 0.75 * box["width"], box["y"] + 35 * (row + 1) + 17)
    editor = pg.locator("#portal textarea, #portal input").first
    editor.wait_for(timeout=10_000)
    editor.fill(text)
    pg.keyboard.press("Enter")
    settle(pg)


def shown(pg, text: str) -> bool:
    """Whether `text` is on the page (inputs included: a selectbox shows its value there)."""
    return pg.get_by_text(text).count() > 0 or text in pg.get_by_test_id("stMain").evaluate(
        "m => [...m.querySelectorAll('input')].map(i => i.value).join('|')")


def main_text(pg) -> str:
    return pg.get_by_test_id("stMain").inner_text()


def test_log_uploaded_once_serves_designer_regimes_and_tune(page):  # noqa: F811
    open_page(page, "replay")
    page.get_by_text("Upload a log").click()
    settle(page)
    upload(page, LOG.name, LOG.read_bytes())
    page.wait_for_selector(f"text=Read {LOG.name}", timeout=30_000)
    go(page, "Guard designer")
    assert shown(page, f"Your log: {LOG.name}")             # the preview is on it
    edit_threshold(page, 1, "2.5e0")                         # spike_z = 2.5
    page.wait_for_selector("code:has-text('lbw-default (edited)')", timeout=30_000)
    assert_healthy(page, "tune_flow_designer", plots=1)
    go(page, "Regimes")
    text = main_text(page)
    assert f"Your log: {LOG.name}" in text and "lbw-default (edited)" in text
    assert_healthy(page, "tune_flow_regimes", plots=2)
    go(page, "Tune")
    text = main_text(page)
    assert f"Your log: {LOG.name}" in text
    assert "Sweeping around the designer's spec `lbw-default (edited)`" in text or \
        "lbw-default (edited)" in text
    assert_healthy(page, "tune_flow_tune", plots=2)


def brush(pg, chart, x0: float, x1: float) -> None:
    """Drag a box across a plotly chart, at fractions x0..x1 of its plot area's width."""
    area = chart.locator(".nsewdrag").first.bounding_box()
    y = area["y"] + area["height"] / 2
    pg.mouse.move(area["x"] + x0 * area["width"], area["y"] + 5)
    pg.mouse.down()
    pg.mouse.move(area["x"] + (x0 + x1) / 2 * area["width"], y, steps=5)
    pg.mouse.move(area["x"] + x1 * area["width"], area["y"] + area["height"] - 5, steps=5)
    pg.mouse.up()
    settle(pg)


def metric(pg, label: str) -> str:
    m = pg.locator('[data-testid="stMetric"]', has_text=label).first
    return m.locator('[data-testid="stMetricValue"]').inner_text()


def test_brushed_range_becomes_a_label_and_changes_the_score(page):  # noqa: F811
    open_page(page, "tune")
    assert_healthy(page, "tune", plots=2)
    assert metric(page, "Incidents") == "2"
    recall = metric(page, "Recall")
    brush(page, page.locator(".js-plotly-plot").first, 0.05, 0.15)
    add = page.get_by_role("button", name="as an incident")
    add.wait_for(timeout=30_000)
    add.click()
    settle(page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stMetric]')].some("
        "m => m.innerText.includes('Incidents') && m.innerText.includes('3'))", timeout=30_000)
    assert metric(page, "Recall") != recall
    assert_healthy(page, "tune_labelled", plots=2)

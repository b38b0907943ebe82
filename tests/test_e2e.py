"""End to end: `streamlit run app.py` driven by headless Chromium through every page.

Checks what AppTest cannot: charts are drawn (plotly SVG, graphviz SVG), no exception box,
the Home demo finishes, and a real upload on Replay works (and a hostile one does not
break the page). Screenshots of every page go to `screenshots/` (git-ignored).
Run alone with `python -m pytest -m e2e tests/test_e2e.py`. The Tune flow is at
the end: one upload serves the designer, Regimes and Tune; a brushed range becomes a label;
a real log swept on Tune, a point adopted by the table, seen in the designer and export.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ranks import free_port

from lbw_sim.guard.spec import GuardSpec

#: The studio starts from the default: names and values read off it, never typed in.
DEFAULT = GuardSpec.default()
#: The designer names an edit by what changed: spike_z just above watch_z's exit.
LOW_SPIKE = DEFAULT.thresholds["watch_z"] + 0.5
EDITED = f"{DEFAULT.name} (spike_z {LOW_SPIKE:g})"

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"{CHROMIUM} is missing (apt-get install chromium)")]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def button(pg, name: str):
    """A button in the page body, by its label.

    Streamlit's header status widget has its own "Stop" button while a script runs, so
    lookups are scoped to the main block to stay unambiguous.
    """
    return pg.get_by_test_id("stMainBlockContainer").get_by_role("button", name=name)


@contextlib.contextmanager
def streamlit_server(log_name: str = "server.log"):
    """`streamlit run app.py` on a free port; yields its URL once healthy."""
    port = free_port()
    SHOTS.mkdir(exist_ok=True)
    log = (SHOTS / log_name).open("w")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        # a miniature grid small enough to finish on a loaded 2-core machine
        env={**os.environ, "PYTHONPATH": str(ROOT), "LBW_STRESS_MINI_STEPS": "40",
             "LBW_STRESS_MINI_LRS": "0.01,1.0"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("streamlit did not become healthy within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def server():
    with streamlit_server() as url:
        print(f"\nscreenshots: {SHOTS}")
        yield url


@pytest.fixture(scope="session")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 2300})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.base = server
    yield pg
    ctx.close()


def settle(pg) -> None:
    """Wait until the script run is over and the page has painted."""
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                         timeout=90_000)
    pg.wait_for_timeout(400)
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]',
                         timeout=90_000)


def open_page(pg, path: str) -> None:
    pg.goto(f"{pg.base}/{path}")
    pg.wait_for_selector('[data-testid="stMain"]')
    settle(pg)


def assert_healthy(pg, name: str, plots: int = 0, graphviz: int = 0) -> None:
    pg.wait_for_timeout(300)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert pg.locator('[data-testid="stException"]').count() == 0, f"{name}: exception shown"
    if plots:
        pg.wait_for_selector(".js-plotly-plot .main-svg")
        drawn = pg.locator(".js-plotly-plot")
        assert drawn.count() >= plots, f"{name}: {drawn.count()} plotly charts, want {plots}"
        for i in range(drawn.count()):
            box = drawn.nth(i).bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100, f"{name}: empty chart"
            assert drawn.nth(i).locator(".scatterlayer .trace, .contourlayer, .gl-container"
                                        ).count() > 0, f"{name}: chart {i} has no data"
    if graphviz:
        pg.wait_for_selector('[data-testid="stGraphVizChart"] svg')
        assert pg.locator('[data-testid="stGraphVizChart"] svg g.node').count() >= 3


def test_home_demo(page):
    open_page(page, "")
    button(page, "Run the demo").click()
    page.wait_for_selector("text=held stable", timeout=60_000)
    settle(page)
    assert_healthy(page, "home", plots=2, graphviz=1)


def test_designer(page):
    open_page(page, "designer")
    assert_healthy(page, "designer", plots=1, graphviz=1)
    page.get_by_role("tab", name="Regimes").click()
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "designer_regimes_tab.png"))


def test_regimes(page):
    open_page(page, "regimes")
    assert_healthy(page, "regimes", plots=2)


def test_trajectories(page):
    open_page(page, "trajectories")
    assert_healthy(page, "trajectories", plots=1)
    page.locator(".updatemenu-button").first.click()
    page.wait_for_timeout(800)
    assert page.locator('[data-testid="stException"]').count() == 0


def upload(page, name: str, data: bytes) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
        files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}])
    settle(page)


def test_replay_upload(page):
    open_page(page, "replay")
    assert_healthy(page, "replay_example", plots=2)
    page.get_by_text("Upload a log").click()
    settle(page)
    upload(page, "garbage.csv", os.urandom(3000))
    page.wait_for_selector("text=Could not read the upload")
    assert_healthy(page, "replay_bad_upload")
    rows = "\n".join(f"{i},{2 + 0.3 * (i == 400) * 5:.3f},{1 + 10 * (i == 400):.3f}"
                     for i in range(1000))
    upload(page, "my_run.csv", f"step,loss,grad_norm\n{rows}\n".encode())
    page.wait_for_selector("text=Your log: my_run.csv", timeout=30_000)
    assert page.locator("text=Could not read the upload").count() == 0
    assert_healthy(page, "replay_upload", plots=2)


# --- Live training ---------------------------------------------------------------------------

def step_count(pg) -> int:
    metric = pg.locator('[data-testid="stMetric"]', has_text="Step")
    return int(metric.locator('[data-testid="stMetricValue"]').inner_text())


def start_live(pg, steps: int = 20_000) -> None:
    """Open Live training, ask for a long run, press Start, wait for the first rows."""
    open_page(pg, "live")
    box = pg.get_by_label("Steps")
    box.fill(str(steps))
    box.press("Enter")
    settle(pg)
    button(pg, "Start").click()
    pg.wait_for_selector('[data-testid="stMetric"]:has-text("Step")', timeout=60_000)
    pg.wait_for_selector(f"{VEGA} .mark-line path", state="attached", timeout=60_000)


VEGA = '[data-testid="stVegaLiteChart"]'


def live_line(pg) -> str:
    """The loss chart's line geometry (changes when the chart is redrawn with new data)."""
    return pg.locator(f"{VEGA} .mark-line path").first.get_attribute("d") or ""


def live_charts_problem(pg) -> str:
    """'' when the three live charts are drawn with a line each, else what is wrong."""
    charts = pg.locator(VEGA)
    if charts.count() != 3:
        return f"{charts.count()} live charts, want 3"
    for i in range(3):
        box = charts.nth(i).bounding_box()
        if not (box and box["width"] > 300 and box["height"] > 100):
            return f"empty chart {i}"
        if charts.nth(i).locator(".mark-line path").count() == 0:
            return f"no line in chart {i}"
    return ""


def assert_live_healthy(pg, name: str) -> None:
    """No exception and three drawn charts. While training, the fragment redraws every
    second and a chart is briefly absent mid-redraw, so the charts are polled (5 s)."""
    pg.wait_for_timeout(300)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert pg.locator('[data-testid="stException"]').count() == 0, f"{name}: exception shown"
    for _ in range(25):
        problem = live_charts_problem(pg)
        if not problem:
            break
        pg.wait_for_timeout(200)
    assert not problem, f"{name}: {problem}"


def counter_changes(pg, seconds: float = 3.0) -> list[float]:
    """Times (s) at which the step counter changed while polled every 100 ms."""
    t0, last, changes = time.monotonic(), step_count(pg), []
    while time.monotonic() - t0 < seconds:
        pg.wait_for_timeout(100)
        now = step_count(pg)
        if now != last:
            changes.append(round(time.monotonic() - t0, 2))
        last = now
    return changes


def trace_hashes(pg) -> set[str]:
    """spec_hash values of the guarded rows in the downloaded trace CSV."""
    snapshot = button(pg, "Snapshot the trace for download")
    if snapshot.count():                  # while training: bytes are made on request
        snapshot.click()
        settle(pg)
    with pg.expect_download() as dl:
        button(pg, "Download trace (CSV)").click()
    lines = Path(dl.value.path()).read_text().splitlines()
    col = lines[0].split(",").index("spec_hash")
    return {line.split(",")[col] for line in lines[1:] if line.startswith("guarded,")}


def stop_live(pg) -> int:
    button(pg, "Stop").click()
    pg.wait_for_selector("text=Stopped", timeout=30_000)
    settle(pg)
    return step_count(pg)


def test_live_training_in_two_sessions(page, browser):
    """A trains and redraws every second; B (another browser session) sees no run of A's and
    trains at the same time; A's threshold edit shows in A's trace only; A's Stop spares B."""
    start_live(page)
    line = live_line(page)
    changes = counter_changes(page)
    print(f"\nstep counter changed at {changes} s")
    assert len(changes) >= 2, f"charts did not update every second: {changes}"
    assert live_line(page) != line, "the chart was not redrawn"
    assert_live_healthy(page, "live_running")
    ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
    other = ctx.new_page()
    other.set_default_timeout(60_000)
    other.base = page.base
    try:
        open_page(other, "live")
        assert other.locator('[data-testid="stMetric"]').count() == 0
        assert other.get_by_text("Press Start to train").count() == 1
        start_live(other)
        old = float(DEFAULT.thresholds["spike_z"])
        new = (old + DEFAULT.thresholds["watch_z"]) / 2      # lower, still above the exit
        page.get_by_label("spike_z", exact=True).fill(f"{new:g}")
        button(page, "Apply thresholds").click()
        page.wait_for_selector("text=takes over at the next step")
        page.wait_for_selector(f"text=thresholds.spike_z: {old} → {float(f'{new:g}')}",
                               timeout=30_000)
        assert len(trace_hashes(page)) == 2
        a_stopped = stop_live(page)
        b_before = step_count(other)
        for _ in range(40):                 # B keeps training: poll, however slow the machine
            other.wait_for_timeout(500)
            if step_count(other) > b_before:
                break
        assert step_count(other) > b_before, "B stopped with A"
        # exact: the status box's bold "Stopped", not a chart label "… stopped at step N"
        assert step_count(page) == a_stopped
        assert other.get_by_text("Stopped", exact=True).count() == 0
        assert len(trace_hashes(other)) == 1
        other.screenshot(path=str(SHOTS / "live_other_session.png"), full_page=True)
        stop_live(other)
        assert other.locator('[data-testid="stException"]').count() == 0
    finally:
        ctx.close()
    assert_live_healthy(page, "live_stopped")


def test_stress_miniature_grid(page):
    open_page(page, "stress")
    page.wait_for_selector("text=The committed suites")      # both specs, on arrival
    page.screenshot(path=str(SHOTS / "stress_arrival.png"))
    page.get_by_text("Run a miniature grid").click()
    settle(page)
    button(page, "Run the miniature grid").click()
    page.wait_for_selector('[data-testid="stProgress"]', timeout=30_000)
    page.screenshot(path=str(SHOTS / "stress_running.png"))
    # wait on the page's own state (a finished status), however long a loaded box takes
    page.wait_for_selector("text=Miniature grid finished", timeout=900_000)
    settle(page)
    assert page.locator('[data-testid="stProgress"]').count() == 0
    assert_healthy(page, "stress", plots=3)


def test_a_page_url_on_a_fresh_server_opens_through_the_navigation(browser):
    """Before app.py has run once, Streamlit serves pages/ files the legacy way (raw file
    names such as `common` in the sidebar); the page must hand over to app.py."""
    with streamlit_server("fresh_server.log") as url:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1200})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        try:
            pg.goto(f"{url}/regimes")
            pg.wait_for_selector("h1:has-text('Regimes')")
            settle(pg)
            links = pg.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
            assert any("Guard designer" in t for t in links), links
            assert not any(t.strip() in ("common", "app") for t in links), links
            assert pg.url.endswith("/regimes")
            assert pg.locator('[data-testid="stException"]').count() == 0
        finally:
            ctx.close()


# --- a log uploaded once serves every page; a brushed range is a label -------------------
# Pages are changed through the sidebar, never by URL: a new URL is a new browser session.

LOG = ROOT / "examples" / "loss_spike.csv"   # a real log file, uploaded once


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


def test_log_uploaded_once_serves_designer_regimes_and_tune(page):
    open_page(page, "replay")
    page.get_by_text("Upload a log").click()
    settle(page)
    upload(page, LOG.name, LOG.read_bytes())
    page.wait_for_selector(f"text=Your log: {LOG.name}", timeout=30_000)
    go(page, "Guard designer")
    assert shown(page, f"Your log: {LOG.name}")             # the preview is on it
    edit_threshold(page, list(DEFAULT.thresholds).index("spike_z"), f"{LOW_SPIKE:g}e0")
    page.wait_for_selector(f"code:has-text('{EDITED}')", timeout=30_000)
    assert_healthy(page, "tune_flow_designer", plots=1)
    go(page, "Regimes")
    text = main_text(page)
    assert f"Your log: {LOG.name}" in text and EDITED in text
    assert_healthy(page, "tune_flow_regimes", plots=2)
    go(page, "Tune")
    text = main_text(page)
    assert f"Your log: {LOG.name}" in text
    assert f"Sweeping around the designer's spec `{EDITED}`" in text or EDITED in text
    assert_healthy(page, "tune_flow_tune", plots=2)
    chart = page.get_by_test_id("stPlotlyChart").nth(1)      # the trade-off
    chart.scroll_into_view_if_needed()
    points = chart.locator(".scatterlayer .trace").first.locator("path.point")
    points.nth(points.count() - 1).click(force=True)          # a click picks that spec
    page.wait_for_selector("text=The designer's spec is now", timeout=30_000)
    assert_healthy(page, "tune_flow_picked", plots=2)


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


def test_brushed_range_becomes_a_label_and_changes_the_score(page):
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


#: A real fine-tuning log (a Hugging Face trainer_state.json) where the shared traces are at
#: hand; the example log otherwise, so the flow runs everywhere.
REAL_LOG = next((p for p in [ROOT.parent / "shared" / "traces" /
                             "hf_syGOAT_Mistral-v0.2-Translator-bf16_trainer_state.json"]
                 if p.is_file()), LOG)


def grid_cell(pg, grid, row: int, x: float) -> tuple[float, float]:
    """Screen point of a data row of a canvas table (35 px rows under a 35 px header)."""
    box = grid.bounding_box()
    return box["x"] + x, box["y"] + 35 * (row + 1) + 17


def test_tune_reads_points_apart_and_adopts_one_by_the_table(page):
    """Upload a real log, sweep on Tune: two outcomes drawn apart on the trade-off chart;
    tick a row of the swept-specs table: the designer's diff and export show the change."""
    open_page(page, "tune")
    page.get_by_text("Upload a log").click()
    settle(page)
    upload(page, REAL_LOG.name, REAL_LOG.read_bytes())
    page.wait_for_selector(f"text=Your log: {REAL_LOG.name}", timeout=30_000)
    settle(page)
    chart = page.get_by_test_id("stPlotlyChart").nth(1)      # the trade-off
    chart.scroll_into_view_if_needed()
    points = chart.locator(".scatterlayer .trace").first.locator("path.point")
    boxes = [points.nth(i).bounding_box() for i in range(points.count())]
    assert len(boxes) >= 2, "one mark for every outcome: want two distinct outcomes"
    far = max(abs(a["x"] - b["x"]) + abs(a["y"] - b["y"]) for a in boxes for b in boxes)
    assert far > 100, f"distinct outcomes drawn {far:.0f} px apart"
    assert_healthy(page, "tune_real_log", plots=2)
    table = page.get_by_test_id("stDataFrame").last          # the swept specs
    table.scroll_into_view_if_needed()
    page.mouse.click(*grid_cell(page, table, 0, 15))         # tick the first swept spec
    page.wait_for_selector("text=The designer's spec is now", timeout=30_000)
    settle(page)
    picked = page.get_by_text("The designer's spec is now").inner_text()
    assert "watch_z" in picked
    go(page, "Guard designer")
    assert "Changes against" in main_text(page) and "No changes yet" not in main_text(page)
    with page.expect_download() as download:
        button(page, "Export YAML").click()
    name = download.value.suggested_filename
    assert "watch_z" in name and " " not in name and name.endswith(".yaml")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "Changed from" in text and "thresholds.watch_z" in text
    assert_healthy(page, "tune_adopted_designer", plots=1)

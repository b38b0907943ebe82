"""End to end: `streamlit run app.py` driven by headless Chromium through every page.

Checks what AppTest cannot: charts are drawn (plotly SVG, graphviz SVG), no exception box,
the Home demo finishes, and a real upload on Replay works (and a hostile one does not
break the page). Screenshots of every page go to `screenshots/` (git-ignored).
Run alone with `python -m pytest -m e2e tests/test_e2e.py`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"{CHROMIUM} is missing (apt-get install chromium)")]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    port = free_port()
    SHOTS.mkdir(exist_ok=True)
    log = (SHOTS / "server.log").open("w")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not become healthy within 60 s")
    print(f"\nscreenshots: {SHOTS}")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


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
    page.get_by_role("button", name="Run the demo").click()
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
    page.wait_for_selector("text=Read **my_run.csv**".replace("**", ""), timeout=30_000)
    assert page.locator("text=Could not read the upload").count() == 0
    assert_healthy(page, "replay_upload", plots=2)


def test_stress_miniature_grid(page):
    open_page(page, "stress")
    page.get_by_role("button", name="Run the miniature grid").click()
    page.wait_for_selector('[data-testid="stProgress"]', timeout=30_000)
    page.screenshot(path=str(SHOTS / "stress_running.png"))
    page.wait_for_selector("text=Worst ratio per arm", timeout=300_000)  # busy 2-core box
    settle(page)
    assert page.locator('[data-testid="stProgress"]').count() == 0
    assert_healthy(page, "stress", plots=3)

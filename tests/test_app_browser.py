"""The app in a real browser: Debian's Chromium driven by Playwright.

Starts `streamlit run app/main.py` (the command `cyb app` runs) on a free local port over the
fixture database, sets filters in the sidebar, visits every page through the sidebar links
(one browser session, so the filters must persist), waits for the charts, asserts that no
error box shows and saves a screenshot of each page under test-output/screenshots/. The app
opens on the fixture's dataset with synthetic lines and on its CYB-AP run, and, served as
`cyb app` serves it, shows no "Deploy" button.

Needs /usr/bin/chromium (apt-get install chromium) and the `playwright` Python package; it
never runs `playwright install`. Skips with the reason when either is missing.

The Playground is visited with the other pages (no stored run has its checkpoint on disk, so
it asks for a path) and driven on its own, marked slow (`pytest -m slow
tests/test_app_browser.py`): load the shipped checkpoint data/base-mixed by its path, type a
sentence and see its coloured tokens, generate a continuation with pauses, save the scored
text, and stop a long generation while it streams. The server works on a copy of the fixture
database, so that save changes nothing the other tests read.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(
        f"{CHROMIUM} is missing (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the playwright package is missing or broken (pip install playwright)",
    exc_type=ImportError,
)

from fixtures_app import build_db  # noqa: E402
from support import ROOT  # noqa: E402

from cyb.commands.app import streamlit_command  # noqa: E402

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
SHOTS = ROOT / "test-output" / "screenshots"
CHART = ".js-plotly-plot .main-svg"
# sidebar link -> what shows that the page has rendered
PAGES = {
    "Runs": CHART,
    "Classes": CHART,
    "Text": ".cyb-text span[title]",
    "Latency": CHART,
    "Tokens": CHART,
    "Linguistics": CHART,
    "Calibration": CHART,
    "Playground": '[data-testid="stTextInput"]',  # the checkpoint path to type
    "Export": '[data-testid="stDownloadButton"]',
}
ERRORS = (
    '[data-testid="stException"], [data-testid="stAlertContentError"], '
    '[data-testid="stAlertContentWarning"]'
)
DEPLOY = '[data-testid="stAppDeployButton"]'
TIMEOUT_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    tmp = Path(tempfile.mkdtemp(prefix="cyb-browser-test-"))
    db = tmp / "cyb.duckdb"  # the Playground's save writes here, not into the shared fixture
    shutil.copyfile(build_db()[0], db)
    port = _free_port()
    log = open(tmp / "streamlit.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        streamlit_command("127.0.0.1", port),
        cwd=ROOT,
        env={**os.environ, "CYB_DB": str(db)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("streamlit did not start:\n" + Path(log.name).read_text()[-2000:])
            time.sleep(0.3)
        yield url, db
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _settle(page, ready: str) -> None:
    """Wait for the page's marker, then for the script run to finish and charts to draw."""
    page.wait_for_selector(ready, timeout=TIMEOUT_MS)
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=TIMEOUT_MS
    )
    page.wait_for_timeout(800)  # plotly's transitions


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to it."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1500, "height": min(max(height, 1000), 8000)})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1500, "height": 1000})


def _errors(page) -> list[str]:
    return [e.inner_text()[:300] for e in page.query_selector_all(ERRORS)]


def test_every_page_in_chromium(server):
    server, _ = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(server, timeout=TIMEOUT_MS)
            _settle(page, PAGES["Runs"])
            assert page.locator('[data-testid="stMainMenu"]').count() == 1  # the toolbar is there
            assert page.locator(DEPLOY).count() == 0  # app/.streamlit/config.toml
            # the app opens on the Runs page with the Frontier chart drawn (its title is SVG text)
            assert page.get_by_text("Frontier on mixed/heldout.c1500").first.is_visible()
            drawn = page.locator(".js-plotly-plot").filter(has_text="Frontier: mean nll")
            assert drawn.count() == 1 and drawn.first.is_visible()
            sidebar = page.get_by_test_id("stSidebar")
            assert sidebar.get_by_text("ap-full:mixed/heldout.c1500:dense").first.is_visible()
            # filters in the sidebar: compare with the TBYS run, minimum count 20 -> 5
            sidebar.get_by_test_id("stMultiSelect").click()
            page.get_by_role("option", name="tbys-3").click()
            page.keyboard.press("Escape")
            _settle(page, PAGES["Runs"])
            sidebar.get_by_role("slider").focus()
            for _ in range(15):
                page.keyboard.press("ArrowLeft")
            _settle(page, PAGES["Runs"])

            for i, (name, ready) in enumerate(PAGES.items(), 1):
                sidebar.get_by_test_id("stSidebarNavLink").filter(has_text=name).click()
                _settle(page, ready)
                assert page.get_by_role("heading", name=name).first.is_visible()
                shot = SHOTS / f"{i}-{name.lower()}.png"
                _screenshot(page, shot)
                assert not _errors(page), f"{name}: {_errors(page)}"
                assert shot.stat().st_size > 10_000
                if ready == CHART:
                    assert page.locator(CHART).count() >= 1
                if name == "Classes":  # the three classes, for the run and the one compared
                    assert page.get_by_text("E[S] on answers").first.is_visible()
                if name == "Text":  # hover data and the second run side by side
                    title = page.locator(".cyb-text span[title]").first.get_attribute("title")
                    assert "d_i [" in title and "POS" in title
                    assert page.get_by_text("B: tbys-3").first.is_visible()
                if name == "Tokens":  # the sidebar's minimum count survived two page changes
                    assert page.get_by_text("at least 5 occurrences").first.is_visible()
                if name == "Export":  # a deferred download really produces a file
                    with page.expect_download(timeout=TIMEOUT_MS) as dl:
                        page.get_by_role("button", name="CSV").first.click()
                    path = dl.value.path()
                    assert Path(path).read_text().startswith("eval_id,")
                    png = page.get_by_role("button", name="PNG")
                    if png.count():  # kaleido is installed: a figure as PNG, made by the server
                        with page.expect_download(timeout=TIMEOUT_MS) as dl:
                            png.first.click()
                        assert Path(dl.value.path()).read_bytes()[:4] == b"\x89PNG"

            # a fresh session opened on a page's own URL still gets the sidebar's filters
            page.goto(f"{server}/tokens", timeout=TIMEOUT_MS)
            _settle(page, CHART)
            assert page.get_by_role("heading", name="Tokens").first.is_visible()
            assert page.get_by_test_id("stSidebar").get_by_role("slider").count() == 1
            assert page.get_by_text("at least 20 occurrences").first.is_visible()
            assert not _errors(page), _errors(page)
        finally:
            browser.close()


@pytest.mark.slow  # about 50 s on a busy 2-core machine: a model, spaCy, two generations
def test_playground_in_chromium(server):
    server, db = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"{server}/playground", timeout=TIMEOUT_MS)
            _settle(page, '[data-testid="stTextInput"]')  # no stored run has its checkpoint
            assert page.get_by_role("heading", name="Playground").first.is_visible()
            path = page.get_by_label("Checkpoint of A")
            path.fill("data/base-mixed")  # shipped with the project; the server runs in ROOT
            path.press("Enter")
            _settle(page, ".cyb-text span[title]")
            text = page.get_by_label("Text", exact=True)
            text.fill("The cat sat on the mat. Check the sum: 94 + 72 = 166.")
            text.press("Control+Enter")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.cyb-text span.tok')]"
                ".map(s => s.textContent).join('').includes('94 + 72')",
                timeout=TIMEOUT_MS,
            )
            _settle(page, ".cyb-text span[title]")
            tokens = page.locator(".cyb-text span.tok")
            assert tokens.count() > 10
            assert "background:" in (tokens.first.get_attribute("style") or "")
            title = tokens.first.get_attribute("title")
            assert "d_i [" in title and "POS" in title
            assert page.locator(CHART).count() >= 1  # the latency histogram
            assert not _errors(page), _errors(page)

            prompt = page.get_by_label("Prompt", exact=True)
            prompt.fill("Check the sum: 6 + 8 =")
            prompt.press("Control+Enter")
            _settle(page, ".cyb-text span[title]")
            page.get_by_role("button", name="Generate").click()
            _settle(page, ".cyb-gen span.gen")
            generated = page.locator(".cyb-gen span.gen")
            assert generated.count() > 0
            assert page.locator(".cyb-gen span.cnt").first.inner_text().startswith("[")
            assert page.get_by_text("cyb generate").first.is_visible()
            assert not _errors(page), _errors(page)

            page.get_by_role("button", name="Save to the database").click()
            _settle(page, '[data-testid="stAlertContentSuccess"]')
            saved = page.locator('[data-testid="stAlertContentSuccess"]').inner_text()
            assert "base-mixed:playground/The_cat_sat_on_the-" in saved
            _screenshot(page, SHOTS / "10-playground-scored.png")
            assert not _errors(page), _errors(page)

            # a long Recipe 2 generation, stopped while it streams
            page.get_by_text("Recipe 2: pauses when the model asks").click()
            _settle(page, ".cyb-gen span.gen")
            most = page.get_by_label("Max new tokens")
            most.fill("256")
            most.press("Enter")
            _settle(page, ".cyb-gen span.gen")
            page.get_by_role("button", name="Generate").click()
            page.wait_for_selector("text=tokens so far", timeout=TIMEOUT_MS)
            main = page.get_by_test_id("stMainBlockContainer")  # not the toolbar's own Stop
            main.get_by_role("button", name="Stop").click()
            _settle(page, "text=stopped")
            shown = page.locator(".cyb-gen span.gen").count()
            assert 0 < shown < 256 and not _errors(page), _errors(page)
        finally:
            browser.close()
    from analysis import lookups, store

    with store.reading(db) as con:
        ids = list(lookups.list_evals(con)["eval_id"])
    assert any(e.startswith("base-mixed:playground/The_cat_sat_on_the-") for e in ids)

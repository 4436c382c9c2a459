"""The demo page in a real headless browser (Debian's chromium driven by Playwright): type text,
click Speak, and the page's audio element receives the streamed audio. The screenshot is kept
in test-artifacts/demo-page.png."""

import shutil

import pytest

from tests.server.helpers import API_KEY, ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_demo_page_plays_streamed_audio(server, browser):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    assert page.title() == "vllm-chatterbox"
    page.fill("#api-key", API_KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("document.querySelector('#voice').options.length >= 1")
    page.fill("#text", "Hello from the browser test. The audio should stream into the player.")
    page.fill("#seed", "7")
    page.click("#speak")
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('done')", timeout=300_000)
    received = int(page.eval_on_selector("#player", "player => player.dataset.received"))
    buffered = page.eval_on_selector(
        "#player", "player => player.buffered.length ? player.buffered.end(player.buffered.length - 1) : 0")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-page.png"), full_page=True)
    status = page.text_content("#status")
    assert received > 1000, status
    assert buffered > 0.5, (buffered, status)  # seconds of audio the <audio> element holds
    assert "error" not in status
    assert errors == []
    page.close()

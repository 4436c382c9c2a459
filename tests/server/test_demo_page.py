"""The demo page in a real headless browser (Debian's chromium driven by Playwright), as a user
meets it: one page load per server, the steps of a visit in order. The screenshots are kept in
test-artifacts/."""

import shutil

import httpx
import pytest

from tests.server.helpers import API_KEY, ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
DONE = "document.querySelector('#status').textContent.startsWith('done')"
PLAYER_SILENT = "player => player.paused && !player.hasAttribute('src') && player.readyState === 0"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Visit:
    """One page load on one server, kept for the steps of a scenario."""

    def __init__(self, browser, server):
        self.page = browser.new_page()
        self.errors: list[str] = []
        self.requests: list[dict] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.post_data_json)
                     if request.url.endswith("/v1/audio/speech") else None)
        self.page.goto(server.url + "/")

    def enter_key(self) -> None:
        self.page.fill("#api-key", API_KEY)
        self.page.dispatch_event("#api-key", "change")
        self.page.wait_for_function("document.querySelector('#model-info').textContent.startsWith('Model:')")

    def speak(self, text: str, **fields) -> str:
        self.page.fill("#text", text)
        for name, value in fields.items():
            self.page.fill(f"#{name}", value)
        self.page.click("#speak")
        self.page.wait_for_function(f"{DONE} || document.querySelector('#status').textContent.startsWith('error')",
                                    timeout=300_000)
        return self.page.text_content("#status")

    def player(self, expression: str):
        return self.page.eval_on_selector("#player", expression)


@pytest.fixture(scope="module")
def visit(browser, server):
    visit = Visit(browser, server)
    yield visit
    ARTIFACTS.mkdir(exist_ok=True)
    visit.page.screenshot(path=str(ARTIFACTS / "demo-page.png"), full_page=True)
    visit.page.close()


def test_at_load_the_key_is_asked_for_where_it_is_entered(visit, server):
    page = visit.page
    page.wait_for_function("document.querySelector('#key-status').textContent !== ''")
    assert "needs an API key" in page.text_content("#key-status")
    assert page.text_content("#voice-status") == "" and page.text_content("#voices-status") == ""
    icon = httpx.get(server.url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert page.title() == "vllm-chatterbox" and visit.errors == []


def test_the_model_and_the_demo_notice(visit):
    visit.enter_key()
    page = visit.page
    assert page.text_content("#key-status") == ""
    assert page.text_content("#model-info") == "Model: chatterbox (Chatterbox, English)"
    assert page.is_visible("#demo-notice") and "noise, not speech" in page.text_content("#demo-notice")
    assert not page.is_visible("#tags")  # paralinguistic tags are Turbo's


def test_speech_streams_with_timings_and_a_download(visit):
    status = visit.speak("Hello from the browser test. The audio should stream into the player.", seed="7")
    assert status.startswith("done"), status
    assert "real-time factor" in status and "first audio after" in status
    received = int(visit.player("player => player.dataset.received"))
    buffered = visit.player("player => player.buffered.length ? player.buffered.end(player.buffered.length - 1) : 0")
    assert received > 1000, status
    assert buffered > 0.5, (buffered, status)  # seconds of audio the <audio> element holds
    assert float(visit.player("player => player.dataset.realTimeFactor")) > 0
    assert float(visit.player("player => player.dataset.audioSeconds")) == pytest.approx(buffered, rel=0.1)
    page = visit.page
    assert page.is_visible("#download") and page.get_attribute("#download", "download") == "speech.mp3"
    size = page.evaluate("async () => (await (await fetch(document.querySelector('#download').href)).blob()).size")
    assert size == received
    assert visit.requests[-1]["model"] == "chatterbox"


def test_a_failed_request_silences_the_previous_audio(visit):
    page = visit.page
    assert visit.player("player => player.hasAttribute('src') && player.readyState > 0")  # the last result
    status = visit.speak("This request names a language the model does not speak.", language="xx")
    page.fill("#language", "")
    assert status.startswith("error:") and "language" in status, status
    assert visit.player(PLAYER_SILENT) and not page.is_visible("#download")


def test_stop_silences_the_audio(visit):
    page = visit.page
    page.fill("#text", " ".join(f"Sentence {i} of a long text that keeps the stream going." for i in range(10)))
    page.click("#speak")
    # Stop is pressed in the same page task that sees the stream under way: a stream that ends
    # between a check and a separate click would leave Stop disabled (as it is for a user then).
    page.wait_for_function("""() => {
        if (!document.querySelector('#status').textContent.startsWith('streaming')) return false;
        document.querySelector('#stop').click();
        return true;
    }""", timeout=300_000)
    page.wait_for_function("document.querySelector('#status').textContent === 'stopped'")
    assert visit.player(PLAYER_SILENT)
    page.wait_for_timeout(1000)
    assert visit.player(PLAYER_SILENT) and page.text_content("#status") == "stopped"


def test_add_list_and_delete_a_voice(visit, reference_audio):
    page = visit.page
    page.fill("#voice-name", "browser-voice")
    page.set_input_files("#voice-file", files=[{"name": "ref.wav", "mimeType": "audio/wav", "buffer": reference_audio}])
    page.click("#upload")
    page.wait_for_function("document.querySelector('#voice-status').textContent.includes('added')", timeout=120_000)
    page.wait_for_timeout(1000)
    assert page.text_content("#voice-status") == 'voice "browser-voice" added'  # still there
    assert page.input_value("#voice") == "browser-voice"
    page.click("#voices li[data-voice='browser-voice'] button")
    page.wait_for_function("!document.querySelector(\"#voices li[data-voice='browser-voice']\")")
    assert "browser-voice" not in page.eval_on_selector("#voice", "s => [...s.options].map(o => o.value)")
    assert visit.errors == []


def test_convert_a_recording_into_the_chosen_voice(visit, reference_audio):
    """The "convert" panel (issue 21): a source recording, the voice chosen above, a wav back to
    play and download."""
    page = visit.page
    page.select_option("#voice", "default")
    page.set_input_files("#convert-file", files=[{"name": "src.wav", "mimeType": "audio/wav",
                                                  "buffer": reference_audio}])
    page.click("#convert")
    page.wait_for_function("document.querySelector('#convert-status').textContent.startsWith('converted') || "
                           "document.querySelector('#convert-status').classList.contains('error')", timeout=300_000)
    assert page.text_content("#convert-status").startswith("converted"), page.text_content("#convert-status")
    assert page.is_visible("#convert-download")
    header = page.evaluate("async () => [...new Uint8Array(await (await fetch("
                           "document.querySelector('#convert-download').href)).arrayBuffer())].slice(0, 48)")
    assert bytes(header[:4]) == b"RIFF" and bytes(header[8:12]) == b"WAVE"
    assert int.from_bytes(bytes(header[40:44]), "little") > 24000, "less than half a second of audio"
    assert visit.errors == []


def test_a_turbo_server_under_another_name(browser, turbo_server):
    """--served-model-name: the page sends the served name; Turbo's tags insert at the cursor."""
    visit = Visit(browser, turbo_server)
    try:
        visit.enter_key()
        page = visit.page
        assert page.text_content("#model-info") == "Model: turbo-tts (Chatterbox Turbo, English)"
        assert not page.is_visible("#demo-notice")
        tags = page.eval_on_selector_all("#tags button", "buttons => buttons.map(b => b.textContent)")
        assert "[laugh]" in tags and "[sigh]" in tags
        page.fill("#text", "Oh no. It broke again.")
        page.eval_on_selector("#text", "t => t.setSelectionRange(6, 6)")
        page.click("#tags button:text-is('[sigh]')")
        assert page.input_value("#text") == "Oh no.[sigh] It broke again."
        status = visit.speak(page.input_value("#text"), seed="3")
        assert status.startswith("done"), status
        assert visit.requests[-1]["model"] == "turbo-tts"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "demo-page-turbo.png"), full_page=True)
        assert visit.errors == []
    finally:
        visit.page.close()

"""The reviewer's path in a real headless Chromium (Debian's chromium + chromedriver, which
`make test` installs), against the appliance started as `make run` starts it: first-boot
setup, sign out and in, upload a real clip, wait for the transcript, click a word (the
player seeks), edit a segment and reload (it persists), export DOCX and SRT, record (level
meter and live transcript) and stop; once with the browser set to Chinese, once to English.

Screenshots go to $TINGJI_SCREENSHOTS when set (`make screenshots` → bench/screenshots/, the
Chinese ones as NAME.png, the English ones as NAME-en.png), otherwise to the test's temporary
directory."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device.databases import open_store
from device.settings import PROJECT_ROOT
from device.store import Store
from tests.conftest import wait_until as wait
from tests.test_appliance import _free_port, _get

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PASSWORD = "a good admin password"


@pytest.fixture
def appliance(settings, tmp_path):
    """`python -m device run` on a free port; yields (base url, setup code, data dir)."""
    port = _free_port()
    env = {**os.environ, "TINGJI_DATA_DIR": str(settings.data_dir),
           "TINGJI_MODELS_DIR": str(settings.models_dir), "TINGJI_PORT": str(port)}
    log = tmp_path / "run.log"
    process = subprocess.Popen([sys.executable, "-m", "device", "run"], cwd=PROJECT_ROOT,
                               env=env, stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                               stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _get(f"{base}/health")[0] == 200, 60, "/health", ignore=(OSError,))
        code = re.search(r"setup code (\S+)", log.read_text()).group(1)
        yield base, code, settings.data_dir
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


# What the path reads on the pages, in each language.
SAYS = {
    "zh-CN": {"refused": "用户名或密码错误", "saved": "已保存", "marker": "已在",
              "recording": "录音中…", "done": "完成", "suffix": ""},
    "en": {"refused": "wrong user name or password", "saved": "saved", "marker": "marker at",
           "recording": "Recording…", "done": "done", "suffix": "-en"},
}


@pytest.fixture(params=list(SAYS))
def browser(request, tmp_path):
    """Chromium asking for the pages in Chinese, then in English."""
    yield from _chromium(tmp_path, f"--lang={request.param}", language=request.param)


def _chromium(tmp_path, *extra: str, language: str = "en"):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (make test installs the "
                    "Debian packages chromium and chromium-driver with apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1366,900",
                f"--user-data-dir={tmp_path / 'profile'}", *extra):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "intl.accept_languages": language})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.downloads = downloads
    driver.says, driver.language = SAYS[language], language
    try:
        yield driver
    finally:
        driver.quit()


AXE = PROJECT_ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core, which `make test` installs with npm (git-ignored): the accessibility checks."""
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def accessibility_problems(driver, page: str) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now (none when axe-core is
    not installed: the test then says the checks did not run)."""
    if not AXE.exists():
        return []
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    driver.set_script_timeout(60)
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
        ".then((r) => done(r.violations.map((v) => v.id + ' (' + v.impact + '): ' +"
        " v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', '))))"
        ".catch((e) => done(['axe failed: ' + e]));", WCAG)
    return [f"{page} [{driver.language}]: {v}" for v in violations]


def on_a_phone(browser, shots: Path) -> None:
    """The recording page 360 px wide: no sideways scrolling, player, transcript and summary
    stacked in that order, the player still in view at the bottom of the page, and every
    control at least 44 px tall."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(360, 780)
    try:
        browser.refresh()
        wait(lambda: browser.execute_script("return innerWidth") <= 400, 10, "a narrow window")
        find = browser.find_element
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= innerWidth"), "sideways scrolling"
        tops = [find(By.CSS_SELECTOR, css).rect["y"] for css in (".player", "#transcript",
                                                                 "#summary")]
        assert tops == sorted(tops), tops
        browser.execute_script("window.scrollTo(0, 0)")
        screenshot(browser, shots, "recording-phone")
        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        assert browser.execute_script(
            "const r = document.querySelector('.player').getBoundingClientRect();"
            "return r.top >= 0 && r.bottom <= innerHeight && scrollY > 0"), "player out of reach"
        small = browser.execute_script(
            "return [...document.querySelectorAll('header a, header button, main button,"
            " main select, main input:not([type=hidden]):not([type=checkbox]), main label')]"
            ".filter((el) => el.offsetParent && getComputedStyle(el).visibility !== 'hidden')"
            ".filter((el) => el.tagName !== 'LABEL' || el.querySelector('[type=checkbox]'))"
            ".filter((el) => el.getBoundingClientRect().height < 43.5)"
            ".map((el) => el.outerHTML.slice(0, 80))")
        assert not small, small
    finally:
        browser.set_window_size(1366, 900)


def shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TINGJI_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver, folder: Path, name: str) -> None:
    path = folder / f"{name}{driver.says['suffix']}.png"
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reviewer_path_in_a_real_browser(appliance, browser, speech_wav, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, code, data_dir = appliance
    (data_dir / "demo").mkdir(parents=True, exist_ok=True)
    shutil.copy(speech_wav, data_dir / "demo" / ("clip" + speech_wav.suffix))
    shots = shots_dir(tmp_path)
    find = browser.find_element
    says = browser.says

    def in_library():
        return (browser.find_elements(By.CSS_SELECTOR, "table.recordings")
                and not browser.current_url.endswith(("/setup", "/login")))

    # first boot: the console's setup code creates the admin
    browser.get(base + "/")
    assert browser.current_url.endswith("/setup")
    screenshot(browser, shots, "setup")
    problems = accessibility_problems(browser, "setup")
    find(By.ID, "code").send_keys(code)
    find(By.ID, "username").send_keys("admin")
    find(By.ID, "password").send_keys(PASSWORD)
    find(By.ID, "create-admin").click()
    wait(in_library, 10, "the library after setup")
    assert find(By.TAG_NAME, "html").get_attribute("lang") == browser.language

    # sign out, then in again through the login page
    find(By.CSS_SELECTOR, "header form button").click()
    wait(lambda: browser.current_url.endswith("/login"), 10, "the login page")
    problems += accessibility_problems(browser, "sign-in")
    find(By.ID, "username").send_keys("admin")
    find(By.ID, "password").send_keys("wrong password")
    find(By.ID, "sign-in").click()
    wait(lambda: says["refused"] in browser.page_source, 10, "the refusal")
    find(By.ID, "username").clear()
    find(By.ID, "username").send_keys("admin")
    find(By.ID, "password").send_keys(PASSWORD)
    find(By.ID, "sign-in").click()
    wait(in_library, 10, "the library after login")

    # upload a real clip and wait for its transcript
    browser.get(base + "/upload")
    screenshot(browser, shots, "upload")
    problems += accessibility_problems(browser, "import")
    find(By.ID, "file").send_keys(str(speech_wav))
    find(By.ID, "upload-title").send_keys("Browser interview")
    find(By.ID, "upload-button").click()
    wait(lambda: "/recordings/" in browser.current_url, 60, "the recording page")
    recording_url = browser.current_url.split("?")[0]
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".segment .w"), 180,
         "the transcript (the worker transcribes the upload)")
    find(By.ID, "player")

    # click a word: the player seeks there
    words = browser.find_elements(By.CSS_SELECTOR, ".segment .w")
    word = next((w for w in words if float(w.get_attribute("data-start")) > 1.0), words[-1])
    start = float(word.get_attribute("data-start"))
    word.click()
    position = wait(lambda: (t := browser.execute_script(
        "return document.getElementById('player').currentTime")) >= start - 0.05 and t,
        10, "the player to seek to the clicked word")
    assert start - 0.05 <= position < start + 3.0
    browser.execute_script("document.getElementById('player').pause()")
    # click the timeline strip three quarters along: the player goes there, the cursor too
    strip = find(By.CSS_SELECTOR, "svg.strip")
    duration = float(strip.get_attribute("data-duration"))
    ActionChains(browser).move_to_element_with_offset(
        strip, strip.size["width"] // 4, 0).click().perform()
    position = wait(lambda: abs((t := browser.execute_script(
        "return document.getElementById('player').currentTime")) - 0.75 * duration) < 0.5
        and t, 10, "the player to seek to where the strip was clicked")
    browser.execute_script("document.getElementById('player').pause()")
    cursor = float(find(By.ID, "strip-cursor").get_attribute("x1"))
    assert abs(cursor - 1000 * position / duration) < 20
    # "?" shows the shortcuts; "u" goes to the next passage or word the recogniser was unsure of
    body = find(By.TAG_NAME, "body")
    body.send_keys("?")
    wait(lambda: find(By.ID, "shortcuts").is_displayed(), 5, "the shortcuts to show")
    body.send_keys(Keys.ESCAPE)
    wait(lambda: not find(By.ID, "shortcuts").is_displayed(), 5, "the shortcuts to hide")
    with Store(data_dir / "tingji.db") as store:  # Whisper was unsure of the last passage
        last = store.segments(int(recording_url.rsplit("/", 1)[1]))[-1]
        store.db["segments"].update(last.id, {"avg_logprob": -1.2})
    browser.get(recording_url)
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".segment.unsure"), 10,
         "the unsure passage marked")
    starts = browser.execute_script(
        "document.getElementById('player').currentTime = 0;"
        "return [...document.querySelectorAll('.segment.unsure, .segment .w.unsure')]"
        ".map((el) => parseFloat(el.dataset.start)).filter((t) => t > 0.05).sort((a, b) => a - b)")
    assert starts and starts[-1] == last.start
    find(By.TAG_NAME, "body").send_keys("u")
    wait(lambda: abs(browser.execute_script(
        "return document.getElementById('player').currentTime") - starts[0]) < 0.05,
        5, "the player at the first unsure mark")
    browser.execute_script("document.getElementById('player').pause()")
    screenshot(browser, shots, "recording")
    problems += accessibility_problems(browser, "recording")
    # the reviewer listened: the text stands, the marks go (offered where marks are, only)
    offered = browser.execute_script(
        "return [...document.querySelectorAll('.segment')].map((s) => [!!s.querySelector("
        "'.confirm'), s.matches('.unsure') || !!s.querySelector('.w.unsure')])")
    assert offered and all(has == marked for has, marked in offered)
    unsure = find(By.CSS_SELECTOR, ".segment.unsure")
    unsure.find_element(By.CSS_SELECTOR, ".confirm").click()
    wait(lambda: not browser.find_elements(By.CSS_SELECTOR, ".segment.unsure, .w.unsure"), 10,
         "the marks cleared by the confirmation")
    # on a phone: one column, player first and within reach, touch targets of 44 px
    on_a_phone(browser, shots)
    # the keyboard reaches the text: Tab to it, Enter edits, Escape leaves
    browser.get(recording_url)
    first_text = wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".segment .text"), 10,
                      "the transcript")[0]
    browser.execute_script("arguments[0].focus()", first_text)
    assert browser.switch_to.active_element == first_text
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait(lambda: first_text.get_attribute("contenteditable") == "true", 5, "edit by keyboard")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    wait(lambda: first_text.get_attribute("contenteditable") == "false", 5, "edit left")

    # edit the first segment inline; autosave; reload; it persists
    text = find(By.CSS_SELECTOR, ".segment .text")
    ActionChains(browser).double_click(text).perform()
    wait(lambda: text.get_attribute("contenteditable") == "true", 5, "edit mode")
    text.send_keys(Keys.CONTROL, "a")
    text.send_keys("Edited in the browser 浏览器里改的")
    text.send_keys(Keys.ENTER)
    wait(lambda: find(By.ID, "save-state").text == says["saved"], 10, "the autosave")
    browser.get(recording_url)
    first = wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".segment .text"), 10,
                 "the reloaded transcript")[0]
    assert first.text == "Edited in the browser 浏览器里改的"

    # pick segments by their speaker labels and assign them one speaker
    labels = browser.find_elements(By.CSS_SELECTOR, ".segment .speaker")
    for label in labels:
        label.click()
    assert find(By.ID, "picked-count").text == str(len(labels))
    find(By.CSS_SELECTOR, "#assign-speaker input[name=speaker]").send_keys("李明")
    find(By.ID, "assign-button").click()
    wait(lambda: all(label.text == "李明" for label in browser.find_elements(
        By.CSS_SELECTOR, ".segment .speaker")), 10, "the assigned speaker")
    assert find(By.ID, "picked-count").text == "0"

    # export DOCX and SRT from the page's links
    for fmt in ("docx", "srt"):
        find(By.ID, f"export-{fmt}").click()
    recording_id = recording_url.rstrip("/").split("/")[-1]
    docx_path = browser.downloads / f"recording-{recording_id}.docx"
    srt_path = browser.downloads / f"recording-{recording_id}.srt"
    wait(lambda: docx_path.exists() and srt_path.exists()
         and not list(browser.downloads.glob("*.crdownload")), 30, "the downloads")
    from docx import Document

    paragraphs = [p.text for p in Document(io.BytesIO(docx_path.read_bytes())).paragraphs]
    assert any("Edited in the browser 浏览器里改的" in p for p in paragraphs)
    srt = srt_path.read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:") and "Edited in the browser 浏览器里改的" in srt

    # the other main pages, for the README
    browser.get(base + "/?q=" + first.text.split()[0])
    assert "<mark>" in browser.page_source
    browser.get(base + "/")
    screenshot(browser, shots, "library")
    problems += accessibility_problems(browser, "library")
    browser.get(f"{base}/system")
    screenshot(browser, shots, "system")
    problems += accessibility_problems(browser, "system")

    # rename it from its page
    browser.get(recording_url)
    title_input = find(By.CSS_SELECTOR, "#rename-recording input[name=title]")
    title_input.clear()
    title_input.send_keys("Renamed in the browser")
    find(By.CSS_SELECTOR, "#rename-recording button").click()
    wait(lambda: find(By.ID, "title").text == "Renamed in the browser", 10, "the new title")

    # record (a demo file played through the capture path): level meter, live transcript
    from selenium.webdriver.support.ui import Select

    browser.get(f"{base}/record")
    Select(find(By.ID, "source")).select_by_value("demo:clip" + speech_wav.suffix)
    find(By.ID, "record-title").send_keys("Live in the browser")
    find(By.ID, "rec-start").click()
    wait(lambda: find(By.ID, "rec-level").value_of_css_property("width") not in ("0px", "auto"),
         15, "the level meter to move")
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#live li"), 60,
         "a line of live transcript")
    screenshot(browser, shots, "record")
    problems += accessibility_problems(browser, "record")
    find(By.ID, "rec-marker").click()  # a marker says so beside the state, not instead of it
    browser.switch_to.alert.send_keys("要点")
    browser.switch_to.alert.accept()
    wait(lambda: says["marker"] in find(By.ID, "rec-state").find_element(
        By.XPATH, "following-sibling::span").text, 10, "the marker's message")
    assert find(By.ID, "rec-state").text == says["recording"]
    find(By.ID, "rec-stop").click()
    wait(lambda: "/recordings/" in browser.current_url, 30, "the recording page after stop")
    assert "Live in the browser" in browser.page_source
    live_url = browser.current_url
    browser.get(f"{base}/record")  # idle: not the last recording's time
    wait(lambda: find(By.ID, "rec-clock").text == "0:00", 10, "the idle clock")

    # delete the live recording from its page, after the confirmation (once its final
    # transcription is done: a recording a job works on is not deleted)
    browser.get(live_url)
    wait(lambda: browser.find_element(By.CSS_SELECTOR, ".head .status").text == says["done"],
         120,
         "the final transcript (the page reloads when it is done)",
         ignore=(StaleElementReferenceException,))
    find(By.ID, "delete-recording").click()
    browser.switch_to.alert.accept()
    wait(lambda: browser.current_url.rstrip("/") == base, 10, "the library after deleting")
    assert "Live in the browser" not in browser.page_source
    assert not problems, "\n".join(problems)
    if not AXE.exists():
        pytest.skip(f"axe-core is not installed ({AXE}; make test installs it with npm): the "
                    "rest of the path passed, the accessibility checks did not run")


@pytest.fixture
def browser_with_microphone(tmp_path):
    """Chromium whose microphone "hears" real speech: its fake capture device plays a WAV
    of real speech clips with pauses (in a loop), the permission prompt answered yes."""
    from tests.conftest import long_speech

    heard = long_speech(tmp_path, 20)
    yield from _chromium(tmp_path, "--lang=en", "--use-fake-ui-for-media-stream",
                         "--use-fake-device-for-media-stream",
                         f"--use-file-for-fake-audio-capture={heard}")


def test_this_devices_microphone_records_into_the_box(appliance, browser_with_microphone):
    """The Record page's "this device's microphone": the page captures, the box stores the
    chunks in its crash-safe segments, the live transcript and the final one follow."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from device.settings import Settings

    base, code, data_dir = appliance
    browser = browser_with_microphone
    find = browser.find_element
    settings = Settings(data_dir=data_dir)
    browser.get(base + "/setup")
    find(By.ID, "code").send_keys(code)
    find(By.ID, "username").send_keys("admin")
    find(By.ID, "password").send_keys(PASSWORD)
    find(By.ID, "create-admin").click()
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, "table.recordings"), 10,
         "the library after setup")
    browser.get(base + "/record")
    Select(find(By.ID, "source")).select_by_value("browser")
    find(By.ID, "record-title").send_keys("From the phone")
    find(By.ID, "rec-start").click()
    wait(lambda: find(By.ID, "rec-state").text == "Recording…", 15, "the recording to start")
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#live li"), 60,
         "a line of live transcript from the page's microphone")
    wait(lambda: find(By.ID, "rec-clock").text >= "0:12", 30, "12 s of audio")
    find(By.ID, "rec-stop").click()
    wait(lambda: "/recordings/" in browser.current_url, 30, "the recording page after stop")
    recording_id = int(browser.current_url.rstrip("/").rsplit("/", 1)[-1].split("?")[0])
    with open_store(settings) as store:
        recording = store.get_recording(recording_id)
        assert recording.source_name == "browser" and recording.duration >= 12
        wait(lambda: store.get_recording(recording_id).status == "done", 120,
             "the final transcript")
        text = "".join(s.text for s in store.segments(recording_id))
    assert len(text) > 10, text

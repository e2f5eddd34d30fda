"""The pages in Chinese and English: complete catalogues, every page in both languages, the
choice of language, and times, durations, errors and script messages said in it."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from device.databases import open_store
from device.settings import Settings, SettingsError
from tests.webutil import ENGLISH, make_box, stored_transcript
from web import i18n
from web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
CHINESE = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")


def extracted() -> dict[str, str]:
    """Every message of the templates, the web's Python and the JavaScript, as `make
    messages` extracts them (babel.cfg): message id → where it is."""
    config = configparser.ConfigParser()
    config.read(ROOT / "babel.cfg")
    method_map = [(section.split(":", 1)[1].strip(), section.split(":", 1)[0].strip())
                  for section in config.sections()]
    options = {section.split(":", 1)[1].strip(): dict(config[section])
               for section in config.sections()}
    found = {}
    for filename, _, message, _, _ in extract_from_dir(
            ROOT, method_map, options, keywords={"_": None, "gettext": None, "N_": None,
                                                 "ngettext": (1, 2)}):
        found.setdefault(message if isinstance(message, str) else message[0], filename)
    return found


def catalogue(language: str):
    with (i18n.CATALOGUES / i18n.babel_name(language) / "LC_MESSAGES"
          / "messages.po").open("rb") as stream:
        return read_po(stream)


def test_every_string_of_the_pages_is_in_both_catalogues_and_translated():
    """A string added to a page without `make messages` and a translation fails here."""
    messages = extracted()
    assert len(messages) > 300  # the extraction itself works
    for language in i18n.SOURCES:
        ids = {m.id if isinstance(m.id, str) else m.id[0] for m in catalogue(language) if m.id}
        missing = sorted(f"{messages[m]}: {m}" for m in set(messages) - ids)
        assert not missing, f"not in the {language} catalogue (make messages): {missing[:5]}"
        stale = sorted(ids - set(messages))
        assert not stale, f"no longer used, still in the {language} catalogue: {stale[:5]}"
    untranslated = []
    for message in catalogue("zh-CN"):
        if not message.id:
            continue
        source = message.id if isinstance(message.id, str) else message.id[-1]
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(strings) or any(
                sorted(set(PLACEHOLDER.findall(s))) != sorted(set(PLACEHOLDER.findall(source)))
                for s in strings):
            untranslated.append(source)
    assert not untranslated, f"untranslated or with other placeholders: {untranslated[:5]}"


def test_the_language_comes_from_the_browser_else_the_box_default():
    assert i18n.from_accept_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert i18n.from_accept_language("en-US,en;q=0.9,zh-CN;q=0.8") == "en"
    assert i18n.from_accept_language("fr-FR, en;q=0.5, zh;q=0.7") == "zh-CN"
    assert i18n.from_accept_language("zh-TW") == i18n.from_accept_language("zh-Hant-HK")
    assert i18n.from_accept_language("zh-tw") == "zh-TW"
    assert i18n.from_accept_language("en;q=0, de") is None
    assert i18n.from_accept_language("") is None
    assert i18n.from_accept_language("zh;q=oops, en") == "en"
    with pytest.raises(SettingsError, match="ui_language"):
        Settings.load(environ={"TINGJI_UI_LANGUAGE": "fr"})


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    data = tmp_path_factory.mktemp("i18n") / "data"
    box = make_box(Settings(data_dir=data, models_dir=Settings.load().models_dir,
                            auto_summarize=False))
    box.recording = stored_transcript(box.settings, owner_id=None)
    with open_store(box.settings) as store:
        store.db.execute("UPDATE recordings SET created = '2026-12-01T06:05:00.000+00:00', "
                         "duration = 3720")
        store.add_marker(box.recording, 2.0, "预算")
    return box


PAGES = ["/", "/?q=budget", "/upload", "/record", "/account", "/system", "/admin/users",
         "/admin/vocabulary", "/admin/voiceprints", "/admin/audit", "/admin/audit?verify=1",
         "/recordings/{rec}", "/recordings/999999"]
# (page text in Chinese, the same in English): the navigation and each page's own words
SAID = {"zh-CN": ["录音库", "退出", "导入"], "en": ["Library", "Sign out", "Import"]}


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_every_page_renders_in_both_languages(box, language):
    client = box.admin.client
    headers = {"Accept-Language": language}
    other = "en" if language == "zh-CN" else "zh-CN"
    for url in PAGES:
        response = client.get(url.format(rec=box.recording), headers={
            **headers, "Accept": "text/html"})
        assert response.status_code == (404 if "999999" in url else 200), (url, response.text)
        page = response.text
        assert f'<html lang="{language}">' in page, url
        assert all(word in page for word in SAID[language]), url
        body = re.sub(r'<script type="application/json".*?</script>', "", page, flags=re.S)
        assert not any(f">{word}<" in body for word in SAID[other]), url
    signed_out = TestClient(box.app, headers=headers)
    login = signed_out.get("/login").text
    assert ("登录" in login) == (language == "zh-CN") and f'lang="{language}"' in login


def test_the_recording_page_and_its_script_messages_speak_chinese(box):
    page = box.reviewer.client.get(f"/recordings/{box.recording}", headers=CHINESE).text
    assert "摘要" in page and "键盘快捷键" in page and "2026年12月1日 14:05 CST" in page
    assert "1小时2分" in page  # the duration, per locale
    assert "<title>标记 00:02: 预算</title>" in page
    messages = re.search(r'<script type="application/json" id="messages">(.*?)</script>',
                         page, re.S).group(1)
    assert '"saved": "\\u5df2\\u4fdd\\u5b58"' in messages  # 已保存, for the editor's script
    english = box.reviewer.client.get(f"/recordings/{box.recording}", headers=ENGLISH).text
    assert "December 1, 2026 14:05 CST" in english and "1 h 2 min" in english
    assert '<script type="application/json" id="messages">{}</script>' in english


def test_errors_are_said_in_the_readers_language(box):
    api = box.reviewer
    missing = api.api("GET", "/api/recordings/999999", headers=CHINESE)
    assert missing.status_code == 404 and missing.json()["detail"] == "没有编号为 999999 的录音"
    assert api.api("GET", "/api/recordings/999999").json()["detail"] == \
        "no recording with id 999999"
    refused = box.interviewer.api("GET", "/system", headers={**CHINESE, "Accept": "text/html"})
    assert refused.status_code == 403 and "此操作需要 admin 角色" in refused.text
    wrong = TestClient(box.app, headers=CHINESE)
    page = wrong.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = wrong.post("/login", data={"username": "nobody", "password": "x" * 12,
                                        "csrf_token": token})
    assert answer.status_code == 401 and "用户名或密码错误" in answer.text


def test_what_the_box_stored_for_later_is_said_in_the_readers_language(box):
    """A revision's note, a job's stage and a failure are kept as message ids with their
    parameters: each reader is told them in their language; older plain text as it is."""
    from device.errors import N_
    from device.said import Said

    rec = stored_transcript(box.settings, title="Stored words")
    reviewer = box.reviewer
    segments = reviewer.api("GET", f"/api/recordings/{rec}").json()["segments"]
    reviewer.api("PATCH", f"/api/segments/{segments[0]['id']}",
                 {"text": "改过的文字", "revision": segments[0]["revision"]})
    reviewer.api("POST", f"/api/recordings/{rec}/speakers/rename", {"old": "A", "new": "王芳"})
    history = f"/api/recordings/{rec}/revisions"
    assert [r["note"] for r in reviewer.api("GET", history, headers=CHINESE).json()] == \
        ["说话人 A → 王芳", "编辑了一段"]
    assert [r["note"] for r in reviewer.api("GET", history).json()] == \
        ["speaker A → 王芳", "edited a segment"]
    undone = reviewer.api("GET", history).json()[0]["id"]
    reviewer.api("POST", f"/api/revisions/{undone}/undo")
    assert reviewer.api("GET", history, headers=CHINESE).json()[0]["note"] == \
        "撤销：说话人 A → 王芳"  # said within what is said
    with open_store(box.settings) as store:
        store.db.execute("UPDATE revisions SET note = 'an older note' WHERE recording_id = ? "
                         "AND kind = 'edit'", [rec])
        job = store.claim(1, 0.0, store.enqueue("summarize", rec).id)
        store.set_progress(job.id, 40.0, Said(N_("reading %(part)s"), part=Said(
            N_("part %(num)d of %(total)d"), num=2, total=3)))
        assert store.get_job(job.id).stage == "reading part 2 of 3"  # English to the CLI
    assert "an older note" in [r["note"] for r in reviewer.api("GET", history,
                                                               headers=CHINESE).json()]
    polled = reviewer.api("GET", f"/api/jobs/{job.id}", headers=CHINESE).json()
    assert polled["stage"] == "阅读第 2 部分（共 3 部分）"
    page = reviewer.client.get(f"/recordings/{rec}", headers=CHINESE).text
    assert "阅读第 2 部分（共 3 部分）" in page
    with open_store(box.settings) as store:
        store.fail_job(job.id, Said(N_("internal error: %(error)s"), error="OSError: x"))
        failed = store.create_recording("Failed one", "f.wav")
        store.fail_job(store.claim(1, 0.0, store.enqueue("transcribe", failed.id).id).id,
                       Said(N_("nothing was recorded")))
    page = reviewer.client.get(f"/recordings/{rec}", headers=CHINESE).text
    assert "上次生成摘要失败：内部错误：OSError: x" in page
    assert "什么也没有录下" in reviewer.client.get("/", headers=CHINESE).text
    assert "nothing was recorded" in reviewer.client.get("/").text


def test_a_users_own_language_wins_over_the_browser(box):
    ivan = box.interviewer
    assert ivan.client.post("/account/language", data={
        "language": "en", "csrf_token": ivan.csrf}, follow_redirects=False).status_code == 303
    try:
        page = ivan.client.get("/", headers=CHINESE).text
        assert '<html lang="en">' in page and "Library" in page
        taiwan = ivan.client.post("/account/language", data={
            "language": "zh-TW", "csrf_token": ivan.csrf}, follow_redirects=True)
        assert '<html lang="zh-TW">' in taiwan.text and "錄音" in taiwan.text
        assert 'value="zh-TW" lang="zh-TW" selected' in taiwan.text
        unknown = ivan.client.post("/account/language", data={
            "language": "klingon", "csrf_token": ivan.csrf})
        assert unknown.status_code == 400
        forged = ivan.client.post("/account/language", data={"language": "en"})
        assert forged.status_code == 403  # no CSRF token
    finally:
        ivan.client.post("/account/language", data={"language": "", "csrf_token": ivan.csrf})
    assert '<html lang="zh-CN">' in ivan.client.get("/", headers=CHINESE).text


def test_the_box_default_speaks_when_the_browser_asks_for_nothing_the_box_has(box, tmp_path):
    bare = TestClient(box.app)
    assert '<html lang="zh-CN">' in bare.get("/login").text  # out of the box: Chinese
    assert '<html lang="zh-CN">' in bare.get("/login", headers={"Accept-Language": "fr"}).text
    english = create_app(box.settings.replace(data_dir=tmp_path / "data", ui_language="en"))
    assert '<html lang="en">' in TestClient(english).get("/setup").text


def test_exports_carry_headings_in_the_readers_language(box):
    import io

    from docx import Document

    url = f"/recordings/{box.recording}/export"
    chinese = box.reviewer.client.get(f"{url}.md", headers=CHINESE).text
    assert "## 转写稿" in chinese and "Transcript" not in chinese
    assert "## Transcript" in box.reviewer.client.get(f"{url}.md", headers=ENGLISH).text
    document = Document(io.BytesIO(box.reviewer.client.get(f"{url}.docx", headers=CHINESE)
                                   .content))
    assert "转写稿" in [p.text for p in document.paragraphs]

"""The web app through its HTTP interface: health, first-boot setup, sign-in, sessions,
CSRF, roles on every endpoint, escaping, search, uploads, audio ranges and traversal."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time

import pytest
from fastapi.testclient import TestClient

from device.databases import open_store
from device.records import Segment
from device.settings import Settings
from tests.webutil import (
    ENGLISH,
    PASSWORD,
    form_token,
    login,
    make_box,
    setup_admin,
    stored_transcript,
)
from web.app import create_app


@pytest.fixture
def box(settings):
    return make_box(settings)


@pytest.fixture(scope="module")
def role_box(tmp_path_factory):
    """One box for every endpoint's role check (each case stores its own recording and
    changes nothing the others look at): a box's three accounts cost six Argon2 hashes."""
    data = tmp_path_factory.mktemp("roles") / "data"
    return make_box(Settings(data_dir=data, models_dir=Settings.load().models_dir,
                             auto_summarize=False))


@pytest.mark.slow
def test_health_reports_ok_with_the_model_installed(settings):
    box = make_box(settings)
    assert TestClient(box.app, headers=ENGLISH).get("/health").json() == {"status": "ok"}  # nothing more
    body = box.admin.client.get("/health").json()
    assert body["status"] == "ok" and body["asr_model"]["status"] == "installed"
    assert body["schema_version"] >= 5 and body["version"]
    assert box.reviewer.client.get("/health").json() == {"status": "ok"}


def test_health_is_503_without_the_model(settings, tmp_path):
    box = make_box(settings.replace(models_dir=tmp_path / "none"))
    assert TestClient(box.app, headers=ENGLISH).get("/health").status_code == 503
    response = box.admin.client.get("/health")
    assert response.status_code == 503 and response.json()["asr_model"]["status"] == "missing"


# -- first boot and sign-in ----------------------------------------------------------------

def test_first_boot_needs_the_console_setup_code(settings, capfd):
    app = create_app(settings)
    assert app.state.setup_code in capfd.readouterr().err  # printed on the console
    client = TestClient(app, headers=ENGLISH)
    page = client.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/setup"
    assert client.get("/api/recordings/1").status_code == 401
    token = form_token(client.get("/setup").text)
    wrong = client.post("/setup", data={"code": "AAAA-AAAA", "username": "root",
                                        "password": PASSWORD, "csrf_token": token})
    assert wrong.status_code == 400 and "wrong setup code" in wrong.text
    with open_store(settings) as store:
        assert store.count_users() == 0
    admin = setup_admin(app)
    cookie = admin.client.cookies.jar
    assert any(c.name == "tingji_session" for c in cookie)
    # one-time: the code is gone, a second setup is refused
    assert app.state.setup_code is None
    again = TestClient(app, headers=ENGLISH)
    assert again.get("/setup", follow_redirects=False).headers["location"] == "/login"
    refused = again.post("/setup", data={"code": "X", "username": "evil", "password": PASSWORD,
                                         "csrf_token": form_token(again.get("/login").text)})
    assert refused.status_code == 403
    with open_store(settings) as store:
        users = store.list_users()
    assert [(u.username, u.role) for u in users] == [("admin", "admin")]
    assert users[0].password_hash.startswith("$argon2id$")


def test_session_cookie_is_httponly_and_samesite_strict(settings):
    app = create_app(settings)
    client = TestClient(app, headers=ENGLISH)
    token = form_token(client.get("/setup").text)
    response = client.post("/setup", data={"code": app.state.setup_code, "username": "a",
                                           "password": PASSWORD, "csrf_token": token},
                           follow_redirects=False)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_login_is_rate_limited(box):
    client = TestClient(box.app, headers=ENGLISH)
    token = form_token(client.get("/login").text)
    codes = [client.post("/login", data={"username": "rita", "password": "wrong-password",
                                         "csrf_token": token}).status_code for _ in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    blocked = client.post("/login", data={"username": "rita", "password": PASSWORD,
                                          "csrf_token": token}, follow_redirects=False)
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    # another user from the same client is not locked out by rita's failures
    assert login(box.app, "ivan").client.get("/").status_code == 200


def test_a_wrong_password_takes_as_long_for_a_name_that_does_not_exist(box):
    """Answering an unknown name at once (3-8 ms, against 185-293 ms of Argon2 for a
    wrong password) told anyone which user names exist."""
    client = TestClient(box.app, headers=ENGLISH)
    token = form_token(client.get("/login").text)

    def seconds(username: str) -> float:
        started = time.perf_counter()
        response = client.post("/login", data={"username": username, "password": "wrong-pass",
                                               "csrf_token": token})
        assert response.status_code == 401
        return time.perf_counter() - started

    seconds("nobody-warm-up")  # the stand-in hash is made once
    known = sorted(seconds("rita") for _ in range(3))[1]
    unknown = sorted(seconds(f"nobody-{i}") for i in range(3))[1]
    assert unknown > 0.5 * known, (unknown, known)


def test_login_form_needs_its_csrf_cookie(box):
    client = TestClient(box.app, headers=ENGLISH)
    response = client.post("/login", data={"username": "rita", "password": PASSWORD,
                                           "csrf_token": "forged"})
    assert response.status_code == 403


def test_logout_ends_every_session_of_the_user(box):
    second = login(box.app, "rita")
    assert second.client.get("/api/recordings/1").status_code == 404  # signed in
    box.reviewer.client.post("/logout", data={"csrf_token": box.reviewer.csrf})
    assert second.client.get("/api/recordings/1").status_code == 401
    assert box.reviewer.client.get("/api/recordings/1").status_code == 401


def test_password_change_ends_other_sessions(box):
    other = login(box.app, "rita")
    response = box.reviewer.client.post("/account", data={
        "current": PASSWORD, "new": "a much better one", "csrf_token": box.reviewer.csrf},
        follow_redirects=False)
    assert response.status_code == 303
    assert other.client.get("/api/recordings/1").status_code == 401
    assert box.reviewer.client.get("/account").status_code == 200  # this one signed in again
    login(box.app, "rita", "a much better one")
    short = box.admin.client.post("/account", data={
        "current": PASSWORD, "new": "12345678", "csrf_token": box.admin.csrf})
    assert short.status_code == 400 and "10 characters" in short.text
    for common in ("1234567890", "qwertyuiop", "Password123"):  # long enough, and common
        refused = box.admin.client.post("/account", data={
            "current": PASSWORD, "new": common, "csrf_token": box.admin.csrf})
        assert refused.status_code == 400 and "most common" in refused.text, common


# -- CSRF and roles ------------------------------------------------------------------------

def test_state_changing_requests_need_the_csrf_token(box):
    rec = stored_transcript(box.settings)
    seg = box.reviewer.api("GET", f"/api/recordings/{rec}").json()["segments"][0]
    client = box.reviewer.client
    body = {"text": "forged", "revision": seg["revision"]}
    assert client.patch(f"/api/segments/{seg['id']}", json=body).status_code == 403
    assert client.patch(f"/api/segments/{seg['id']}", json=body,
                        headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert client.post("/logout").status_code == 403
    assert client.post(f"/api/recordings/{rec}/summarize/cancel").status_code == 403
    assert client.post(f"/api/recordings/{rec}/diarize", json={}).status_code == 403
    assert client.post(f"/api/recordings/{rec}/transcribe").status_code == 403
    assert client.post(f"/api/recordings/{rec}/speakers/merge",
                       json={"speaker": "B", "into": "A"}).status_code == 403
    assert client.post(f"/api/recordings/{rec}/voiceprints", json={
        "speaker": "A", "name": "Ann", "agreed": True}).status_code == 403
    assert box.admin.client.post("/admin/voiceprints/1/delete").status_code == 403
    assert box.admin.client.post("/admin/tls", data={"cert": "x", "key": "y"}
                                 ).status_code == 403
    for url, form in (("/admin/unlock", {"passphrase": "x"}), ("/admin/lock", {}),
                      ("/admin/passphrase", {"current": "x", "new": "long enough"})):
        assert box.admin.client.post(url, data=form).status_code == 403, url
    assert client.post("/api/record/chunk?seq=0", content=b"\0\0").status_code == 403
    assert client.post(f"/api/segments/{seg['id']}/confirm",
                       json={"revision": seg["revision"]}).status_code == 403
    assert client.post("/account/language", data={"language": "en"}).status_code == 403
    assert client.post(f"/api/recordings/{rec}/reviewed", json={"reviewed": True}
                       ).status_code == 403
    assert box.admin.client.post(f"/api/recordings/{rec}/hold", json={"reason": "x"}
                                 ).status_code == 403
    for url, form in (("/admin/retention", {"what": "audio", "days": "1"}),
                      ("/admin/retention/1/delete", {}), ("/admin/retention/purge", {})):
        assert box.admin.client.post(url, data=form).status_code == 403, url
    # another user's token does not work either
    assert client.patch(f"/api/segments/{seg['id']}", json=body,
                        headers={"X-CSRF-Token": box.admin.csrf}).status_code == 403
    assert box.reviewer.api("PATCH", f"/api/segments/{seg['id']}", body).status_code == 200


RANK = {"anonymous": 0, "interviewer": 1, "reviewer": 2, "admin": 3}
ENDPOINTS = [  # (method, url, json body, the least role that may)
    ("GET", "/", None, "interviewer"),
    ("GET", "/upload", None, "interviewer"),
    ("GET", "/record", None, "interviewer"),
    ("GET", "/account", None, "interviewer"),
    ("POST", "/account/language", {"language": "en"}, "interviewer"),
    ("GET", "/api/record/status", None, "interviewer"),
    ("POST", "/api/record/pause", None, "interviewer"),
    ("GET", "/recordings/{rec}", None, "interviewer"),
    ("GET", "/recordings/{rec}/audio", None, "interviewer"),
    ("GET", "/api/recordings/{rec}", None, "interviewer"),
    ("GET", "/api/jobs/{job}", None, "interviewer"),
    ("PUT", "/api/upload?filename=x.wav", None, "interviewer"),
    ("PATCH", "/api/segments/{seg}", {"text": "changed", "revision": 0}, "reviewer"),
    ("POST", "/api/segments/{seg}/speaker", {"speaker": "C", "revision": 0}, "reviewer"),
    ("POST", "/api/segments/{seg}/confirm", {"revision": 0}, "reviewer"),
    ("POST", "/api/segments/{seg}/split", {"position": 3, "revision": 0}, "reviewer"),
    ("POST", "/api/segments/{seg}/merge", {"revision": 0, "next_revision": 0}, "reviewer"),
    ("POST", "/api/recordings/{rec}/speakers/rename", {"old": "A", "new": "Ann"}, "reviewer"),
    ("POST", "/api/recordings/{rec}/speakers/assign", {"speaker": "C", "segments": []},
     "reviewer"),
    ("POST", "/api/recordings/{rec}/replace", {"find": "budget", "replace": "plan"},
     "reviewer"),
    ("POST", "/api/recordings/{rec}/title", {"title": "New"}, "interviewer"),  # their own
    ("GET", "/api/recordings/{rec}/revisions", None, "reviewer"),
    ("POST", "/api/revisions/999/undo", None, "reviewer"),
    ("GET", "/recordings/{rec}/export.txt", None, "interviewer"),  # their own
    ("GET", "/recordings/{rec}/export.docx", None, "interviewer"),
    ("POST", "/api/recordings/{rec}/summarize", {}, "reviewer"),
    ("POST", "/api/recordings/{rec}/summarize/cancel", None, "reviewer"),
    ("POST", "/api/recordings/{rec}/diarize", {"speakers": 2}, "reviewer"),
    ("POST", "/api/recordings/{rec}/transcribe", None, "interviewer"),  # their own
    ("POST", "/api/recordings/{rec}/speakers/merge", {"speaker": "B", "into": "A"},
     "reviewer"),
    ("POST", "/api/recordings/{rec}/voiceprints",
     {"speaker": "A", "name": "Ann", "consent": "asked", "agreed": True}, "reviewer"),
    ("PUT", "/api/recordings/{rec}/summary", {"content": {}, "version": 1}, "reviewer"),
    ("POST", "/api/record/resume", None, "interviewer"),
    ("POST", "/api/record/marker", {"note": "x"}, "interviewer"),
    ("POST", "/api/record/chunk?seq=0", None, "interviewer"),
    ("POST", "/api/record/stop", None, "interviewer"),
    ("POST", "/api/record/start", {"source": "demo:none.wav"}, "interviewer"),
    ("GET", "/system", None, "admin"),
    ("GET", "/admin/users", None, "admin"),
    ("POST", "/admin/users", {"username": "new", "password": "long enough", "role": "admin"},
     "admin"),
    ("POST", "/admin/users/999/role", {"role": "reviewer"}, "admin"),
    ("POST", "/admin/users/999/password", {"password": "long enough"}, "admin"),
    ("POST", "/admin/users/999/delete", None, "admin"),
    ("POST", "/api/jobs/{job}/cancel", None, "admin"),
    ("GET", "/admin/vocabulary", None, "admin"),
    ("POST", "/admin/glossary", {"term": "华为"}, "admin"),
    ("POST", "/admin/glossary/999/delete", None, "admin"),
    ("GET", "/admin/voiceprints", None, "admin"),
    ("GET", "/admin/audit", None, "admin"),
    ("POST", "/admin/tls", {"cert": "x", "key": "y"}, "admin"),
    ("POST", "/admin/tls/rollback", None, "admin"),
    ("GET", "/admin/audit/export.jsonl", None, "admin"),
    ("POST", "/admin/voiceprints/999/delete", None, "admin"),
    ("POST", "/admin/unlock", {"passphrase": "x"}, "admin"),
    ("POST", "/admin/lock", None, "admin"),
    ("POST", "/admin/passphrase", {"current": "x", "new": "long enough"}, "admin"),
    ("POST", "/admin/retention", {"what": "audio", "days": 3000}, "admin"),
    ("POST", "/admin/retention/999/delete", None, "admin"),
    ("POST", "/admin/retention/purge", None, "admin"),
    ("POST", "/api/recordings/{rec}/hold", {"reason": "case 17"}, "admin"),
    ("POST", "/api/recordings/{rec}/reviewed", {"reviewed": True}, "reviewer"),
]



@pytest.mark.parametrize("method,url,body,least", [
    # The recorder's endpoints load the live recogniser (a model).
    pytest.param(*e, id=f"{e[0]} {e[1]}",
                 marks=[pytest.mark.slow] if e[1].startswith("/api/record/") else [])
    for e in ENDPOINTS])
def test_every_endpoint_checks_the_role(role_box, method, url, body, least):
    """The interviewer owns the recording, so 'own recordings' access is what is tested."""
    box = role_box
    rec = stored_transcript(box.settings, owner_id=_user_id(box, "ivan"))
    api = box.admin.api("GET", f"/api/recordings/{rec}").json()
    ids = {"rec": rec, "seg": api["segments"][0]["id"], "job": api["jobs"][0]["id"]}
    anonymous = TestClient(box.app, headers=ENGLISH)
    anonymous_response = anonymous.request(method, url.format(**ids), json=body)
    assert anonymous_response.status_code == 401
    for role, browser in (("interviewer", box.interviewer), ("reviewer", box.reviewer),
                          ("admin", box.admin)):
        content = b"not audio" if method == "PUT" and "upload" in url else None
        if url.startswith(("/admin/users", "/admin/glossary", "/admin/voiceprints", "/account/",
                           "/admin/retention",
                           "/admin/tls", "/admin/unlock", "/admin/lock",
                           "/admin/passphrase")) and method == "POST":
            response = browser.client.post(url.format(**ids), data={
                **(body or {}), "csrf_token": browser.csrf}, follow_redirects=False)
        else:
            response = browser.api(method, url.format(**ids),
                                   json=body if content is None else None, content=content)
        if RANK[role] >= RANK[least]:
            assert response.status_code not in (401, 403), (role, response.text)
            assert response.status_code < 500, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.status_code)


def _user_id(box, name: str) -> int:
    with open_store(box.settings) as store:
        return store.find_user(name).id


def test_interviewers_see_only_their_own_recordings(box):
    mine = stored_transcript(box.settings, title="Ivan's interview",
                             owner_id=_user_id(box, "ivan"))
    other = stored_transcript(box.settings, title="Rita's upload", owner_id=_user_id(box, "rita"))
    client = box.interviewer.client
    library = client.get("/").text
    assert "Ivan&#39;s interview" in library and "Rita&#39;s upload" not in library
    assert client.get(f"/recordings/{mine}").status_code == 200
    assert client.get(f"/recordings/{other}").status_code == 404
    assert client.get(f"/recordings/{other}/audio").status_code == 404
    hits = client.get("/", params={"q": "budget"}).text
    assert f"/recordings/{mine}?" in hits and f"/recordings/{other}?" not in hits
    # reviewers see both
    assert "Rita&#39;s upload" in box.reviewer.client.get("/").text
    # Interviewers export their own, and their page offers only what their role can do.
    assert client.get(f"/recordings/{mine}/export.txt").status_code == 200
    assert client.get(f"/recordings/{other}/export.txt").status_code == 404
    page = client.get(f"/recordings/{mine}").text
    assert "export.docx" in page and "double-click" not in page
    assert "double-click" in box.reviewer.client.get(f"/recordings/{mine}").text


def test_admin_manages_users_and_a_role_change_ends_their_sessions(box):
    assert box.reviewer.client.get("/admin/users").status_code == 403
    rita = _user_id(box, "rita")
    response = box.admin.client.post(f"/admin/users/{rita}/role",
                                      data={"role": "interviewer", "csrf_token": box.admin.csrf},
                                      follow_redirects=False)
    assert response.status_code == 303
    assert box.reviewer.client.get("/api/recordings/1").status_code == 401
    rita_again = login(box.app, "rita")
    assert rita_again.client.get("/api/recordings/1/revisions").status_code == 403
    taken = box.admin.client.post("/admin/users", data={
        "username": "RITA", "password": PASSWORD, "role": "admin", "csrf_token": box.admin.csrf})
    assert taken.status_code == 400 and "taken" in taken.text
    box.admin.client.post(f"/admin/users/{rita}/delete", data={"csrf_token": box.admin.csrf})
    assert rita_again.client.get("/").status_code in (401, 200)
    assert rita_again.client.get("/api/recordings/1").status_code == 401


def test_admin_keeps_the_glossary_and_sees_profiles_and_update_state(box):
    client, csrf = box.admin.client, box.admin.csrf
    added = client.post("/admin/glossary", data={"term": "华为", "misheard": "花为",
                                                 "csrf_token": csrf}, follow_redirects=False)
    assert added.status_code == 303
    page = client.get("/admin/vocabulary").text
    assert "华为" in page and "花为" in page and "cantonese" in page and "profiles.toml" in page
    with open_store(box.settings) as store:
        [entry] = store.glossary()
    assert (entry.term, entry.misheard) == ("华为", "花为")
    empty = client.post("/admin/glossary", data={"term": " ", "csrf_token": csrf})
    assert empty.status_code == 400 and "cannot be empty" in empty.text
    client.post(f"/admin/glossary/{entry.id}/delete", data={"csrf_token": csrf})
    with open_store(box.settings) as store:
        assert store.glossary() == []
    system = client.get("/system").text
    assert "development checkout" in system and "whisper-base" in system


# -- pages ---------------------------------------------------------------------------------

def test_pages_escape_titles_and_transcript_text(box):
    rec = stored_transcript(box.settings, title="<script>alert(1)</script>",
                            texts=["<b>预算</b> 讨论 <img src=x onerror=alert(2)>"])
    client = box.reviewer.client
    for page in (client.get("/").text, client.get(f"/recordings/{rec}").text,
                 client.get("/", params={"q": "预算"}).text):
        assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get("/").text
    assert "&lt;b&gt;" in client.get(f"/recordings/{rec}").text


def test_a_long_recordings_page_is_drawn_off_the_event_loop_the_same(box):
    from web.routers.recordings import INLINE_SECONDS

    rec = stored_transcript(box.settings)
    short = box.reviewer.client.get(f"/recordings/{rec}").text
    with open_store(box.settings) as store:
        store.update_recording(rec, duration=INLINE_SECONDS + 1.0)
    long = box.reviewer.client.get(f"/recordings/{rec}").text
    assert short.count('class="segment') == long.count('class="segment') == 3
    assert 'data-duration="1801.0"' in long


def test_a_view_is_audited_even_while_another_process_holds_the_write_lock(box):
    """The entry is written on the event loop when the trail is free at once; while
    another process writes to it, the page waits for it in a thread instead of failing or
    skipping it.  (The worker writing a transcript to the main database does not hold it:
    the trail has a database of its own.)"""
    rec = stored_transcript(box.settings)
    holder = sqlite3.connect(box.settings.data_dir / "audit.db", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the worker's or the console's entry being written
    release = threading.Timer(0.5, holder.execute, ["COMMIT"])
    release.start()
    try:
        started = time.monotonic()
        assert box.reviewer.client.get(f"/recordings/{rec}").status_code == 200
        waited = time.monotonic() - started
    finally:
        release.join()
        holder.close()
    with open_store(box.settings) as store:
        views = [e for e in store.audit_entries(action="view_recording")
                 if e.object == f"recording:{rec}"]
    assert len(views) == 1 and waited >= 0.4
    assert box.reviewer.client.get(f"/recordings/{rec}").status_code == 200  # free: at once
    with open_store(box.settings) as store:
        assert len([e for e in store.audit_entries(action="view_recording")
                    if e.object == f"recording:{rec}"]) == 2


def test_search_highlights_hits_and_links_to_the_moment(box):
    rec = stored_transcript(box.settings, texts=["開放時間是早上九點", "The Budget is final"])
    page = box.reviewer.client.get("/", params={"q": "开放时间"}).text
    assert "<mark>開放時間</mark>是早上九點" in page  # Simplified query, Traditional text
    # A hit links to its segment, not to a rounded time (?t=8.72 for a segment starting
    # at 8.724 opened the segment before it).
    with open_store(box.settings) as store:
        segment = store.segments(rec)[1]
        store.db.execute("UPDATE segments SET start = 8.724 WHERE id = ?", [segment.id])
    hit = box.reviewer.client.get("/", params={"q": "budget"}).text
    assert f'href="/recordings/{rec}?segment={segment.id}&amp;q=budget#seg-{segment.id}"' in hit
    opened = box.reviewer.client.get(f"/recordings/{rec}", params={"segment": segment.id})
    assert 'data-start-at="8.724"' in opened.text
    english = box.reviewer.client.get("/", params={"q": "budget"}).text
    assert "The <mark>Budget</mark> is final" in english
    # a search shows its hits, not the library's list, and within the library's filters
    assert 'class="recordings"' not in english
    for filters, found in (({"since": "2000-01-01"}, True), ({"until": "2000-01-01"}, False),
                           ({"status": "failed"}, False), ({"language": "xx"}, False)):
        page = box.reviewer.client.get("/", params={"q": "budget", **filters}).text
        assert ("<mark>Budget</mark>" in page) is found, filters


def test_library_filters_by_status_language_and_date(box):
    stored_transcript(box.settings, title="Done one")
    with open_store(box.settings) as store:
        failed = store.create_recording("Broken upload", "x.wav")
        store.update_recording(failed.id, status="failed", error="not audio", language="zh")
    client = box.reviewer.client
    assert "Broken upload" in client.get("/", params={"status": "failed"}).text
    assert "Done one" not in client.get("/", params={"status": "failed"}).text
    assert "Done one" in client.get("/", params={"language": "en"}).text
    assert "Broken upload" not in client.get("/", params={"language": "en"}).text
    assert "Done one" not in client.get("/", params={"until": "2000-01-01"}).text
    assert "Done one" in client.get("/", params={"since": "2000-01-01"}).text


def test_recording_page_carries_word_timings_for_the_player(box):
    rec = stored_transcript(box.settings, texts=["We will </script><!--x review", "next"])
    page = box.reviewer.client.get(f"/recordings/{rec}").text
    blob = re.search(r'<script type="application/json" id="words">(.*?)</script>', page,
                     re.S).group(1)
    words = json.loads(blob)
    first = box.reviewer.api("GET", f"/api/recordings/{rec}").json()["segments"][0]
    assert words[str(first["id"])] == [[w["start"], w["end"], w["text"], w["probability"]]
                                       for w in first["words"]]
    assert words[str(first["id"])][2] == [1.0, 1.4, " </script><!--x", 0.9]
    assert "</script>" not in blob and "<!--" not in blob  # cannot break out of the element
    assert 'id="player" src=' not in page  # no audio file stored for this one


def test_a_recording_in_progress_says_how_far_its_final_transcript_and_notes_have_got(box):
    with open_store(box.settings) as store:
        rec = store.create_recording("interview", "mic", status="recording")
        page = box.reviewer.client.get(f"/recordings/{rec.id}").text
        assert 'id="final-pass"' not in page  # nothing final-passed yet
        store.update_recording(rec.id, final_pass_until=2480.0)
    page = box.reviewer.client.get(f"/recordings/{rec.id}").text
    assert re.search(r'id="final-pass">[^<]*41\D+20', page), page[:2000]
    assert "summary notes" not in page
    with open_store(box.settings) as store:
        store.update_recording(rec.id, notes_until=2100.0)
    page = box.reviewer.client.get(f"/recordings/{rec.id}").text
    assert re.search(r'id="final-pass">[^<]*41\D+20[^<]*summary notes up to 35\D+0\b', page), \
        page[page.find('id="final-pass"'):][:300]


# -- uploads, audio, traversal -------------------------------------------------------------

def test_upload_types_by_content_and_streams_to_a_job(box, speech_wav):
    data = speech_wav.read_bytes()
    kind = speech_wav.suffix.lower()  # a FLAC or WAV file, named .mp3 here
    response = box.interviewer.api(
        "PUT", "/api/upload?filename=interview.mp3&title=Talk&speakers=2", content=data)
    assert response.status_code == 200, response.text
    rec = response.json()["recording_id"]
    with open_store(box.settings) as store:
        recording = store.get_recording(rec)
        assert recording.owner_id == _user_id(box, "ivan")
        assert recording.audio_file == f"{rec}{kind}"  # typed by content, not by name
        assert [(j.status, j.params.get("speakers")) for j in store.jobs_for(rec)] == [
            ("queued", 2)]  # how many people speak, as the uploader said
    assert box.interviewer.api("PUT", "/api/upload?filename=x.wav&speakers=0",
                               content=data).status_code == 422
    assert (box.settings.audio_dir / f"{rec}{kind}").read_bytes() == data
    audio = box.interviewer.client.get(f"/recordings/{rec}/audio",
                                       headers={"Range": "bytes=100-199"})
    assert audio.status_code == 206 and audio.content == data[100:200]
    assert audio.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert not list((box.settings.data_dir / "uploads").iterdir())


def test_a_quick_draft_is_marked_and_transcribed_again_accurately_on_request(box, speech_wav):
    upload = box.interviewer.api("PUT", "/api/upload?filename=talk.wav&fast=true",
                                 content=speech_wav.read_bytes())
    assert upload.status_code == 200, upload.text
    rec, job = upload.json()["recording_id"], upload.json()["job_id"]
    with open_store(box.settings) as store:
        assert store.get_job(job).params.get("fast") is True
        store.claim(1, 0.0, job)  # the worker's draft, finished
        store.complete_transcription(job, rec, [Segment(0.0, 2.0, "今天开会", language="zh")],
                                     language="zh", duration=2.0)
    page = box.interviewer.client.get(f"/recordings/{rec}").text
    assert 'id="draft"' in page and 'id="retranscribe"' in page
    other = stored_transcript(box.settings)
    others = box.interviewer.api("POST", f"/api/recordings/{other}/transcribe")
    assert others.status_code == 404  # an interviewer's own recordings only
    again = box.interviewer.api("POST", f"/api/recordings/{rec}/transcribe")
    assert again.status_code == 200, again.text
    with open_store(box.settings) as store:
        queued = store.get_job(again.json()["job_id"])
        assert (queued.status, queued.params.get("fast")) == ("queued", None)  # accurate
        assert sorted((e.object, e.details["status"])
                      for e in store.audit_entries(action="retranscribe")) == [
            (f"recording:{rec}", 200), (f"recording:{other}", 404)]
    page = box.interviewer.client.get(f"/recordings/{rec}").text
    assert 'id="retranscribe"' not in page  # the transcript is on its way
    twice = box.reviewer.api("POST", f"/api/recordings/{rec}/transcribe")
    assert twice.status_code == 409 and "already queued" in twice.json()["detail"]
    with open_store(box.settings) as store:  # nor while it is being recorded
        store.update_recording(other, status="recording", audio_file="capture")
    recording = box.reviewer.api("POST", f"/api/recordings/{other}/transcribe")
    assert recording.status_code == 409 and "being recorded" in recording.json()["detail"]
    assert box.interviewer.api("PUT", "/api/upload?filename=x.wav&fast=maybe",
                               content=speech_wav.read_bytes()).status_code == 422


@pytest.mark.parametrize("content,status", [
    (b"", 400),
    (b"This is a text file, renamed .wav by someone.", 415),
    (b"MZ\x90\x00" + b"\x00" * 64, 415),
])
def test_bad_uploads_are_refused_and_leave_nothing(box, content, status):
    response = box.interviewer.api("PUT", "/api/upload?filename=x.wav", content=content)
    assert response.status_code == status and response.json()["detail"]
    with open_store(box.settings) as store:
        assert store.count_recordings() == 0
    assert not list((box.settings.data_dir / "uploads").glob("*"))


def test_oversized_upload_is_refused_while_streaming(settings, speech_wav):
    box = make_box(settings.replace(max_upload_bytes=10_000))

    def chunks():  # no Content-Length: the cap is enforced on the stream
        data = speech_wav.read_bytes()
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    response = box.interviewer.api("PUT", "/api/upload?filename=big.wav", content=chunks())
    assert response.status_code == 413
    declared = box.interviewer.api("PUT", "/api/upload?filename=big.wav",
                                   content=speech_wav.read_bytes())
    assert declared.status_code == 413
    with open_store(box.settings) as store:
        assert store.count_recordings() == 0
    assert not list((box.settings.data_dir / "uploads").glob("*"))


def test_file_serving_cannot_leave_the_data_directory(box):
    rec = stored_transcript(box.settings)
    secret = box.settings.data_dir / "secret.txt"
    secret.write_text("do not serve")
    with open_store(box.settings) as store:
        store.update_recording(rec, audio_file="../secret.txt")
    client = box.admin.client
    assert client.get(f"/recordings/{rec}/audio").status_code == 404
    for url in ("/static/../tingji.db", "/static/%2e%2e/%2e%2e/device/settings.py",
                "/static/..%2f..%2fdata%2ftingji.db", f"/recordings/{rec}/export.db"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"SQLite" not in response.content and b"do not serve" not in response.content


def test_numbers_beyond_sqlites_range_are_refused_not_overflowed(box):
    """SQLite's integers end at 2**63 - 1: a larger id, page or revision answered 500
    (OverflowError) before."""
    rec = stored_transcript(box.settings)
    big = 10**30
    admin = box.admin
    for url in (f"/recordings/{big}", f"/api/recordings/{big}", f"/api/jobs/{big}",
                f"/recordings/{big}/audio", f"/?page={big}",
                f"/api/recordings/{rec}/revisions?limit={big}"):
        assert admin.client.get(url).status_code == 422, url
    segment = admin.api("GET", f"/api/recordings/{rec}").json()["segments"][0]
    for body in ({"text": "x", "revision": big}, {"text": "x", "revision": -1}):
        assert admin.api("PATCH", f"/api/segments/{segment['id']}", body).status_code == 422
    assert admin.api("POST", f"/api/revisions/{big}/undo").status_code == 422
    assert admin.client.get(f"/api/recordings/{2**63 - 1}").status_code == 404  # in range


def test_titles_from_the_web_are_bounded_and_cleaned(box):
    rec = stored_transcript(box.settings)
    url = f"/api/recordings/{rec}/title"
    assert box.reviewer.api("POST", url, {"title": "题" * 3_000_000}).status_code == 413
    assert box.reviewer.api("POST", url, {"title": "题" * 1000}).status_code == 422
    assert box.reviewer.api("POST", url, {"title": "题" * 300}).status_code == 400
    renamed = box.reviewer.api("POST", url, {"title": "\u202efdp.exe\x0b 采访"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "fdp.exe 采访"
    uploaded = box.interviewer.client.put(
        "/api/upload", params={"filename": "a\u202e.wav", "title": "x" * 2000},
        content=b"RIFF", headers={"X-CSRF-Token": box.interviewer.csrf})
    assert uploaded.status_code == 422


def test_bodies_over_their_routes_cap_are_refused_before_the_sign_in_check(box):
    """Three unauthenticated text/plain posts of 400 MB raised the server from 1.0 to 2.9 GB
    before each got its 401: the body was read and decoded before the sign-in check."""
    anonymous = TestClient(box.app, headers=ENGLISH)
    big = b"x" * (5 << 20)

    def chunks():  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 1 << 16):
            yield big[i:i + (1 << 16)]

    for content in (big, chunks()):
        response = anonymous.post("/api/record/start", content=content,
                                  headers={"Content-Type": "text/plain"})
        assert response.status_code == 413, response.text
    signed_in = box.reviewer.api("POST", "/api/recordings/1/title",
                                 content=b'{"title": "' + b"x" * (2 << 20) + b'"}',
                                 headers={"Content-Type": "application/json"})
    assert signed_in.status_code == 413
    form = anonymous.post("/login", content=b"username=" + b"x" * (2 << 20),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 413
    assert anonymous.post("/api/record/start", content=b"{}").status_code == 401  # small: on


def _wav_bytes(seconds: float = 0.5) -> bytes:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * int(16000 * seconds))
    return buffer.getvalue()


def test_an_interviewer_cannot_fill_the_queue_and_uploads_keep_room_for_recording(settings):
    """Five uploads in 0.1 s queued five transcriptions (each also a summary of minutes)
    and nothing kept the disk for live recording."""
    box = make_box(settings.replace(pending_imports_per_user=2))
    data = _wav_bytes()

    def upload(browser):
        return browser.api("PUT", "/api/upload?filename=x.wav", content=data)

    assert [upload(box.interviewer).status_code for _ in range(3)] == [200, 200, 429]
    assert "waiting to be transcribed" in upload(box.interviewer).json()["detail"]
    assert upload(box.admin).status_code == 200  # the admin's own work is not capped
    with open_store(box.settings) as store:
        assert store.pending_transcriptions(_user_id(box, "ivan")) == 2
    full = make_box(settings.replace(data_dir=settings.data_dir.parent / "full",
                                     disk_reserve_bytes=10**18))
    refused = upload(full.interviewer)
    assert refused.status_code == 507 and "kept for recording" in refused.json()["detail"]
    with open_store(full.settings) as store:
        assert store.count_recordings() == 0


def test_kept_as_they_are_sessions_rotate_ranges_stay_private_and_multipart_needs_csrf(box):
    """Pins of what a security review found sound: a sign-in always issues a new session
    id (a cookie planted before sign-in is never promoted); another interviewer's audio is
    404 with or without a Range header; a multipart write without the token is refused."""
    def session_after_sign_in(planted: str | None) -> str:
        client = TestClient(box.app, headers=ENGLISH)
        token = form_token(client.get("/login").text)
        if planted:
            client.cookies.set("tingji_session", planted)
        response = client.post("/login", data={"username": "ivan", "password": PASSWORD,
                                               "csrf_token": token}, follow_redirects=False)
        assert response.status_code == 303
        return re.search(r"tingji_session=([^;]+)", response.headers["set-cookie"]).group(1)

    first, second = session_after_sign_in("planted"), session_after_sign_in(None)
    assert first != "planted" and second != first
    fixated = TestClient(box.app, headers=ENGLISH)
    fixated.cookies.set("tingji_session", "planted")
    assert fixated.get("/api/record/status").status_code == 401
    mine = box.admin.api("PUT", "/api/upload?filename=a.wav", content=_wav_bytes()).json()
    for headers in ({}, {"Range": "bytes=0-99"}, {"Range": "bytes=-10"}):
        response = box.interviewer.client.get(f"/recordings/{mine['recording_id']}/audio",
                                              headers=headers)
        assert response.status_code == 404, headers
    ranged = box.admin.client.get(f"/recordings/{mine['recording_id']}/audio",
                                  headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.content) == 100
    multipart = box.admin.client.post("/admin/glossary", files={"term": (None, "华为")})
    assert multipart.status_code == 403


@pytest.mark.slow  # the Record page's recorder loads the live recogniser
def test_a_recording_in_progress_is_its_owners_alone(settings, tmp_path):
    """Interviewer B could pause, mark, and stop interviewer A's recording (B's marker was
    saved in A's recording) and saw its status; now B learns only that the box is busy."""
    from tests.conftest import long_speech, wait_until
    from tests.webutil import add_user, login

    box = make_box(settings)
    add_user(box.admin, "bo", "interviewer")
    other = login(box.app, "bo")
    demo = settings.data_dir / "demo"
    demo.mkdir(parents=True)
    (demo / "clip.wav").write_bytes(long_speech(tmp_path, 20).read_bytes())
    assert 'name="speakers"' in box.interviewer.client.get("/record").text
    assert box.interviewer.api("POST", "/api/record/start", {
        "source": "demo:clip.wav", "speakers": 0}).status_code == 422
    started = box.interviewer.api("POST", "/api/record/start", {"source": "demo:clip.wav",
                                                                "speakers": 3})
    assert started.status_code == 200, started.text
    recording_id = started.json()["recording_id"]
    try:
        seen = other.api("GET", "/api/record/status").json()
        assert seen == {"state": "busy", "message": "the box is recording for someone else"}
        for action, body in (("pause", None), ("resume", None), ("marker", {"note": "mine"}),
                             ("stop", None)):
            response = other.api("POST", f"/api/record/{action}", body)
            assert response.status_code == 403, (action, response.text)
        assert other.api("POST", "/api/record/start", {"source": "demo:clip.wav"}
                         ).status_code == 409
        mine = box.interviewer.api("GET", "/api/record/status").json()
        assert mine["recording_id"] == recording_id and mine["state"] == "recording"
        assert box.admin.api("GET", "/api/record/status").json()["recording_id"] == \
            recording_id
        assert box.interviewer.api("POST", "/api/record/marker", {"note": "ok"}
                                   ).status_code == 200
    finally:
        stopped = box.interviewer.api("POST", "/api/record/stop")
    assert stopped.status_code == 200
    wait_until(lambda: box.interviewer.api("GET", "/api/record/status").json()["state"]
               == "idle", 60, "the recorder to stop")
    with open_store(settings) as store:
        assert [m.note for m in store.markers(recording_id)] == ["ok"]
        # the people the interviewer said would speak reach the final transcription
        assert store.get_recording(recording_id).speakers == 3
        assert [j.params.get("speakers") for j in store.jobs_for(recording_id)
                if j.kind == "transcribe"] == [3]
    assert other.api("GET", "/api/record/status").json()["state"] == "idle"


def test_head_is_answered_like_get_without_a_body(box):
    for url in ("/login", "/health", "/static/app.js"):
        head, get = TestClient(box.app, headers=ENGLISH).head(url), TestClient(box.app, headers=ENGLISH).get(url)
        assert head.status_code == get.status_code == 200, url
        assert head.content == b"" and head.headers["content-type"] == \
            get.headers["content-type"]
    assert box.reviewer.client.head("/").status_code == 200
    page = {"Accept": "text/html"}
    assert TestClient(box.app, headers=ENGLISH).head("/", headers=page, follow_redirects=False
                                    ).status_code == 303  # to the sign-in, as GET


def test_a_refused_sign_in_keeps_the_name_and_an_added_user_is_confirmed(settings):
    app = create_app(settings)
    client = TestClient(app, headers=ENGLISH)
    token = form_token(client.get("/setup").text)
    wrong = client.post("/setup", data={"code": "WRONG-CODE", "username": "lin",
                                        "password": PASSWORD, "csrf_token": token})
    assert wrong.status_code == 400 and 'value="lin"' in wrong.text
    admin = setup_admin(app, "lin")
    added = admin.client.post("/admin/users", data={
        "username": "mei", "password": PASSWORD, "role": "reviewer",
        "csrf_token": admin.csrf})
    assert added.status_code == 200 and "Added mei (reviewer)." in added.text  # redirected
    anonymous = TestClient(app, headers=ENGLISH)
    token = form_token(anonymous.get("/login").text)
    refused = anonymous.post("/login", data={"username": "mei", "password": "not it at all",
                                             "csrf_token": token})
    assert refused.status_code == 401 and 'value="mei"' in refused.text


def test_owners_rename_and_delete_their_recordings_and_the_admin_sees_the_deletion(box):
    """A failed upload stayed in the library for ever: recordings could be neither renamed
    nor deleted.  The owner renames and deletes their own (the audio goes too), reviewers
    rename, an admin deletes any; the deletion stays in the admin's history."""
    ivan, rita = _user_id(box, "ivan"), _user_id(box, "rita")
    mine = box.interviewer.api("PUT", "/api/upload?filename=a.wav", content=_wav_bytes()).json()
    rec = mine["recording_id"]
    others = stored_transcript(box.settings, title="Rita's", owner_id=rita)
    assert box.interviewer.api("POST", f"/api/recordings/{rec}/title", {"title": "采访 李"}
                               ).json()["title"] == "采访 李"
    assert box.interviewer.api("POST", f"/api/recordings/{others}/title", {"title": "x"}
                               ).status_code == 404
    page = box.interviewer.client.get(f"/recordings/{rec}").text
    assert 'id="delete-recording"' in page and 'id="rename-recording"' in page
    assert 'id="delete-recording"' not in box.reviewer.client.get(f"/recordings/{rec}").text
    assert box.reviewer.api("POST", f"/api/recordings/{rec}/delete").status_code == 403
    assert TestClient(box.app, headers=ENGLISH).post(f"/api/recordings/{rec}/delete").status_code == 401
    assert box.interviewer.client.post(f"/api/recordings/{rec}/delete").status_code == 403
    assert box.interviewer.api("POST", f"/api/recordings/{others}/delete").status_code == 404
    with open_store(box.settings) as store:
        audio_file = box.settings.audio_dir / store.get_recording(rec).audio_file
    assert audio_file.is_file()
    assert box.interviewer.api("POST", f"/api/recordings/{rec}/delete").json() == \
        {"deleted": rec}
    assert not audio_file.exists()
    assert box.interviewer.client.get(f"/recordings/{rec}").status_code == 404
    assert box.admin.api("POST", f"/api/recordings/{others}/delete").status_code == 200
    with open_store(box.settings) as store:
        assert store.count_recordings() == 0 and store.list_jobs() == []
        assert store.search("budget") == []
        assert [(d.recording_id, d.username) for d in store.deletions()] == [
            (others, "admin"), (rec, "ivan")]
        assert store.deletions()[1].owner_id == ivan
    system = box.admin.client.get("/system").text
    assert "Deleted recordings" in system and "采访 李" in system


def test_times_are_shown_in_the_boxs_zone_with_the_zone(settings):
    """Times were stored in UTC and shown without a zone: 09:05 for a recording made at
    17:05 in Beijing."""
    box = make_box(settings)
    rec = stored_transcript(box.settings)
    with open_store(box.settings) as store:
        store.db.execute("UPDATE recordings SET created = '2026-12-01T09:05:00.000+00:00'")
    assert "December 1, 2026 17:05 CST" in box.reviewer.client.get("/").text
    assert "December 1, 2026 17:05 CST" in box.reviewer.client.get(f"/recordings/{rec}").text
    elsewhere = make_box(settings.replace(data_dir=settings.data_dir.parent / "utc",
                                          time_zone="UTC"))
    rec = stored_transcript(elsewhere.settings)
    with open_store(elsewhere.settings) as store:
        store.db.execute("UPDATE recordings SET created = '2026-12-01T09:05:00.000+00:00'")
    assert "December 1, 2026 09:05 UTC" in elsewhere.reviewer.client.get("/").text


def test_the_summary_panel_cites_numbers_and_times_shows_work_and_says_when_unreliable(
        role_box):
    """Citations a reader can follow (the segment's number in the recording and its time,
    linked to the player), the running job with what it is doing and Cancel, the points
    left out, and an attempt that produced no reliable summary."""
    box = role_box  # shared: this test stores its own recording
    rec = stored_transcript(box.settings)
    with open_store(box.settings) as store:
        first, second, third = store.segments(rec)
        store.add_summary(rec, {
            "title": "Budget", "summary": "The budget is reviewed on Tuesday.",
            "key_points": [{"text": "The budget is reviewed on Tuesday",
                            "segments": [first.id, second.id]},
                           {"text": "The committee meets next month", "segments": [third.id]}],
            "decisions": [], "action_items": [], "keywords": [], "language": "en",
            "unsupported": [{"section": "key_points", "text": "The box records at night",
                             "support": 0.0}]},
            [], model_id="m", prompt_version="p", transcript_hash=store.transcript_hash(rec))
        job = store.enqueue("summarize", rec, {})
        store.claim(1, 0.0, job.id)
        store.set_progress(job.id, 42.0, "reading the transcript")
    page = box.reviewer.client.get(f"/recordings/{rec}").text
    assert f'data-cites="{first.id},{second.id}" data-seek="0.0"' in page
    assert "[#1–2 00:00]" in page and "[#3 00:08]" in page
    assert "1 point(s) left out" in page and "The box records at night" in page
    assert 'id="cancel-summary"' in page and "reading the transcript" in page
    assert 'id="cancel-summary"' not in box.interviewer.client.get(f"/recordings/{rec}").text

    cancelled = box.reviewer.api("POST", f"/api/recordings/{rec}/summarize/cancel")
    assert cancelled.status_code == 200 and cancelled.json() == {"cancelled": [job.id]}
    with open_store(box.settings) as store:
        assert store.get_job(job.id).status == "cancelled"
        failed = store.enqueue("summarize", rec, {})
        store.claim(1, 0.0, failed.id)
        store.fail_job(failed.id, "no reliable summary: summary repeats itself (冰海星區防…) "
                                  "(tried 2 times)")
    page = box.reviewer.client.get(f"/recordings/{rec}").text
    assert 'id="cancel-summary"' not in page
    assert "No reliable summary: summary repeats itself" in page
    assert "The last reliable version is shown." in page
    txt = box.reviewer.client.get(f"/recordings/{rec}/export.txt").text
    assert "- The budget is reviewed on Tuesday [#1–2 00:00]" in txt
    assert "[#3 00:08] A: The committee meets again next month." in txt
    assert "Left out: not said in the transcript" in txt


def test_the_transcript_shows_each_speakers_talk_time_in_their_colour(role_box):
    box = role_box  # shared: this test stores its own recording
    rec = stored_transcript(box.settings)  # A: 0-3.5 s and 8-11.5 s, B: 4-7.5 s
    page = box.reviewer.client.get(f"/recordings/{rec}").text
    assert '<span class="speaker-0">A 7 s</span><span class="speaker-1">B 3 s</span>' in page
    assert page.count('class="speaker speaker-0"') == 2
    assert page.count('class="speaker speaker-1"') == 1



def test_voices_are_remembered_only_with_consent_and_the_admin_lists_and_deletes_them(
        role_box):
    import numpy as np

    from device.store.voiceprints import Voiceprints

    box = role_box  # shared: this test stores its own recording and voiceprint
    rec = stored_transcript(box.settings, texts=["第一句。", "第二句。", "第三句。"])
    url = f"/api/recordings/{rec}/voiceprints"
    body = {"speaker": "A", "name": "李明", "consent": "签了同意书"}
    refused = box.reviewer.api("POST", url, body)
    assert refused.status_code == 400 and "consent" in refused.json()["detail"]
    assert box.reviewer.api("POST", url, {**body, "agreed": True,
                                          "speaker": "Z"}).status_code == 400
    job = box.reviewer.api("POST", url, {**body, "agreed": True}).json()
    assert (job["kind"], job["params"]["name"], job["params"]["speaker"]) == (
        "remember_voice", "李明", "A")
    # a suggested name gets a confirm button; merging and remembering are offered
    with open_store(box.settings) as store:
        store.rename_speaker(rec, "B", "王芳?")
    page = box.reviewer.client.get(f"/recordings/{rec}").text
    assert 'class="confirm-voice" data-name="王芳?"' in page
    assert 'id="merge-speakers"' in page and 'id="remember-voice"' in page
    assert "confirm-voice" not in box.interviewer.client.get(f"/recordings/{rec}").text
    # the admin's page: who, from where, with what consent, used where; then deleted
    with Voiceprints(box.settings.voiceprints_path) as prints:
        wang = prints.enrol("王芳", np.ones(256), seconds=31, enrolled_by="rita",
                            recording_id=rec, recording_title="Budget meeting",
                            speaker="B", consent="口头同意")
        prints.record_uses(rec, [(wang.id, "王芳?", 0.91)])
    listing = box.admin.client.get("/admin/voiceprints").text
    assert "王芳" in listing and "口头同意" in listing and "suggested (similarity 0.91" in listing
    assert f'action="/admin/voiceprints/{wang.id}/delete"' in listing
    gone = box.admin.client.post(f"/admin/voiceprints/{wang.id}/delete",
                                 data={"csrf_token": box.admin.csrf}, follow_redirects=False)
    assert gone.status_code == 303
    assert "口头同意" not in box.admin.client.get("/admin/voiceprints").text
    # the name stays in the transcript as text
    with open_store(box.settings) as store:
        assert "王芳?" in {s.speaker for s in store.segments(rec)}


def test_reads_changes_exports_deletions_and_sign_ins_enter_the_audit_trail(role_box):
    from device.audit import verify, verify_export

    box = role_box  # shared: this test looks only at its own recording's entries
    rec = stored_transcript(box.settings, title="审计")
    box.settings.audio_dir.mkdir(parents=True, exist_ok=True)
    (box.settings.audio_dir / f"{rec}.wav").write_bytes(b"RIFF" + bytes(8000))
    with open_store(box.settings) as store:
        store.update_recording(rec, audio_file=f"{rec}.wav")
    reviewer = box.reviewer
    reviewer.client.get(f"/recordings/{rec}")
    audio = f"/recordings/{rec}/audio"
    reviewer.client.get(audio, headers={"Range": "bytes=0-"})
    reviewer.client.get(audio, headers={"Range": "bytes=4000-"})  # the same playback
    reviewer.client.get(f"/recordings/{rec}/export.docx")
    seg = reviewer.api("GET", f"/api/recordings/{rec}").json()["segments"][0]
    reviewer.api("PATCH", f"/api/segments/{seg['id']}", {"text": "改了", "revision": 0})
    box.interviewer.api("POST", f"/api/recordings/{rec}/delete")  # not theirs: refused
    box.admin.api("POST", f"/api/recordings/{rec}/delete")
    stranger = TestClient(box.app, headers=ENGLISH)
    assert stranger.post("/login", data={
        "username": "rita", "password": "wrong one",
        "csrf_token": form_token(stranger.get("/login").text)}).status_code == 401
    with open_store(box.settings) as store:
        mine = [e for e in store.audit_entries() if e.object == f"recording:{rec}"]
        failed = [e for e in store.audit_entries(action="sign_in_failed")]
    actions = [(e.action, e.username, e.details.get("status")) for e in mine]
    assert actions == [  # the page, one playback (not each range), the export, the
        ("view_recording", "rita", 200), ("play_recording", "rita", 206),  # transcript
        ("export_recording", "rita", 200), ("view_recording", "rita", 200),  # read to edit
        ("delete", "ivan", 404), ("delete", "admin", 200)], actions  # refused, then done
    assert [e.details["format"] for e in mine if e.action == "export_recording"] == ["docx"]
    assert [e.details["username"] for e in failed][-1] == "rita"
    assert all(e.address == "testclient" for e in mine)
    with open_store(box.settings) as store:
        edits = [e for e in store.audit_entries(action="edit_segment")
                 if e.object == f"segment:{seg['id']}"]
    assert [e.details["status"] for e in edits] == [200]
    # the admin browses, filters, verifies and exports it
    page = box.admin.client.get("/admin/audit", params={"recording": rec, "verify": 1}).text
    assert "The chain is intact" in page and "export_recording" in page
    assert "sign_in_failed" not in page  # filtered to the recording
    exported = box.admin.client.get("/admin/audit/export.jsonl")
    assert exported.headers["cache-control"] == "no-store"
    with open_store(box.settings) as store:
        key = box.app.state.auditor.key
        assert verify(store, key.public_key()).ok
    assert verify_export(exported.text.splitlines(), key.public_key()) > len(mine)


def test_the_system_page_counts_outbound_attempts_and_the_trail_records_them(role_box):
    import socket

    from device import egress

    box = role_box
    page = box.admin.client.get("/system").text
    assert "Outbound connection attempts since start:" in page
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        out.connect(("192.0.2.44", 9))  # sends nothing: a UDP connect only picks a route
    count, _ = egress.attempts()
    page = box.admin.client.get("/system").text
    assert f"<strong class=\"error\">{count}</strong>" in page and "192.0.2.44:9" in page
    with open_store(box.settings) as store:
        [entry] = [e for e in store.audit_entries(action="outbound_attempt")
                   if e.object == "192.0.2.44:9"]
    assert entry.details["event"] == "socket.connect"


def test_where_the_recogniser_was_unsure_is_marked_until_a_reviewer_edits_or_confirms(role_box):
    from device.records import Segment, Word

    box = role_box  # shared: this test stores its own recording
    with open_store(box.settings) as store:
        rec = store.create_recording("不确定", "u.wav")
        job = store.claim(1, 0.0, store.enqueue("transcribe", rec.id).id)
        store.complete_transcription(job.id, rec.id, [
            Segment(0.0, 2.0, "今天开会", language="zh", avg_logprob=-0.2,
                    words=(Word(0.0, 1.0, "今天", 0.95), Word(1.0, 2.0, "开会", 0.3))),
            Segment(2.0, 4.0, "嗯嗯啊", language="zh", avg_logprob=-1.1,
                    words=(Word(2.0, 4.0, "嗯嗯啊", 0.4),))], language="zh", duration=4.0)
    exported = box.reviewer.client.get(f"/recordings/{rec.id}/export.json").json()
    first, second = exported["segments"]
    assert (first["unsure"], second["unsure"]) == (False, True)
    assert [w["unsure"] for w in first["words"]] == [False, True]
    page = box.reviewer.client.get(f"/recordings/{rec.id}").text
    assert page.count('class="segment unsure"') == 1 and "Listen to those first" in page
    assert '"开会",0.3]' in page  # the word's probability: the browser marks it
    # a reviewer's edit is theirs: no marks any more
    box.reviewer.api("PATCH", f"/api/segments/{second['id']}",
                     {"text": "嗯，好的", "revision": 0})
    exported = box.reviewer.client.get(f"/recordings/{rec.id}/export.json").json()
    assert not exported["segments"][1]["unsure"]
    assert not any(w["unsure"] for w in exported["segments"][1]["words"])
    # or confirms the text as heard: same text and times, no marks, one undoable revision
    # (the page's script offers it where marks are: the browser test clicks it)
    assert page.count('<button class="confirm"') == 1 and '<template id="seg-tools">' in page
    stale = box.reviewer.api("POST", f"/api/segments/{first['id']}/confirm", {"revision": 1})
    assert stale.status_code == 409
    confirmed = box.reviewer.api("POST", f"/api/segments/{first['id']}/confirm",
                                 {"revision": 0}).json()
    assert confirmed["text"] == "今天开会" and confirmed["revision"] == 1
    assert [w["unsure"] for w in confirmed["words"]] == [False, False]
    assert [w["start"] for w in confirmed["words"]] == [0.0, 1.0]
    history = box.reviewer.api("GET", f"/api/recordings/{rec.id}/revisions").json()
    assert history[0]["kind"] == "confirm" and history[0]["username"] == "rita"
    page = box.reviewer.client.get(f"/recordings/{rec.id}").text
    assert 'class="segment unsure"' not in page
    assert re.search(rf'data-id="{first["id"]}"[^>]*data-revision="1"', page)
    with open_store(box.settings) as store:
        entries = store.audit_entries(object=f"segment:{first['id']}")
    assert [(e.action, e.username, e.details["status"]) for e in entries][-1] == \
        ("confirm_segment", "rita", 200)


def test_the_recording_page_and_the_library_draw_the_recording(role_box):
    """A timeline strip from what the box has: a lane per speaker with talk time, markers,
    the passages the recogniser was unsure of, the hits of a search; a small strip, the
    number of speakers and the duration on the library page."""
    rec = stored_transcript(role_box.settings, title="Strip drawing",
                            texts=["We will review the budget.", "预算下周二再讨论。",
                                   "The committee meets."])
    with open_store(role_box.settings) as store:
        store.add_marker(rec, 6.0, "the budget")
        first = store.segments(rec)[0]
        store.db["segments"].update(first.id, {"avg_logprob": -1.2})  # Whisper was unsure
    page = role_box.reviewer.client.get(f"/recordings/{rec}", params={"q": "预算"}).text
    svg = re.search(r'<svg class="strip".*?</svg>', page, re.S).group(0)
    lanes = re.findall(r'<g class="lane speaker-(\d)"><title>(\w+): ([^<]+)</title>(.*?)</g>',
                       svg, re.S)
    assert [(colour, name, talk) for colour, name, talk, _ in lanes] == \
        [("0", "A", "7 s"), ("1", "B", "3 s")]
    # A speaks 0-3.5 and 8-11.5 of 12 s: thousandths of the recording
    assert re.findall(r'<rect x="([\d.]+)" y="4" width="([\d.]+)"', lanes[0][3]) == \
        [("0.0", "291.7"), ("666.7", "291.7")]
    assert lanes[0][3].count('class="unsure"') == 1 and "3 unsure" not in svg
    assert '1 unsure passage(s)' in svg and '1 marker(s)' in svg
    assert re.search(r'<line class="marker" x1="500.0"', svg)
    assert re.search(r'<path class="hit" d="M327.3,0', svg)  # the segment at 4 s
    assert 'data-duration="12.0"' in svg and 'id="strip-cursor"' in svg
    found = role_box.reviewer.client.get("/", params={"q": "预算"}).text
    assert f'/recordings/{rec}?segment=' in found and "&amp;q=%E9%A2%84%E7%AE%97" in found
    library = role_box.reviewer.client.get("/").text
    row = re.search(rf'<tr>\s*<td><a href="/recordings/{rec}">Strip drawing</a>(.*?)</tr>',
                    library, re.S).group(1)
    assert '<svg class="strip mini"' in row and row.count("<rect ") == 3
    assert re.search(r"<td>12 s</td>\s*<td>2</td>", row)
    # a change of speakers shows on the library's strip at once (it is kept drawn until then)
    segments = role_box.reviewer.api("GET", f"/api/recordings/{rec}").json()["segments"]
    assert role_box.reviewer.api("POST", f"/api/recordings/{rec}/speakers/assign", {
        "speaker": "A", "segments": [{"id": s["id"], "revision": s["revision"]}
                                     for s in segments]}).status_code == 200
    row = re.search(rf'<a href="/recordings/{rec}">Strip drawing</a>(.*?)</tr>',
                    role_box.reviewer.client.get("/").text, re.S).group(1)
    assert re.search(r"<td>12 s</td>\s*<td>1</td>", row) and "speaker-1" not in row


def test_the_system_page_shows_what_retention_erases_and_a_hold_keeps_it(box):
    """A rule set on the System page; a reviewer confirms a transcript; the next 7 days'
    erasures listed; a held recording is not; Purge now erases what is due, audited."""
    due, held = (stored_transcript(box.settings, title=t) for t in ("Due soon", "Held one"))
    box.settings.audio_dir.mkdir(parents=True, exist_ok=True)
    with open_store(box.settings) as store:
        for rec in (due, held):
            (box.settings.audio_dir / f"{rec}.wav").write_bytes(b"RIFF" + bytes(64))
            store.update_recording(rec, audio_file=f"{rec}.wav")
    for rec in (due, held):
        assert box.reviewer.api("POST", f"/api/recordings/{rec}/reviewed",
                                {"reviewed": True}).json()["reviewed_at"]
    assert box.admin.api("POST", f"/api/recordings/{held}/hold",
                         {"reason": "case 2026-17"}).json()["legal_hold"] == "case 2026-17"
    assert box.admin.client.post("/admin/retention", data={
        "what": "audio", "days": "3", "csrf_token": box.admin.csrf},
        follow_redirects=False).status_code == 303
    page = box.admin.client.get("/system").text
    listed = re.search(r'id="retention-due">(.*?)</ul>', page, re.S).group(1)
    assert "Due soon" in listed and "Held one" not in listed and "its audio" in listed
    with open_store(box.settings) as store:  # confirmed four days ago
        store.db.execute("UPDATE recordings SET reviewed_at = '2026-01-01T00:00:00.000+00:00'")
    assert box.admin.client.post("/admin/retention/purge", data={
        "csrf_token": box.admin.csrf}, follow_redirects=False).status_code == 303
    with open_store(box.settings) as store:
        assert store.get_recording(due).audio_erased and not store.get_recording(due).audio_file
        assert store.get_recording(held).audio_file and not store.get_recording(held).audio_erased
        entries = [(e.action, e.object, e.details.get("trigger"))
                   for e in store.audit_entries()]
    assert ("retention_erased_audio", f"recording:{due}", "admin admin") in entries
    assert ("hold", f"recording:{held}", None) in [(a, o, None) for a, o, _ in entries]
    page = box.reviewer.client.get(f"/recordings/{due}").text
    assert "The retention rules erased the audio on" in page and 'id="player"' not in page
    assert box.reviewer.client.get(f"/recordings/{due}/audio").status_code == 410
    assert "Legal hold: case 2026-17" in box.reviewer.client.get(f"/recordings/{held}").text
    assert box.reviewer.api("POST", f"/api/recordings/{held}/hold",
                            {"reason": None}).status_code == 403  # admins hold and release
    assert box.admin.api("POST", f"/api/recordings/{held}/hold", {"reason": " "}
                         ).status_code == 400  # a hold says why

"""Helpers for the web tests: an app on a temporary data directory, clients signed in with
each role through the real setup and login forms, and a small stored transcript."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import httpx
from fastapi.testclient import TestClient

from device.databases import open_store
from device.records import Segment, Word
from device.settings import Settings
from web.app import create_app

PASSWORD = "correct horse battery"
ENGLISH = {"Accept-Language": "en"}
"""The web tests read the English pages, as a browser set to English asks for them (the box's
default is Chinese); tests/test_i18n.py reads both."""


def form_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def page_csrf(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


@dataclass
class Browser:
    """A TestClient with a session; ``csrf`` is the token its pages carry."""

    client: TestClient
    csrf: str
    username: str

    def api(self, method: str, url: str, json=None, **kw):
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        return self.client.request(method, url, json=json, headers=headers, **kw)


def setup_admin(app, username: str = "admin") -> Browser:
    client = TestClient(app, headers=ENGLISH)
    token = form_token(client.get("/setup").text)
    response = client.post("/setup", data={"code": app.state.setup_code, "username": username,
                                           "password": PASSWORD, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return Browser(client, page_csrf(client.get("/").text), username)


def sign_in(client: httpx.Client, username: str, password: str = PASSWORD) -> str:
    """Sign in through the login form (any httpx client: TestClient or real HTTP); returns
    the session's CSRF token."""
    token = form_token(client.get("/login").text)
    response = client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return page_csrf(client.get("/").text)


def create_account(settings: Settings, username: str, role: str = "admin") -> None:
    """An account written straight into the database (for an appliance started as a process,
    whose setup code is on its console)."""
    from device.accounts import hash_password

    with open_store(settings) as store:
        store.create_user(username, hash_password(PASSWORD), role)


def login(app, username: str, password: str = PASSWORD) -> Browser:
    client = TestClient(app, headers=ENGLISH)
    return Browser(client, sign_in(client, username, password), username)


def add_user(admin: Browser, username: str, role: str) -> None:
    response = admin.client.post("/admin/users", data={
        "username": username, "password": PASSWORD, "role": role, "csrf_token": admin.csrf},
        follow_redirects=False)
    assert response.status_code == 303, response.text


@dataclass
class Box:
    app: object
    settings: Settings
    admin: Browser
    reviewer: Browser
    interviewer: Browser


@functools.cache
def _password_hash() -> str:
    from device.accounts import hash_password

    return hash_password(PASSWORD)


def signed_in_account(app, username: str, role: str) -> Browser:
    """An account and a session made straight in the database: each Argon2 hash or check
    costs a fifth of a second, and most tests need a box with three signed-in roles (the
    admin's Users page and the login form have tests of their own)."""
    from web import security

    with open_store(app.state.settings) as store:
        user = store.create_user(username, _password_hash(), role)
        token = security.start_session(store, user)
    client = TestClient(app, headers=ENGLISH)
    client.cookies.set(security.SESSION_COOKIE, token)
    return Browser(client, page_csrf(client.get("/").text), username)


def make_box(settings: Settings) -> Box:
    app = create_app(settings)
    admin = setup_admin(app)
    return Box(app, settings, admin, signed_in_account(app, "rita", "reviewer"),
               signed_in_account(app, "ivan", "interviewer"))


def stored_transcript(settings: Settings, title: str = "Budget meeting",
                      owner_id: int | None = None, texts=None) -> int:
    """A finished recording with a few segments (the first with word timings)."""
    texts = texts or ["We will review the budget on Tuesday.", "预算下周二再讨论。",
                      "The committee meets again next month."]
    with open_store(settings) as store:
        rec = store.create_recording(title, "meeting.wav", owner_id=owner_id)
        job = store.claim(1, 0.0, store.enqueue("transcribe", rec.id).id)
        segments = []
        for i, text in enumerate(texts):
            words = ()
            if i == 0:
                tokens = text.split()
                words = tuple(Word(i * 4 + k * 0.5, i * 4 + k * 0.5 + 0.4, " " + t, 0.9)
                              for k, t in enumerate(tokens))
            segments.append(Segment(i * 4.0, i * 4.0 + 3.5, text, language="en",
                                    speaker="A" if i != 1 else "B", words=words))
        store.complete_transcription(job.id, rec.id, segments, language="en", duration=12.0,
                                     language_probability=1.0, model_id="whisper-base")
        return rec.id

"""Request dependencies: settings, a per-request store, the signed-in user and role checks.

``require("reviewer")`` gives the signed-in user when their role is at least reviewer, and
on a state-changing method also checks the session's CSRF token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as FastAPIPath
from fastapi.templating import Jinja2Templates

from device import databases
from device.errors import N_, RecordingNotFound, TingjiError
from device.records import Recording, User
from device.settings import Settings
from device.store import Store
from web import audit, security

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ROW_ID_MAX = 2**63 - 1
"""SQLite's largest integer: a larger id in a URL or body would overflow, not miss."""
STORES_KEPT = 8
"""Store handles kept open between requests (one per request in progress)."""
RowId = Annotated[int, FastAPIPath(ge=1, le=ROW_ID_MAX)]
"""An id in a URL path: out of SQLite's range answers 422 instead of overflowing."""


class LoginRequired(Exception):
    """No valid session: pages redirect to the login (or first-boot setup), APIs say 401."""


class Refused(Exception):
    """An answer with ``status`` whose message is said in the reader's language: a message
    id with its ``params``, or an error that keeps one (``device.errors``)."""

    def __init__(self, status: int, message: str | Exception, /,
                 headers: dict[str, str] | None = None, **params):
        super().__init__(str(message) % params if params else str(message))
        self.status, self.message, self.params = status, message, params
        self.headers = headers or {}


class Forbidden(TingjiError):
    def __init__(self, message: str = N_("your role does not allow this"), **params):
        super().__init__(message, **params)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> AsyncIterator[Store]:
    """A store handle for this request alone, one of the few the app keeps open (opening
    an SQLite connection costs more than a page's queries).  Taken and given back on the
    event loop: in WAL mode reading waits for no writer.  A handle left inside a
    transaction (a failed request) is closed, which rolls it back."""
    state = request.app.state
    kept, settings = state.stores, state.settings
    store = kept.pop() if kept else None
    if store is not None and not databases.still_current(settings, store):
        for stale in (store, *kept):  # locked or unlocked since, or encrypted: all go
            stale.close()
        kept.clear()
        audit.let_go_if_stale(state)
        store = None
    if store is None:
        store = databases.open_store(settings)
    try:
        yield store
    finally:
        if store.db.conn.in_transaction or len(kept) >= STORES_KEPT:
            store.close()
        else:
            kept.append(store)


def templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]


async def _csrf_given(request: Request) -> str | None:
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        given = (await request.form()).get("csrf_token")
    return given


def require(role: str):
    """Dependency: the signed-in user, at least ``role``; CSRF checked on writes."""

    async def dependency(request: Request, store: StoreDep) -> User:
        # one indexed read, on the loop: readers never wait in WAL mode
        session = security.session_of(store, request.cookies.get(security.SESSION_COOKIE))
        if session is None:
            raise LoginRequired()
        user, csrf = session
        request.state.user, request.state.csrf = user, csrf
        if request.method not in SAFE_METHODS and not security.same_token(
                csrf, await _csrf_given(request)):
            raise Forbidden(N_("missing or wrong CSRF token: reload the page and try again"))
        if not user.can(role):
            raise Forbidden(N_("this needs the %(role)s role (you are %(yours)s)"), role=role,
                            yours=user.role)
        return user

    return dependency


Interviewer = Annotated[User, Depends(require("interviewer"))]
Reviewer = Annotated[User, Depends(require("reviewer"))]
Admin = Annotated[User, Depends(require("admin"))]


def visible_recording(store: Store, user: User, recording_id: int) -> Recording:
    """The recording if this user may see it; interviewers see only their own (a recording
    they may not see answers 404, as if it did not exist)."""
    recording = store.get_recording(recording_id)
    if not user.can("reviewer") and recording.owner_id != user.id:
        raise RecordingNotFound(N_("no recording with id %(id)s"), id=recording_id)
    return recording

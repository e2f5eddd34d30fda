"""What the web UI writes to the audit trail (``device.audit``).

Every state-changing request of a signed-in user is an entry (its route's name as the action,
the object from the path, the response status), whether it succeeded or was refused; so are
the reads that disclose a recording: its page, its transcript as JSON, its audio (the first
request of a playback, not every range), its revisions and exports, the library's searches,
and the admin pages that show personal data.  Sign-in (succeeded or failed) and sign-out are
written by the auth routes themselves, with the user name tried.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from device import databases, egress
from device.store import Store

log = logging.getLogger(__name__)
READS = {  # route name -> action
    "recording_page": "view_recording", "recording_json": "view_recording",
    "recording_audio": "play_recording", "revisions": "view_revisions",
    "export_transcript": "export_recording", "voiceprints_page": "view_voiceprints",
    "audit_page": "view_audit", "audit_export": "export_audit", "users": "view_users",
}
OWN = {"login", "setup", "logout"}
"""Routes that write their own entries."""
QUIET = {"chunk"}
"""Writes that are part of an audited action: a recording's audio arriving in chunks (its
start and stop are entries)."""
OBJECTS = ("recording_id", "segment_id", "user_id", "voiceprint_id", "job_id", "revision_id",
           "entry_id")


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def object_of(request: Request) -> str | None:
    params = request.path_params
    for key in OBJECTS:
        if key in params:
            return f"{key[:-3]}:{params[key]}"
    return None


def entry_for(request: Request, status: int) -> tuple[str, dict] | None:
    """(action, details) for this request, or None if it is not audited."""
    route = request.scope.get("route")
    user = getattr(request.state, "user", None)
    name = getattr(route, "name", None)
    if name is None or name in OWN or name in QUIET or user is None:
        return None
    details = {"method": request.method, "path": request.url.path, "status": status}
    if request.method not in ("GET", "HEAD"):
        return name, details
    if name == "library" and request.query_params.get("q"):
        return "search", {**details, "query": request.query_params["q"][:200]}
    if name not in READS or status >= 400:
        return None
    if name == "recording_audio":
        wanted = request.headers.get("range", "")
        if wanted and not wanted.replace(" ", "").startswith("bytes=0-"):
            return None  # the same playback, further on
    if name == "export_transcript":
        details["format"] = request.path_params.get("fmt") or request.url.path.rsplit(".")[-1]
    return READS[name], details


async def record_request(request: Request, status: int) -> None:
    for attempt in egress.unreported():  # the box tried to reach another machine
        await run_in_threadpool(write, request, "outbound_attempt", None, attempt.address, {
            "event": attempt.event, "where": attempt.where})
    found = entry_for(request, status)
    if found is None:
        return
    action, details = found
    entry = (request, action, getattr(request.state, "user", None), object_of(request),
             details)
    written = write(*entry, wait=False)  # on the loop when the trail is free at once
    if written is BUSY:
        await run_in_threadpool(write, *entry)
    elif written is not None and request.app.state.auditor.head_due(written):
        await run_in_threadpool(sign_head, request, written)  # may wait for the lock


_writing = threading.Lock()
BUSY_WAIT_MS = 30_000
"""How long a write in a thread waits for another process's write lock."""
BUSY = object()
"""``write``'s answer when it would have had to wait."""


def write(request: Request, action: str, user, object: str | None, details: dict,
          wait: bool = True):
    """Append with the app's one audit connection (entries are written one at a time in
    any case: each links to the one before); the entry, or None when it could not be
    written (logged).  ``wait=False``: only if neither another request nor another process
    is writing right now (a fraction of a millisecond: no thread hop for it), else BUSY;
    the chain's head, when due, is then left to the caller to sign (``sign_head``)."""
    state = request.app.state
    if not _writing.acquire(blocking=wait):
        return BUSY
    try:
        store = _audit_store(state)
        store.db.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_MS if wait else 0}")
        return state.auditor.record(store, action, user=user,
                                    address=client_address(request), object=object,
                                    details=details, sign=wait)
    except sqlite3.OperationalError as exc:
        if not wait and exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return BUSY  # another process writes: wait for it in a thread
        _missing(action, object, user)
    except Exception:
        _missing(action, object, user)
    finally:
        _writing.release()
    return None


def sign_head(request: Request, entry) -> None:
    """Sign the chain's head after ``entry`` (waiting for the write lock as long as it
    takes another process to let go of it)."""
    state = request.app.state
    with _writing:
        try:
            store = _audit_store(state)
            store.db.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_MS}")
            reason = state.auditor.head_due(entry)
            if reason:
                state.auditor.sign_head(store, reason)
        except Exception:
            log.exception("audit trail: could not sign the head after entry %s", entry.id)


def let_go_if_stale(state) -> None:
    """Close the audit connection if the box was locked or unlocked since it opened (a
    waiting database is moved only once no process holds it); unless it is writing now."""
    if _writing.acquire(blocking=False):
        try:
            store = getattr(state, "audit_store", None)
            if store is not None and not databases.still_current(state.settings, store):
                store.close()
                state.audit_store = None
        finally:
            _writing.release()


def _audit_store(state) -> Store:
    store = getattr(state, "audit_store", None)
    if store is not None and not databases.still_current(state.settings, store):
        store.close()  # locked or unlocked since: the trail goes on in the other database
        store = None
    if store is None:
        store = state.audit_store = databases.open_store(state.settings)
    return store


def _missing(action: str, object: str | None, user) -> None:
    """The action is done: say loudly that its entry is missing."""
    log.exception("audit trail: could not record %s %s by %s", action, object,
                  getattr(user, "username", None))

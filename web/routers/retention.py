"""Retention rules, purges and legal holds (``device.retention``).

POST /admin/retention                      add a rule (admin)
POST /admin/retention/{rule_id}/delete     remove a rule (admin)
POST /admin/retention/purge                erase what is due now (admin)
POST /api/recordings/{id}/hold             hold a recording, or release it (admin)
POST /api/recordings/{id}/reviewed         confirm its transcript, or take that back (reviewer)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from device import retention
from device.profiles import load_profiles
from device.text import NOTE_MAX
from web.deps import Admin, Reviewer, RowId, SettingsDep, StoreDep, visible_recording

router = APIRouter()


def overview(store, settings) -> dict:
    """What the System page shows: the rules, what they erase in the next seven days, the
    last purge, the profiles a rule may name."""
    soon = datetime.now(UTC) + retention.PREVIEW
    return {"rules": store.retention_rules(), "due": retention.due(store, soon),
            "last": store.last_retention_run(),
            "profiles": sorted(p for p in load_profiles(settings.data_dir) if p != "auto")}


@router.post("/admin/retention")
def add_rule(user: Admin, store: StoreDep, what: Annotated[str, Form(max_length=16)],
             days: Annotated[int, Form(ge=0, le=36_600)],
             profile: Annotated[str, Form(max_length=64)] = ""):
    store.add_retention_rule(what, days, profile or None, created_by=user.username)
    return RedirectResponse("/system#retention", status_code=303)


@router.post("/admin/retention/{rule_id}/delete")
def remove_rule(rule_id: RowId, user: Admin, store: StoreDep):
    store.remove_retention_rule(rule_id)
    return RedirectResponse("/system#retention", status_code=303)


@router.post("/admin/retention/purge")
def purge_now(request: Request, user: Admin, store: StoreDep, settings: SettingsDep):
    retention.purge(store, settings, datetime.now(UTC), f"admin {user.username}",
                    request.app.state.auditor)
    return RedirectResponse("/system#retention", status_code=303)


class Hold(BaseModel):
    reason: str | None = Field(default=None, max_length=NOTE_MAX)
    """Why it is held; None releases it."""


@router.post("/api/recordings/{recording_id}/hold")
def hold(recording_id: RowId, body: Hold, user: Admin, store: StoreDep):
    recording = store.set_legal_hold(recording_id, body.reason)
    return {"id": recording.id, "legal_hold": recording.legal_hold}


class Reviewed(BaseModel):
    reviewed: bool


@router.post("/api/recordings/{recording_id}/reviewed")
def reviewed(recording_id: RowId, body: Reviewed, user: Reviewer, store: StoreDep):
    visible_recording(store, user, recording_id)
    recording = store.set_reviewed(recording_id, body.reviewed)
    return {"id": recording.id, "reviewed_at": recording.reviewed_at}

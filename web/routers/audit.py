"""The admin's view of the audit trail.

GET /admin/audit              browse, newest first; filter by user, action, recording, dates;
                              ?verify=1 walks the whole chain and its signed heads
GET /admin/audit/export.jsonl signed JSONL of the entries (since a date, if given)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from device.audit import export_lines, public_hex, verify
from web.deps import ROW_ID_MAX, Admin, StoreDep, templates

router = APIRouter()
PAGE = 200
Text = Annotated[str, Query(max_length=64)]


@router.get("/admin/audit")
def audit_page(request: Request, user: Admin, store: StoreDep, username: Text = "",
               action: Text = "", since: Text = "", until: Text = "",
               recording: Annotated[str, Query(max_length=19, pattern=r"^\d*$")] = "",
               before: Annotated[int | None, Query(ge=1, le=ROW_ID_MAX)] = None,
               verify_chain: Annotated[bool, Query(alias="verify")] = False):
    auditor = request.app.state.auditor
    entries = store.audit_entries(
        username=username, action=action, since=since, until=until, limit=PAGE,
        object=f"recording:{int(recording)}" if recording else "", newest_first=True,
        before=before)
    return templates(request).TemplateResponse(request, "audit.html", {
        "entries": entries, "filters": {"username": username, "action": action,
                                        "since": since, "until": until,
                                        "recording": recording},
        "older": entries[-1].id if len(entries) == PAGE else None,
        "verification": verify(store, auditor.key.public_key()) if verify_chain else None,
        "public_key": public_hex(auditor.key), "heads": len(store.audit_heads())})


@router.get("/admin/audit/export.jsonl")
def audit_export(request: Request, user: Admin, store: StoreDep, since: Text = ""):
    lines = list(export_lines(store, request.app.state.auditor.key, since))
    return StreamingResponse(iter(line + "\n" for line in lines),
                             media_type="application/x-ndjson", headers={
                                 "Content-Disposition": 'attachment; filename="audit.jsonl"',
                                 "Cache-Control": "no-store"})

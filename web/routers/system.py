"""/health: liveness and readiness for the Makefile, the update health check and monitors.

Anyone on the LAN may ask whether the box is up; only a signed-in admin learns its version,
schema, model and queue (a version tells an attacker which holes to try)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

import device
from models.store import get_spec, status
from web import security
from web.deps import SettingsDep, StoreDep

router = APIRouter()


@router.get("/health")
def health(request: Request, settings: SettingsDep, store: StoreDep):
    model = status(get_spec(settings.asr_model), settings.models_dir, quick=True)
    body = {"status": "ok" if model == "installed" else "degraded"}
    session = security.session_of(store, request.cookies.get(security.SESSION_COOKIE))
    if session is not None and session[0].can("admin"):
        body.update({
            "version": device.__version__,
            "schema_version": store.schema_version,
            "asr_model": {"id": settings.asr_model, "status": model},
            "jobs": {s: len(store.list_jobs(s, limit=10_000)) for s in ("queued", "running")},
        })
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

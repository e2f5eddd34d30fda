"""/health: liveness and readiness for the Makefile, the update health check and monitors."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

import device
from models.store import get_spec, status
from web.deps import SettingsDep, StoreDep

router = APIRouter()


@router.get("/health")
def health(settings: SettingsDep, store: StoreDep):
    model = status(get_spec(settings.asr_model), settings.models_dir, quick=True)
    body = {
        "status": "ok" if model == "installed" else "degraded",
        "version": device.__version__,
        "schema_version": store.schema_version,
        "asr_model": {"id": settings.asr_model, "status": model},
        "jobs": {s: len(store.list_jobs(s, limit=10_000)) for s in ("queued", "running")},
    }
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

"""The library page: recordings and their status (placeholder until the reviewer UI lands)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from web.deps import StoreDep, templates

router = APIRouter()


@router.get("/")
def library(request: Request, store: StoreDep, q: str = ""):
    hits = store.search(q) if q.strip() else []
    return templates(request).TemplateResponse(
        request, "library.html",
        {"recordings": store.list_recordings(limit=200), "query": q, "hits": hits},
    )

"""The library page: recordings and their status (placeholder until the reviewer UI lands)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from device.store import Store
from web.deps import get_store, templates

router = APIRouter()


@router.get("/")
def library(request: Request, q: str = "", store: Store = Depends(get_store)):
    hits = store.search(q) if q.strip() else []
    return templates(request).TemplateResponse(
        request, "library.html",
        {"recordings": store.list_recordings(limit=200), "query": q, "hits": hits},
    )

"""The library: recordings with status, filters, and full-text search with highlighted hits
that open the recording at the moment they were said."""

from __future__ import annotations

import html
import re
import threading
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request
from markupsafe import Markup

from device.text import to_simplified
from web import timeline
from web.deps import Interviewer, StoreDep, templates

router = APIRouter()
PAGE = 50
HITS = 100
STATUSES = ("recording", "queued", "transcribing", "done", "failed", "interrupted")


def highlight(text: str, query: str) -> Markup:
    """``text`` escaped, with each query term marked; matches across Traditional/Simplified
    and case, as the search does (folding is per character, so positions line up)."""
    folded = to_simplified(text).lower()
    if len(folded) != len(text):  # a phrase conversion changed the length: go per character
        folded = "".join(to_simplified(ch).lower()[:1] or ch for ch in text)
    spans = []
    for term in query.split():
        term = to_simplified(term).lower()
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(term), folded)]
    out, position = [], 0
    for start, end in sorted(spans):
        if start < position:
            continue
        out += [html.escape(text[position:start]), "<mark>", html.escape(text[start:end]),
                "</mark>"]
        position = end
    out.append(html.escape(text[position:]))
    return Markup("".join(out))  # every piece of the text escaped above


_drawing = threading.Lock()
DRAWN_MAX = 5000
"""Small strips kept drawn (``app.state.drawn_strips``), by recording and the moment it
last changed (every transcript, edit and speaker change sets it): each library page reads
the segments of fifty recordings otherwise."""


def _strips(request: Request, store, recordings) -> dict[int, tuple[Markup, int]]:
    """(small strip's lanes as SVG, number of speakers) of each recording."""
    key = {r.id: (r.id, r.updated, r.status, r.duration) for r in recordings}
    _drawn = request.app.state.drawn_strips
    with _drawing:
        found = {r.id: _drawn[key[r.id]] for r in recordings if key[r.id] in _drawn}
    missing = [r for r in recordings if r.id not in found]
    spans = store.speech_spans([r.id for r in missing])
    for r in missing:
        found[r.id] = (timeline.mini_lanes(timeline.speech_strip(r.duration, spans[r.id])),
                       len({s for _, _, s in spans[r.id] if s}))
    with _drawing:
        for r in recordings:
            _drawn[key[r.id]] = found[r.id]
            _drawn.move_to_end(key[r.id])
        while len(_drawn) > DRAWN_MAX:
            _drawn.popitem(last=False)
    return found


def _day(value: str) -> str | None:
    try:
        return date.fromisoformat(value).isoformat() if value else None
    except ValueError:
        return None


@router.get("/")
async def library(request: Request, user: Interviewer, store: StoreDep, q: str = "",
            status: str = "", language: str = "", since: str = "", until: str = "",
            page: Annotated[int, Query(ge=1, le=1_000_000)] = 1):
    owner = None if user.can("reviewer") else user.id
    filters = {"status": status if status in STATUSES else None, "language": language or None,
               "since": _day(since), "until": _day(until), "owner_id": owner}
    recordings, total, hits = [], 0, []
    if q.strip():  # a search shows its hits, within the filters
        hits = store.search(q, limit=HITS, **filters)
    else:
        recordings = store.list_recordings(limit=PAGE, offset=(page - 1) * PAGE, **filters)
        total = store.count_recordings(**filters)
    strips = _strips(request, store, recordings)
    return templates(request).TemplateResponse(request, "library.html", {
        "strips": {r.id: strips[r.id][0] for r in recordings},
        "speakers": {r.id: strips[r.id][1] for r in recordings},
        "recordings": recordings, "total": total, "page": page, "pages": -(-total // PAGE),
        "query": q, "hits": hits, "highlight": highlight, "statuses": STATUSES,
        "languages": store.recording_languages(), "status": status, "language": language,
        "since": since, "until": until,
    })

"""Headers every response carries: what the browser may load and run, what it may keep.

Pages load scripts, styles and media from the box alone (no inline script anywhere: the
Content-Security-Policy forbids it), may not be framed, send no referrer; over HTTPS the
browser is told to use HTTPS only (HSTS).  Transcripts, audio and exports are never cached.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import MutableHeaders

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
NO_STORE = {"recording_page", "recording_json", "recording_audio", "revisions",
            "export_transcript", "audit_page", "audit_export", "voiceprints_page"}
HSTS_SECONDS = 365 * 24 * 3600


def add_security_headers(request: Request, headers: MutableHeaders) -> None:
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    if request.url.scheme == "https":
        headers.setdefault("Strict-Transport-Security", f"max-age={HSTS_SECONDS}")
    route = request.scope.get("route")
    if getattr(route, "name", None) in NO_STORE:
        headers["Cache-Control"] = "no-store"

"""Request bodies are capped by route before anything reads them.

The sign-in check runs after FastAPI has read (and parsed) a body, so without a cap any
web page a LAN user opens could post hundreds of megabytes at the box, unauthenticated, and
have them held in memory.  Uploads stream to disk under their own limit; every other route
gets a small one.  A declared ``Content-Length`` over the cap is refused before a byte is
read; a body without one is counted as it arrives and cut off at the cap.
"""

from __future__ import annotations

import json

UPLOAD_PATH = "/api/upload"
BODY_MAX = 1 << 20
"""JSON and form bodies: a segment's 20,000 characters are 60 KB, a summary edit less."""


class BodyLimit:
    """ASGI middleware answering 413 for a body over its route's cap."""

    def __init__(self, app, upload_max: int, body_max: int = BODY_MAX):
        self.app, self.upload_max, self.body_max = app, upload_max, body_max

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        # A form body is read whole by the CSRF check: a form gets the small cap anywhere.
        form = headers.get(b"content-type", b"").startswith(
            (b"application/x-www-form-urlencoded", b"multipart/form-data"))
        upload = scope["path"] == UPLOAD_PATH and not form
        limit = self.upload_max if upload else self.body_max
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(send, limit)
        if upload:  # streamed to disk by the route, which counts it against its cap itself
            return await self.app(scope, receive, send)
        received, refused = 0, False

        async def counted():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _too_large(send, limit)
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def unless_refused(message):
            if not refused:  # the 413 is already on its way
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if not refused:
                raise  # the app's own failure
            # else: the app failed to read the body it was refused; the 413 has gone out


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"the request body is larger than {limit:,} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

"""HEAD answered as GET without the body (RFC 9110: a server that answers GET answers HEAD);
FastAPI's GET routes answer HEAD with 405."""

from __future__ import annotations


class HeadAsGet:
    """ASGI middleware: a HEAD request is run as a GET whose body is not sent."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def headers_only(message):
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)

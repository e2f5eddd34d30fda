"""create_app(settings): the FastAPI application, assembled in one place."""

from __future__ import annotations

import collections
import functools
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

import device
from device import egress, encryption, export
from device.audit import Auditor
from device.confidence import WORD_BELOW, segment_unsure
from device.databases import open_store
from device.errors import N_, EditConflict, InvalidInput, NotFound, RecordingNotFound
from device.settings import Settings
from device.tls import serves_others
from web import i18n, security
from web.audit import record_request
from web.deps import Forbidden, LoginRequired, Refused
from web.head import HeadAsGet
from web.headers import add_security_headers
from web.limits import BodyLimit
from web.routers import (
    admin,
    audit,
    auth,
    imports,
    library,
    record,
    recordings,
    retention,
    system,
    voices,
)

HERE = Path(__file__).parent


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    recorder = getattr(app.state, "recorder", None)
    if recorder is not None and recorder.state == "recording":
        # Shutting down mid-recording: keep and queue what was recorded.
        await run_in_threadpool(recorder.stop)
    await run_in_threadpool(_sign_audit_head, app)


def _sign_audit_head(app: FastAPI) -> None:
    with open_store(app.state.settings) as store:
        app.state.auditor.sign_head(store, "shutdown")
    if getattr(app.state, "audit_store", None) is not None:
        app.state.audit_store.close()
    while app.state.stores:
        app.state.stores.pop().close()


class AuditAndHeaders:
    """ASGI middleware: a response's audit entry (``web.audit``) is written and its security
    headers (``web.headers``) added as its head goes out; plain ASGI, so a page costs no
    extra task or stream."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_guarded(message):
            if message["type"] == "http.response.start":
                request = Request(scope)  # the routes' request state lives in the scope
                await record_request(request, message["status"])
                add_security_headers(request, MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_guarded)


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def _error(request: Request, status: int, message, extra: dict | None = None,
           headers: dict | None = None, **params):
    """The error page, or JSON for scripts; ``message`` (a message id or an error) said in
    the reader's language."""
    message = i18n.say(request, message, **params)
    if _wants_html(request):
        return request.app.state.templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status,
            headers=headers)
    return JSONResponse({"detail": message, **(extra or {})}, status_code=status,
                        headers=headers)


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="tingji", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, upload_max=settings.max_upload_bytes)
    app.add_middleware(HeadAsGet)
    app.add_middleware(AuditAndHeaders)
    app.state.settings = settings
    app.state.recorder = None
    app.state.login_limiter = security.LoginLimiter()
    app.state.event_streams = collections.Counter()  # open live-event streams by user
    app.state.stores = []  # store handles kept open between requests: web.deps.get_store
    app.state.drawn_strips = collections.OrderedDict()  # the library's, web/routers/library.py
    templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on for .html
    templates.env.globals["version"] = device.__version__
    templates.env.globals["segment_unsure"] = segment_unsure
    templates.env.globals["box_locked"] = functools.partial(encryption.locked, settings)
    templates.env.globals["word_unsure_below"] = WORD_BELOW
    templates.env.filters["clock"] = export.clock
    i18n.install(templates, settings)
    app.state.templates = templates
    with open_store(settings) as store:  # create or migrate the database up front
        first_boot = store.count_users() == 0
    app.state.auditor = Auditor(settings)
    app.state.unlock_failures = collections.deque()  # wrong passphrases, for the pause
    egress.install()

    app.state.setup_code = security.new_setup_code() if first_boot else None
    if first_boot:
        scheme = "https" if serves_others(settings) else "http"
        print(f"tingji: first start: open {scheme}://{settings.host}:{settings.port}/setup and "
              f"enter the setup code {app.state.setup_code} to create the admin account",
              file=sys.stderr, flush=True)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        if _wants_html(request):
            target = "/setup" if app.state.setup_code else f"/login?next={request.url.path}"
            return RedirectResponse(target, status_code=303)
        return JSONResponse({"detail": i18n.say(request, N_("sign in first"))}, status_code=401)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return _error(request, exc.status, exc.message, headers=exc.headers, **exc.params)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden):
        return _error(request, 403, exc)

    @app.exception_handler(EditConflict)
    async def conflict(request: Request, exc: EditConflict):
        current = [export.segment_record(s) for s in exc.current]
        return _error(request, 409, exc, {"current": current})

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        if isinstance(exc, RecordingNotFound) and encryption.locked(settings):
            return _error(request, 423, encryption.BoxLocked())  # out of reach until unlocked
        return _error(request, 404, exc)

    @app.exception_handler(encryption.BoxLocked)
    async def box_locked(request: Request, exc: encryption.BoxLocked):
        return _error(request, 423, exc)

    @app.exception_handler(InvalidInput)
    async def invalid(request: Request, exc: InvalidInput):
        return _error(request, 400, exc)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in (system, auth, library, recordings, voices, imports, record, admin, audit,
                   retention):
        app.include_router(router.router)
    return app

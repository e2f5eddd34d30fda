"""create_app(settings): the FastAPI application, assembled in one place."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from device.settings import Settings
from device.store import Store
from web.routers import library, record, system

HERE = Path(__file__).parent


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    recorder = getattr(app.state, "recorder", None)
    if recorder is not None and recorder.state == "recording":
        recorder.stop()  # shutting down mid-recording: keep and queue what was recorded


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="tingji", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.recorder = None
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    Store(settings.database_path).close()  # create or migrate the database up front
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(system.router)
    app.include_router(library.router)
    app.include_router(record.router)
    return app

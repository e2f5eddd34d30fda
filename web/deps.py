"""Request dependencies: settings, a per-request store handle, templates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from device.settings import Settings
from device.store import Store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Iterator[Store]:
    """One store handle per request: SQLite connections are cheap and not shared."""
    store = Store(request.app.state.settings.database_path)
    try:
        yield store
    finally:
        store.close()


def templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]

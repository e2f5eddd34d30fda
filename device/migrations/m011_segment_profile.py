"""The dialect profile each segment was decoded with: auto mode decides the variety per
window of speech, so one recording may hold several."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["segments"].add_column("profile", str)

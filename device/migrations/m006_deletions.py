"""Deleted recordings: what was deleted, by whom and when (the recording itself is gone)."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["deletions"].create(
        {"id": int, "recording_id": int, "title": str, "owner_id": int, "user_id": int,
         "username": str, "created": str},
        pk="id", not_null={"recording_id", "title", "created"}, if_not_exists=True,
    )

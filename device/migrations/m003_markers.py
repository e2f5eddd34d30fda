"""Markers: bookmarks an interviewer sets while recording (time and note)."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["markers"].create(
        {"id": int, "recording_id": int, "t": float, "note": str, "created": str},
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"recording_id", "t", "created"}, if_not_exists=True,
    )
    db["markers"].create_index(["recording_id", "t"], if_not_exists=True)

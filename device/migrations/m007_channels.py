"""Recordings of several channels: how they were arranged for recognition, and the channel
each segment was heard on (diarization's first clue to who spoke)."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["recordings"].add_column("channel_layout", str)
    db["segments"].add_column("channel", int)

"""How many people speak in a recording, when the interviewer said so before recording: kept
with the recording, so the transcription queued at stop (or after a crash) still knows."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["recordings"].add_column("speakers", int)

"""Retention and legal hold: the admin's rules, when a reviewer confirmed a transcript, which
recordings are held, when retention erased a recording's audio, and each purge."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    recordings = db["recordings"]
    recordings.add_column("reviewed_at", str)
    recordings.add_column("legal_hold", str)  # the reason; None: not held
    recordings.add_column("audio_erased", str)
    db["retention_rules"].create({
        "id": int, "what": str, "days": int, "profile": str, "created": str,
        "created_by": str}, pk="id", not_null={"what", "days", "created"})
    db["retention_runs"].create({
        "id": int, "at": str, "audio_erased": int, "recordings_deleted": int,
        "trigger": str}, pk="id", not_null={"at"})

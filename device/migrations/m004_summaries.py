"""Summaries: every version kept, with the model, prompt and transcript it came from."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["summaries"].create(
        {"id": int, "recording_id": int, "version": int, "model_id": str,
         "prompt_version": str, "transcript_hash": str, "content": str, "flags": str,
         "created": str},
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"recording_id", "version", "content", "created"}, if_not_exists=True,
    )
    db["summaries"].create_index(["recording_id", "version"], unique=True, if_not_exists=True)

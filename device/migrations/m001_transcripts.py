"""Recordings, their transcripts (segments, words), the job queue and the search index."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["recordings"].create(
        {
            "id": int, "title": str, "source_name": str, "audio_file": str,
            "duration": float, "language": str, "language_probability": float,
            "model_id": str, "status": str, "error": str, "created": str, "updated": str,
        },
        pk="id", not_null={"title", "status", "created", "updated"}, if_not_exists=True,
    )
    db["segments"].create(
        {
            "id": int, "recording_id": int, "idx": int, "start": float, "end": float,
            "text": str, "language": str, "avg_logprob": float, "no_speech_prob": float,
            "compression_ratio": float, "speaker": str, "revision": int,
        },
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"recording_id", "idx", "start", "end", "text"},
        defaults={"revision": 0}, if_not_exists=True,
    )
    db["words"].create(
        {"id": int, "segment_id": int, "idx": int, "start": float, "end": float,
         "text": str, "probability": float},
        pk="id", foreign_keys=[("segment_id", "segments", "id")], if_not_exists=True,
    )
    db["jobs"].create(
        {
            "id": int, "kind": str, "recording_id": int, "status": str, "progress": float,
            "attempts": int, "params": str, "error": str, "created": str, "started": str,
            "finished": str, "worker_pid": int, "worker_started": float,
        },
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"kind", "status", "created"}, defaults={"progress": 0.0, "attempts": 0},
        if_not_exists=True,
    )
    db["segments"].create_index(["recording_id", "idx"], unique=True, if_not_exists=True)
    db["words"].create_index(["segment_id", "idx"], if_not_exists=True)
    db["jobs"].create_index(["status", "id"], if_not_exists=True)
    # Segment text in search_form(): folded to Simplified, one token per CJK character, so
    # a phrase query matches Chinese of any length as well as English words.
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS segments_fts USING fts5("
        "text, tokenize = 'unicode61 remove_diacritics 2')"
    )

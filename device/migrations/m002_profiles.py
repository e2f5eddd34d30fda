"""Dialect profiles: what each recording was transcribed with, and the glossary."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    recordings = db["recordings"]
    for column in ("profile", "script", "terms", "language_probabilities", "auto_decision"):
        recordings.add_column(column, str)
    db["glossary"].create(
        {"id": int, "term": str, "misheard": str, "created": str},
        pk="id", not_null={"term", "created"}, if_not_exists=True,
    )
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS glossary_entry "
               "ON glossary (term, coalesce(misheard, ''))")

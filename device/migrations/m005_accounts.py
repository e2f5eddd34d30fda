"""Accounts, sessions, the owner of each recording, and the revision history of edits."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["users"].create(
        {"id": int, "username": str, "password_hash": str, "role": str, "created": str},
        pk="id", not_null={"username", "password_hash", "role", "created"}, if_not_exists=True,
    )
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_name ON users (username COLLATE NOCASE)")
    db["sessions"].create(
        {"token_hash": str, "user_id": int, "csrf": str, "created": str, "expires": float},
        pk="token_hash", foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "csrf", "created", "expires"}, if_not_exists=True,
    )
    db["recordings"].add_column("owner_id", int)
    db["revisions"].create(
        {"id": int, "recording_id": int, "kind": str, "note": str, "user_id": int,
         "username": str, "before": str, "after": str, "undone_by": int, "created": str},
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"recording_id", "kind", "before", "after", "created"}, if_not_exists=True,
    )
    db["revisions"].create_index(["recording_id", "id"], if_not_exists=True)

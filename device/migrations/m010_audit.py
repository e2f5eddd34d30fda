"""The audit trail: an append-only hash chain of who did what, with signed chain heads."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["audit"].create(
        {"id": int, "at": str, "user_id": int, "username": str, "address": str,
         "action": str, "object": str, "details": str, "prev": str, "hash": str},
        pk="id", not_null={"at", "action", "details", "prev", "hash"}, if_not_exists=True)
    db["audit"].create_index(["action", "id"], if_not_exists=True)
    db["audit"].create_index(["username", "id"], if_not_exists=True)
    db["audit"].create_index(["object", "id"], if_not_exists=True)
    db["audit_heads"].create(
        {"id": int, "entry_id": int, "hash": str, "signature": str, "at": str,
         "reason": str},
        pk="id", not_null={"entry_id", "hash", "signature", "at"}, if_not_exists=True)

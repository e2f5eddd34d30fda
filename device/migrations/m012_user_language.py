"""The pages' language each user chose (None: the browser's, else the box default)."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["users"].add_column("language", str)

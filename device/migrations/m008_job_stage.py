"""What a running job is doing, in words (a summary: reading part 2 of 3, writing…)."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    db["jobs"].add_column("stage", str)

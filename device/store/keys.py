"""The recordings' data keys, sealed to the box key, in a database of their own
(``keys.db`` beside ``tingji.db``).

A data key lives apart from the ciphertext it opens, and from everything that copies the
box's data (update backups copy ``tingji.db``; the previous update slot shares ``data/``), so
erasing one key erases every copy of its recording: ``secure_delete`` overwrites the row and
the write-ahead log is emptied, so the sealed key's bytes leave the disk's files at once.
Sealing needs only the box's public key (``device.vault.seal_key``): keys are added while the
box is locked.

    >>> keys = DataKeys(Path(":memory:"))
    >>> keys.put("recording:7", b"sealed")
    >>> keys.get("recording:7"), keys.erase("recording:7"), keys.get("recording:7")
    (b'sealed', True, None)
"""

from __future__ import annotations

from pathlib import Path

from device.store._base import connect, now


class DataKeys:
    def __init__(self, path: Path):
        self.db = connect(path, "secure_delete = ON")
        with self.db.conn:
            self.db["keys"].create({"name": str, "sealed": bytes, "created": str},
                                   pk="name", not_null={"sealed", "created"},
                                   if_not_exists=True)
            self.db.execute("CREATE TABLE IF NOT EXISTS recording_ids (id INTEGER PRIMARY KEY)")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> DataKeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, name: str, sealed: bytes) -> None:
        """Keep a sealed key under ``name`` (``recording:12``); a name is never reused."""
        with self.db.conn:
            self.db["keys"].insert({"name": name, "sealed": sealed, "created": now()})

    def get(self, name: str) -> bytes | None:
        row = self.db.execute("SELECT sealed FROM keys WHERE name = ?", [name]).fetchone()
        return row[0] if row else None

    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM keys ORDER BY name")]

    def new_recording_id(self, floor: int = 0) -> int:
        """An id for a new recording, above every id given before and above ``floor`` (the
        highest the database in use holds): the main database and a locked box's waiting
        databases, which cannot see each other, take their ids from this one counter."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            (top,) = self.db.execute("SELECT coalesce(max(id), 0) FROM recording_ids"
                                     ).fetchone()
            new = max(top, floor) + 1
            self.db.execute("DELETE FROM recording_ids")
            self.db.execute("INSERT INTO recording_ids (id) VALUES (?)", [new])
        except BaseException:
            self.db.conn.rollback()
            raise
        self.db.execute("COMMIT")
        return new

    def erase(self, name: str) -> bool:
        """Destroy a key: whatever it sealed can no longer be read, anywhere."""
        with self.db.conn:
            gone = self.db.execute("DELETE FROM keys WHERE name = ?", [name]).rowcount > 0
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

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

    def erase(self, name: str) -> bool:
        """Destroy a key: whatever it sealed can no longer be read, anywhere."""
        with self.db.conn:
            gone = self.db.execute("DELETE FROM keys WHERE name = ?", [name]).rowcount > 0
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

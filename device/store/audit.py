"""The audit trail's rows: appended in the write transaction that links each entry to the one
before, read back in order for verification, browsing and export."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator

import sqlite_utils

from device.records import AuditEntry, AuditHead
from device.store._base import Rooms, now, once

GENESIS = "0" * 64
"""The ``prev`` of the first entry (and of the first after a break in the chain)."""


def canonical(entry: dict) -> bytes:
    """The bytes an entry's hash covers: its fields as sorted, compact JSON."""
    fields = {k: entry[k] for k in ("id", "at", "user_id", "username", "address", "action",
                                    "object", "details")}
    return json.dumps(fields, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":")).encode()


def chain_hash(prev: str, entry: dict) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + canonical(entry)).hexdigest()


def make_trail(trail: sqlite_utils.Database, main: sqlite_utils.Database) -> None:
    """The trail's database: its tables made if missing; the first time, the entries and
    signed heads the main database kept (before the trail had a database of its own)
    copied in, in one transaction that also marks it done (``user_version``)."""
    from device.migrations.m010_audit import migrate

    def move() -> None:
        migrate(trail)
        if main["audit"].exists():
            columns = [c.name for c in trail["audit"].columns]
            trail["audit"].insert_all(
                ({c: row[c] for c in columns} for row in main["audit"].rows), batch_size=1000)
            trail["audit_heads"].insert_all(main["audit_heads"].rows)

    once(trail, move)


class AuditRooms(Rooms):
    trail: sqlite_utils.Database
    """The trail's own database (``audit.db``), or the main one (a waiting database)."""

    def append_audit(self, action: str, *, user_id: int | None = None,
                     username: str | None = None, address: str | None = None,
                     object: str | None = None, details: dict | None = None,
                     restart: bool = False, at: str | None = None) -> AuditEntry:
        """Append one entry, linked to the last (``restart``: a new chain segment after a
        break, linked to GENESIS; ``at``: when it happened, if not now)."""
        with self.transaction(self.trail):
            last = self.trail.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1"
                                   ).fetchone()
            if last and not (isinstance(last[0], int) and isinstance(last[1], str)
                             and len(last[1]) == 64):  # what a damaged page reads as
                raise sqlite3.DatabaseError("the last audit entry is malformed")
            entry = {"id": (last[0] + 1) if last else 1, "at": at or now(), "user_id": user_id,
                     "username": username, "address": address, "action": action,
                     "object": object, "details": details or {}}
            prev = GENESIS if restart or not last else last[1]
            digest = chain_hash(prev, entry)
            row = {**entry, "details": json.dumps(entry["details"], sort_keys=True,
                                                  ensure_ascii=False), "prev": prev,
                   "hash": digest}
            self.trail.execute(f"INSERT INTO audit ({', '.join(row)}) "
                            f"VALUES ({', '.join('?' * len(row))})", list(row.values()))
        return AuditEntry(**{**entry, "prev": prev, "hash": digest})

    def set_aside_damaged_audit(self) -> tuple[int, str]:
        """The trail's table cannot be written (a damaged page): keep it as it is under
        another name, and start a new ``audit`` table with every entry still readable, in
        order up to the first that is not.  Returns (the last entry kept, the old table's
        name)."""
        kept: list[tuple] = []
        try:
            for entry in self.audit_rows():
                if entry.id != len(kept) + 1:
                    break
                kept.append((entry.id, entry.at, entry.user_id, entry.username, entry.address,
                             entry.action, entry.object,
                             json.dumps(entry.details, sort_keys=True, ensure_ascii=False),
                             entry.prev, entry.hash))
        except sqlite3.DatabaseError:
            pass  # the damage: what came before it is kept
        damaged = f"audit_damaged_{now().replace('-', '').replace(':', '')[:15]}"
        with self.transaction(self.trail):
            self.trail.execute(f"ALTER TABLE audit RENAME TO {damaged}")
            for index in ("idx_audit_action_id", "idx_audit_username_id", "idx_audit_object_id"):
                self.trail.execute(f"DROP INDEX IF EXISTS {index}")
            from device.migrations.m010_audit import migrate

            migrate(self.trail)
            self.trail.conn.executemany("INSERT INTO audit (id, at, user_id, username, address, "
                                     "action, object, details, prev, hash) "
                                     "VALUES (?,?,?,?,?,?,?,?,?,?)", kept)
        return len(kept), damaged

    def audit_entries(self, *, after: int = 0, limit: int | None = None, username: str = "",
                      action: str = "", object: str = "", since: str = "",
                      until: str = "", newest_first: bool = False,
                      before: int | None = None) -> list[AuditEntry]:
        where, args = ["id > ?"], [after]
        if before:
            where.append("id < ?")
            args.append(before)
        for column, value in (("username", username), ("action", action),
                              ("object", object)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if since:
            where.append("at >= ?")
            args.append(since)
        if until:
            where.append("at < ?")
            args.append(until)
        sql = (f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id "
               f"{'DESC' if newest_first else 'ASC'}")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_entry(row) for row in self.trail.query(sql, args)]

    def audit_rows(self, batch: int = 10_000) -> Iterator[AuditEntry]:
        """Every entry in id order, read in batches (a trail may hold millions).  A batch
        that cannot be read is read again one entry at a time, so the DatabaseError comes
        at the first entry that is unreadable."""
        after = 0
        while True:
            try:
                rows = self._audit_batch(after, batch)
            except sqlite3.DatabaseError:
                if batch == 1:
                    raise
                batch = 1
                continue
            if not rows:
                return
            for row in rows:
                yield _row_entry(row)
            after = rows[-1][0]

    def _audit_batch(self, after: int, batch: int) -> list[tuple]:
        return self.trail.execute("SELECT id, at, user_id, username, address, action, object, "
                               "details, prev, hash FROM audit WHERE id > ? ORDER BY id "
                               "LIMIT ?", [after, batch]).fetchall()

    def last_audit_entry(self) -> AuditEntry | None:
        rows = self.audit_entries(limit=1, newest_first=True)
        return rows[0] if rows else None

    def add_audit_head(self, entry_id: int, digest: str, signature: str,
                       reason: str) -> AuditHead:
        with self.transaction(self.trail):
            row_id = self.trail["audit_heads"].insert({
                "entry_id": entry_id, "hash": digest, "signature": signature, "at": now(),
                "reason": reason}).last_pk
        return AuditHead(**next(self.trail.query("SELECT * FROM audit_heads WHERE id = ?",
                                              [row_id])))

    def audit_heads(self) -> list[AuditHead]:
        return [AuditHead(**row) for row in
                self.trail.query("SELECT * FROM audit_heads ORDER BY id")]


def _row_entry(row: tuple) -> AuditEntry:
    """An entry from its row; a row a damaged page turned into something else (SQLite can
    read garbage as values) raises DatabaseError, as an unreadable one does."""
    try:
        details = json.loads(row[7])
        if not isinstance(row[0], int) or not isinstance(details, dict) or not all(
                isinstance(v, str) and len(v) == 64 for v in (row[8], row[9])):
            raise ValueError
    except (TypeError, ValueError):
        raise sqlite3.DatabaseError(f"audit entry after {row[0]!r} is malformed") from None
    return AuditEntry(*row[:7], details, row[8], row[9])


def _entry(row: dict) -> AuditEntry:
    return AuditEntry(**{**row, "details": json.loads(row["details"])})

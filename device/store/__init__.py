"""The SQLite store: the only package that knows the schema; every query lives here.

WAL journal, synchronous=FULL, foreign keys on.  The schema's migrations live in
``device/migrations/`` and run when a store opens, in one transaction, so a crash
mid-migration leaves the previous version intact and a rerun is harmless.  Every read
returns a record of ``device.records``; a missing thing raises a ``NotFound`` error.

    >>> store = Store(Path(":memory:"))
    >>> rec = store.create_recording("Interview", source_name="a.wav")
    >>> store.get_recording(rec.id).status
    'queued'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from device.migrations import adopt_numbered_schema, migration_names, schema_migrations
from device.store._base import connect, copy_database, now
from device.store.accounts import AccountRooms, make_accounts
from device.store.audit import AuditRooms, make_trail
from device.store.editing import EditingRooms
from device.store.jobs import JobRooms
from device.store.library import LibraryRooms
from device.store.retention import RetentionRooms
from device.store.transcripts import TranscriptRooms

SCHEMA_VERSION = len(migration_names())
__all__ = ["SCHEMA_VERSION", "Store", "accounts_path", "now"]


def accounts_path(database: Path) -> Path:
    """Where the accounts of the box whose main database is ``database`` are kept."""
    return database if str(database) == ":memory:" else database.with_name("accounts.db")


class Store(LibraryRooms, TranscriptRooms, EditingRooms, JobRooms, AccountRooms, AuditRooms,
            RetentionRooms):
    """A handle on the database; cheap to open, one per thread or process.  Its methods
    live in one module per area: library, transcripts, editing, jobs, accounts, audit,
    retention."""

    waiting: str | None = None
    """The name of the waiting database this is (``device.databases``), else None."""

    def __init__(self, path: Path, *, key: bytes | None = None,
                 accounts: Path | None = None, ids: Callable[[int], int] | None = None,
                 trail: Path | None = None, trail_key: bytes | None = None):
        """``key``: the database is SQLCipher's, under that key.  ``accounts``: the accounts'
        database, by default ``accounts.db`` beside ``path``.  ``ids``: where new recordings'
        ids come from (given the highest this database holds), instead of the database.
        ``trail``: the audit trail's database (under ``trail_key``), by default ``audit.db``
        beside ``path``: its writes leave the other connections' caches of this one alone;
        ``path`` itself keeps it in its own tables."""
        self.path, self.key, self.accounts_path, self.ids = path, key, accounts, ids
        self.trail_path = (None if str(path) == ":memory:" or trail == path
                           else trail or path.with_name("audit.db"))
        self.trail_key = key if self.trail_path is None else trail_key
        self._trail: sqlite_utils.Database | None = None
        self._trail_file: int | None = None
        self.held: list = []
        """Files this handle holds locks on while it is open (``device.databases``)."""
        self.db = connect(path, "secure_delete = ON", key=key)
        self._file = None if str(path) == ":memory:" else os.stat(path).st_ino
        try:
            self.migrate()
            self.accounts = connect(accounts or accounts_path(path))
        except BaseException:
            self.db.close()
            raise
        make_accounts(self.accounts, self.db)

    @property
    def trail(self) -> sqlite_utils.Database:
        """The audit trail's database, opened at its first use (most requests write none)."""
        if self._trail is None:
            if self.trail_path is None:
                self._trail = self.db
            else:
                trail = connect(self.trail_path, key=self.trail_key)
                try:
                    make_trail(trail, self.db)
                except BaseException:
                    trail.close()
                    raise
                self._trail, self._trail_file = trail, os.stat(self.trail_path).st_ino
        return self._trail

    def close(self) -> None:
        if self._trail is not None and self._trail is not self.db:
            self._trail.close()
        self.db.close()
        self.accounts.close()
        while self.held:
            self.held.pop().close()

    def stale(self) -> bool:
        """Whether the database's file was replaced since this handle opened it (encrypted
        by another process): a new handle sees the new file."""
        try:
            return (self._file is not None and os.stat(self.path).st_ino != self._file) or (
                self._trail_file is not None
                and os.stat(self.trail_path).st_ino != self._trail_file)
        except FileNotFoundError:
            return True

    def backup(self, folder: Path) -> list[Path]:
        """Copy the database, its trail and the accounts, consistently while others write,
        into new files in ``folder``: each encrypted as it is kept, under the same key, when
        it is (SQLCipher's export).  The files written."""
        copies = []
        for db, key, name in ((self.db, self.key, "tingji.db"),
                              (self.trail, self.trail_key, "audit.db"),
                              (self.accounts, None, "accounts.db")):
            path = Path(folder) / name
            if db is self.db and name == "audit.db":
                continue  # the trail is in the database's own tables
            copy_database(db, key, path)
            copies.append(path)
        return copies

    def reopen(self) -> Store:
        """Another handle on the same databases (for another thread)."""
        return Store(self.path, key=self.key, accounts=self.accounts_path, ids=self.ids,
                     trail=self.trail_path or self.path, trail_key=self.trail_key)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """Migrations applied (also kept in ``PRAGMA user_version``, which firmware from
        before the migrations table reads: a rollback to it must not migrate again)."""
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        """Apply pending migrations, all in one write transaction: processes opening the
        store at once queue for it, and a crash leaves the previous schema intact."""
        if self.schema_version == SCHEMA_VERSION:
            return  # the common case, read off the file's header: every page opens a store
        migrations = schema_migrations()
        if not migrations.pending(self.db):
            return  # the common case: no write lock taken just to open the store
        with self.transaction():
            adopt_numbered_schema(self.db, migrations)
            migrations.apply(self.db)
            applied = len(migrations.applied(self.db))
            self.db.execute(f"PRAGMA user_version = {applied}")


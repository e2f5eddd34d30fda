"""What every area of the store shares: the connection, the write transaction, and the
rows-to-records conversions."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from device.errors import TingjiError
from device.records import Job, Recording, Revision, Segment, Word
from device.said import loaded

JSON_COLUMNS = ("terms", "language_probabilities", "auto_decision", "channel_layout")
"""Recording columns stored as JSON text."""


class DatabaseKeyError(TingjiError):
    """An encrypted database that its key does not open (damaged, or another box's)."""


def raw_key(key: bytes) -> str:
    """A 32-byte key as SQLCipher takes it in SQL: used as it is, not derived again."""
    return "\"x'" + key.hex() + "'\""


WAIT = 30.0
"""Seconds a connection waits for another's lock before it fails."""


def raw_connection(path: Path, key: bytes | None = None, timeout: float = WAIT):
    """A bare connection to ``path``: SQLite's, or with ``key`` SQLCipher's (the key tried at
    once: DatabaseKeyError if it does not open the file); no pragma set, so a file is read
    as it is (an update backup keeps its journal mode)."""
    if key is None:
        return sqlite3.connect(str(path), timeout=timeout, check_same_thread=False)
    import sqlcipher3

    conn = sqlcipher3.connect(str(path), timeout=timeout, check_same_thread=False)
    conn.execute("PRAGMA cipher_log_level = NONE")  # its errors are raised, not printed
    conn.execute("PRAGMA key = " + raw_key(key))
    try:  # the key is only tried on the first read
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher3.DatabaseError as exc:
        conn.close()
        raise DatabaseKeyError(f"{path} does not open with its key: it is damaged, or "
                               "not this box's") from exc
    return conn


def copy_database(db: sqlite_utils.Database, key: bytes | None, path: Path) -> None:
    """A consistent copy of ``db`` in a new file at ``path`` while others write: encrypted
    under ``key`` as ``db`` is (SQLCipher's export), else SQLite's online backup."""
    from device.errors import N_, InvalidInput

    if Path(path).exists():
        raise InvalidInput(N_("%(path)s exists already: choose a new file"), path=str(path))
    if key is None:
        copy = sqlite3.connect(str(path))
        try:
            db.conn.backup(copy)
        finally:
            copy.close()
        return
    db.execute(f"ATTACH DATABASE ? AS copy KEY {raw_key(key)}", [str(path)])
    try:
        db.execute("SELECT sqlcipher_export('copy')")
    finally:
        db.execute("DETACH DATABASE copy")


def connect(path: Path, *pragmas: str, key: bytes | None = None) -> sqlite_utils.Database:
    """A database handle as every store of the box opens one: its folder made, WAL, full
    sync, foreign keys, a 30 s wait for the write lock, and any ``pragmas`` more.

    With ``key`` (32 bytes) the database is SQLCipher's: every page, of the file and of its
    write-ahead log, encrypted with AES-256 under that key and authenticated."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = raw_connection(path, key)
    db = sqlite_utils.Database(conn)
    _write_ahead(db)
    for pragma in ("synchronous = FULL", "foreign_keys = ON",
                   f"busy_timeout = {int(WAIT * 1000)}", *pragmas):
        db.execute(f"PRAGMA {pragma}")
    return db


def _write_ahead(db: sqlite_utils.Database) -> None:
    """Switch ``db`` to WAL.  Connections opening a new database at once (the web server
    and the worker on a box's first start) each want the exclusive lock that switch takes
    while holding a shared one; SQLite then fails all but one at once instead of waiting
    ("database is locked"), so the switch is tried again for up to ``WAIT``."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except db.conn.OperationalError as exc:  # sqlite3's or SQLCipher's
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def once(db: sqlite_utils.Database, work) -> None:
    """Run ``work()`` in one write transaction of ``db`` unless it ran there before (noted in
    ``PRAGMA user_version`` by the same transaction): what moves rows from the main database
    into a database of their own, once, with processes opening it at the same time."""
    if db.execute("PRAGMA user_version").fetchone()[0]:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if not db.execute("PRAGMA user_version").fetchone()[0]:  # not meanwhile
            work()
            db.execute("PRAGMA user_version = 1")
    except BaseException:
        db.conn.rollback()
        raise
    db.execute("COMMIT")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Rooms:
    """The base of each area's methods; ``Store`` joins them over one connection."""

    db: sqlite_utils.Database

    @contextlib.contextmanager
    def transaction(self, db: sqlite_utils.Database | None = None) -> Iterator[None]:
        """BEGIN IMMEDIATE: take the write lock up front so writers queue instead of failing.
        On the main database, or on ``db``."""
        db = self.db if db is None else db
        if db.conn.in_transaction:
            with db.atomic():
                yield
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.conn.rollback()
            raise
        db.execute("COMMIT")


def encode_fields(fields: dict) -> dict:
    return {k: json.dumps(v, ensure_ascii=False) if k in JSON_COLUMNS and v is not None else v
            for k, v in fields.items()}


def revision_of(row: dict) -> Revision:
    return Revision(**{**row, "before": json.loads(row["before"]),
                       "after": json.loads(row["after"]), "note": loaded(row["note"])})


def recording_of(row: dict) -> Recording:
    fields = {k: json.loads(v) if k in JSON_COLUMNS and v else v for k, v in row.items()}
    return Recording(**{**fields, "error": loaded(fields.get("error"))})


def job_of(row: dict) -> Job:
    return Job(**{**row, "params": json.loads(row["params"] or "{}"),
                  "stage": loaded(row.get("stage")), "error": loaded(row.get("error"))})


def segment_of(snap: dict) -> Segment:
    return Segment(
        id=snap["id"], start=snap["start"], end=snap["end"], text=snap["text"],
        language=snap["language"], avg_logprob=snap["avg_logprob"],
        no_speech_prob=snap["no_speech_prob"], compression_ratio=snap["compression_ratio"],
        speaker=snap["speaker"], revision=snap["revision"], channel=snap.get("channel"),
        profile=snap.get("profile"),
        words=tuple(Word(*w) for w in snap["words"]),
    )

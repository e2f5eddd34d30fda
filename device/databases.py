"""Which database the box's processes open, and a locked box's waiting databases.

Before the box has its key the main database (``tingji.db``) is SQLite's, in the clear.  Once
it has one, the main database is SQLCipher's under a key of its own (``database:main`` in
``keys.db``, sealed to the box key): it opens only while the box is unlocked.  A database
kept in the clear before is encrypted by the worker (``seal_main``: not by the web app, so
that an update's health check, which starts the new version's web app, leaves the data in
the form its backup has), its accounts moved out before.

A locked box still signs people in (``accounts.db`` stays in the clear: names, roles and
password hashes) and records.  What it writes while locked (a recording's row, its live
transcript and markers, its job, audit entries) goes to a *waiting database*,
``waiting/<name>.db``: SQLCipher's under a new key sealed to the box's public key (no secret
needed), shared between the box's processes in memory (``device.unlock.keep_secret``) for as
long as the box runs locked; after a restart a new one begins, and the old one is unreadable
until the unlock.  Recording ids come from one counter in ``keys.db``, so the two kinds never
share one.  The first opening after an unlock moves every waiting database that no process
holds into the main one, each in one transaction that also notes the move (a power cut leaves
it waiting or moved; the next opening finishes), then erases it and its key.

    store = open_store(settings)   # the main database, or while locked the waiting one
"""

from __future__ import annotations

import fcntl
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from device import audio, encryption, unlock, vault
from device.settings import Settings
from device.store import Store
from device.store._base import raw_connection, raw_key
from device.store.keys import DataKeys

log = logging.getLogger("tingji.databases")

MAIN, AUDIT, WAITING = "main", "audit", "waiting"

MOVED = ("recordings", "segments", "words", "markers", "jobs", "deletions", "decoded_windows",
         "summary_notes", "summary_ahead", "audit", "glossary", "summaries", "retention_rules",
         "retention_runs")
"""The tables whose rows a waiting database hands over."""
LEFT = ("users", "sessions", "audit_heads", "_sqlite_migrations", "sqlite_sequence")
"""The tables it does not: accounts live elsewhere, its own chain heads are signed again."""


def waiting_dir(settings: Settings) -> Path:
    return settings.data_dir / "waiting"


def open_store(settings: Settings) -> Store:
    """The store to read and write now: the main database (waiting databases moved into it
    first), or, while the box is locked, the waiting database of this run."""
    if not encryption.enabled(settings):
        return Store(settings.database_path)
    if unlock.current(settings.data_dir) is None:
        return _waiting_store(settings)
    path = settings.database_path
    key = _key(settings, path, MAIN, True)  # in the clear: sealed after a recording
    store = Store(path, key=key, ids=_ids(settings),
                  trail_key=_key(settings, trail_path(settings), AUDIT, key is not None))
    try:
        if key is not None:  # (what waits is moved once it is encrypted)
            seal_backups(settings)
            move_waiting(settings, store)
    except BaseException:
        store.close()
        raise
    return store


def still_current(settings: Settings, store: Store) -> bool:
    """Whether a handle kept open is still what ``open_store`` would give: not after its
    file was replaced (encrypted) or moved, nor after the box was locked or unlocked."""
    return not store.stale() and (store.waiting is not None) == encryption.locked(settings)


def trail_path(settings: Settings) -> Path:
    """The audit trail's database."""
    return settings.data_dir / "audit.db"


def _key(settings: Settings, path: Path, name: str, new_encrypted: bool) -> bytes | None:
    """The key ``path`` opens with: none while it is in the clear; a new file is encrypted
    when ``new_encrypted``."""
    if path.exists() and encryption.in_the_clear(path):
        return None
    if not path.exists() and not new_encrypted:
        return None
    return encryption.database_key(settings, name)


def main_store(settings: Settings) -> Store:
    """The main database in the form it is in (encrypted: the box must be unlocked), neither
    sealed nor moved into: for an update's migrations and for checks."""
    path = settings.database_path
    key = _key(settings, path, MAIN, False) if encryption.enabled(settings) else None
    trail = (_key(settings, trail_path(settings), AUDIT, key is not None)
             if encryption.enabled(settings) else None)
    return Store(path, key=key, trail_key=trail)


def migrate_main(path: Path) -> int:
    """Apply the pending migrations to the main database at ``path`` (``main_store``); the
    schema version.  What an update runs in its new slot before it switches."""
    with main_store(Settings(data_dir=path.parent)) as store:
        return store.schema_version


def _ids(settings: Settings) -> Callable[[int], int]:
    path = encryption.keys_path(settings)

    def new_id(floor: int) -> int:
        with DataKeys(path) as keys:
            return keys.new_recording_id(floor)

    return new_id


def seal_main(settings: Settings, on_sealed=lambda recording_id: None) -> list[int] | None:
    """Encrypt a main database kept in the clear (``encryption.seal_database``), after its
    recordings' audio (``encryption.seal_existing``: the audio's names are in it), with its
    schema migrated, its accounts moved to ``accounts.db`` and the recording id counter set
    above its ids.  Not while a recording is in progress: its recorder writes to the file
    in the clear, which sealing would leave behind (the next opening after it seals).  The
    recordings whose audio was sealed, or None when it did not seal."""
    path = settings.database_path
    if not (encryption.enabled(settings) and (encryption.in_the_clear(path)
                                              or encryption.in_the_clear(trail_path(settings)))):
        return None
    sealed: list[int] = []

    def before() -> None:
        with Store(path) as plain, DataKeys(encryption.keys_path(settings)) as keys:
            sealed.extend(encryption.seal_existing(settings, plain, on_sealed))
            keys.new_recording_id(plain.db.execute(
                "SELECT coalesce(max(id), 0) FROM recordings").fetchone()[0])

    with open(settings.data_dir / "recorder.lock", "a") as recorder:
        try:  # held while sealing: no recording begins meanwhile
            fcntl.flock(recorder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        done = encryption.seal_database(settings, path, MAIN, before)
        encryption.seal_database(settings, trail_path(settings), AUDIT)  # after: its own key
        return sealed if done else None


def update_backups(settings: Settings) -> Path:
    """Where updates keep their backups of the database (``TARGET/state/backups``, beside
    ``TARGET/data``)."""
    return settings.data_dir.parent / "state" / "backups"


def seal_backups(settings: Settings) -> list[Path]:
    """Encrypt the update backups of the database kept in the clear (made before it was
    encrypted) under the main database's key, as new ones are made, so that a restore copies
    page for page; the box must be unlocked.  The backups encrypted."""
    folder = update_backups(settings)
    if not folder.is_dir():
        return []
    plain = [p for p in sorted(folder.glob("tingji-before-*.db")) if encryption.in_the_clear(p)]
    sealed = []
    for path in plain:
        key = encryption.database_key(settings, MAIN)
        with encryption.database_lock(settings, MAIN):
            if encryption.in_the_clear(path):
                encryption._seal_database(settings, path, MAIN, key)
                sealed.append(path)
    return sealed


RECORDING_TABLES = ("markers", "summaries", "revisions", "jobs", "decoded_windows",
                    "summary_notes", "summary_ahead")


def erase_from_backups(settings: Settings, recording_id: int) -> int:
    """A deleted recording's rows removed from the update backups of the database too (as
    the box deletes: rows overwritten as they go, the search index merged), so that no copy
    the box keeps holds its transcript.  Each backup keeps its own schema (a restore needs
    it as it was).  How many backups held it."""
    folder = update_backups(settings)
    held = 0
    for path in sorted(folder.glob("tingji-before-*.db")) if folder.is_dir() else []:
        key = None if encryption.in_the_clear(path) else encryption.database_key(settings, MAIN)
        db = _backup_connection(path, key)
        try:
            if not db.execute("SELECT 1 FROM recordings WHERE id = ?", [recording_id]
                              ).fetchone():
                continue
            held += 1
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            with db:
                segments = "SELECT id FROM segments WHERE recording_id = ?"
                db.execute(f"DELETE FROM words WHERE segment_id IN ({segments})",
                           [recording_id])
                if "segments_fts" in tables:
                    db.execute(f"DELETE FROM segments_fts WHERE rowid IN ({segments})",
                               [recording_id])
                db.execute("DELETE FROM segments WHERE recording_id = ?", [recording_id])
                for table in RECORDING_TABLES:
                    if table in tables:
                        db.execute(f"DELETE FROM {table} WHERE recording_id = ?",
                                   [recording_id])
                db.execute("DELETE FROM recordings WHERE id = ?", [recording_id])
            if "segments_fts" in tables:
                with db:
                    db.execute("INSERT INTO segments_fts (segments_fts) VALUES ('optimize')")
        finally:
            db.close()
    return held


def _backup_connection(path: Path, key: bytes | None):
    """A backup as it is (its journal mode and schema untouched), deletions overwritten."""
    db = raw_connection(path, key)
    db.execute("PRAGMA secure_delete = ON")
    return db


def _waiting_store(settings: Settings) -> Store:
    folder = waiting_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        with encryption.database_lock(settings, WAITING):
            name = (unlock.secret(settings.data_dir, "waiting.name") or b"").decode()
            if not name or unlock.secret(settings.data_dir, f"waiting-{name}.key") is None:
                name = _new_waiting(settings)
        hold = open(folder / f"{name}.lock", "a")
        fcntl.flock(hold, fcntl.LOCK_SH)  # no move while it is open
        key = unlock.secret(settings.data_dir, f"waiting-{name}.key")
        if key is None:  # moved meanwhile (an unlock came between): begin another
            hold.close()
            continue
        try:
            store = Store(folder / f"{name}.db", key=key,
                          accounts=settings.data_dir / "accounts.db", ids=_ids(settings),
                          trail=folder / f"{name}.db", trail_key=key)
        except BaseException:
            hold.close()
            raise
        store.held.append(hold)
        store.waiting = name
        return store
    raise encryption.BoxLocked()


def _new_waiting(settings: Settings) -> str:
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)
    key = vault.new_data_key()
    encryption.keep_key(settings, f"database:{WAITING}:{name}", key)  # before any row
    unlock.keep_secret(settings.data_dir, f"waiting-{name}.key", key)
    unlock.keep_secret(settings.data_dir, "waiting.name", name.encode())
    return name


def waiting(settings: Settings) -> list[str]:
    """The waiting databases on the disk, oldest first."""
    folder = waiting_dir(settings)
    return sorted(p.stem for p in folder.glob("*.db")) if folder.is_dir() else []


def move_waiting(settings: Settings, store: Store) -> list[int]:
    """Move every waiting database no process holds into the main database ``store``;
    the recordings moved."""
    moved: list[int] = []
    for name in waiting(settings):
        lock = waiting_dir(settings) / f"{name}.lock"
        with open(lock, "a") as hold:
            try:
                fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # still open (a recording begun while locked): at a later opening
            path = waiting_dir(settings) / f"{name}.db"
            if not path.exists():
                continue
            try:
                moved += _move(settings, store, path, name)
            except encryption.BoxLocked:
                raise
            except Exception:  # kept whole, and the box goes on: the next opening tries again
                log.exception("waiting database %s could not be moved; it is kept", name)
    return moved


def _move(settings: Settings, store: Store, path: Path, name: str) -> list[int]:
    key_name = f"database:{WAITING}:{name}"
    store.db.execute("CREATE TABLE IF NOT EXISTS waiting_moved (name TEXT PRIMARY KEY, "
                     "at TEXT NOT NULL, recordings TEXT)")
    done = store.db.execute("SELECT 1 FROM waiting_moved WHERE name = ?", [name]).fetchone()
    recordings: list[int] = []
    if not done:
        sealed = encryption.sealed_key(settings, key_name)
        private = unlock.current(settings.data_dir)
        if private is None:
            raise encryption.BoxLocked()
        if sealed is None:
            log.error("waiting database %s has no key left: it cannot be read", name)
            return []
        key = vault.open_key(sealed, private)
        Store(path, key=key, accounts=settings.data_dir / "accounts.db",
              trail=path, trail_key=key).close()  # migrated
        store.db.execute(f"ATTACH DATABASE ? AS waiting KEY {raw_key(key)}", [str(path)])
        try:
            unknown = _unknown_tables(store)
            if unknown:
                log.error("waiting database %s has rows in %s, which this firmware does not "
                          "move: it is kept", name, ", ".join(unknown))
                return []
            entries = _append_trail(store, name)
            with store.transaction():
                recordings = _copy(store)
                store.db.execute("INSERT INTO waiting_moved (name, at, recordings) "
                                 "VALUES (?, ?, ?)", [name, _now(), repr(recordings)])
        finally:
            store.db.execute("DETACH DATABASE waiting")
        from device.audit import Auditor

        auditor = Auditor(settings)
        auditor.record(store, "moved_in_after_unlock", details={
            "recordings": recordings, "entries": entries}, sign=False)
        auditor.sign_head(store, "entries made while locked")  # theirs are not moved
    for leftover in (path, path.with_name(path.name + "-wal"),
                     path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    audio.fsync_dir(path.parent)
    with DataKeys(encryption.keys_path(settings)) as keys:
        keys.erase(key_name)
    unlock.forget(settings.data_dir, f"waiting-{name}.key")
    (path.with_suffix(".lock")).unlink(missing_ok=True)
    if recordings:
        log.info("moved %d recording(s) made while locked into the main database",
                 len(recordings))
    return recordings


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _unknown_tables(store: Store) -> list[str]:
    names = [r[0] for r in store.db.execute(
        "SELECT name FROM waiting.sqlite_master WHERE type = 'table' AND name NOT LIKE "
        "'segments_fts%'")]
    return [t for t in names if t not in MOVED + LEFT
            and store.db.execute(f"SELECT 1 FROM waiting.[{t}] LIMIT 1").fetchone()]


def _columns(store: Store, table: str) -> list[str]:
    return [r[1] for r in store.db.execute(f"PRAGMA main.table_info([{table}])")]


def _copy(store: Store) -> list[int]:
    """Every row of the waiting database into the main one (inside its transaction)."""
    db = store.db
    cols = ", ".join(f"[{c}]" for c in _columns(store, "recordings"))
    recordings = [r[0] for r in db.execute("SELECT id FROM waiting.recordings ORDER BY id")]
    db.execute(f"INSERT INTO main.recordings ({cols}) SELECT {cols} FROM waiting.recordings")
    for table in ("decoded_windows", "summary_notes", "summary_ahead"):
        db.execute(f"INSERT OR REPLACE INTO main.{table} SELECT * FROM waiting.{table}")
    segment_cols = [c for c in _columns(store, "segments") if c != "id"]
    word_cols = [c for c in _columns(store, "words") if c not in ("id", "segment_id")]
    for old, *values in db.execute(
            f"SELECT id, {', '.join(f'[{c}]' for c in segment_cols)} FROM waiting.segments "
            "ORDER BY id").fetchall():
        new = db.execute(f"INSERT INTO main.segments ({', '.join(f'[{c}]' for c in segment_cols)}"
                         f") VALUES ({', '.join('?' * len(values))})", values).lastrowid
        picked = ", ".join(f"[{c}]" for c in word_cols)
        db.execute(f"INSERT INTO main.words (segment_id, {picked}) SELECT ?, {picked} FROM "
                   "waiting.words WHERE segment_id = ? ORDER BY id", [new, old])
        db.execute("INSERT INTO main.segments_fts (rowid, text) SELECT ?, text FROM "
                   "waiting.segments_fts WHERE rowid = ?", [new, old])
    for table in ("markers", "jobs", "deletions", "summaries", "retention_rules",
                  "retention_runs", "glossary"):
        picked = ", ".join(f"[{c}]" for c in _columns(store, table) if c != "id")
        db.execute(f"INSERT OR IGNORE INTO main.{table} ({picked}) SELECT {picked} FROM "
                   f"waiting.{table} ORDER BY id")
    return recordings


def _append_trail(store: Store, name: str) -> int:
    """The waiting database's audit entries appended to the trail (a database of its own)
    with their times, in one transaction that notes the move there: a power cut before the
    main database's transaction leaves them appended once.  How many there were."""
    rows = store.db.execute("SELECT * FROM waiting.audit ORDER BY id").fetchall()
    columns = [c[0] for c in store.db.execute("SELECT * FROM waiting.audit LIMIT 0"
                                              ).description]
    trail = store.trail
    trail.execute("CREATE TABLE IF NOT EXISTS waiting_moved (name TEXT PRIMARY KEY, "
                  "at TEXT NOT NULL)")
    if trail.execute("SELECT 1 FROM waiting_moved WHERE name = ?", [name]).fetchone():
        return 0  # appended before a power cut
    with store.transaction(trail):
        for row in rows:
            entry = dict(zip(columns, row, strict=True))
            store.append_audit(entry["action"], user_id=entry["user_id"],
                               username=entry["username"], address=entry["address"],
                               object=entry["object"], details=_details(entry["details"]),
                               at=entry["at"])
        trail.execute("INSERT INTO waiting_moved (name, at) VALUES (?, ?)", [name, _now()])
    return len(rows)


def _details(text: str | None) -> dict:
    import json

    return json.loads(text) if text else {}

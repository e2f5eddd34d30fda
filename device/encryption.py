"""Encryption at rest as the box's storage sees it: whether it is on, sealing a new
recording's audio while locked, reading it once unlocked, erasing it, and the keys of the
encrypted databases (the main one, the audit trail's, the voiceprints', the waiting ones:
``device.databases``).

Encryption is on once the keyring exists (``python -m device keyring init``, which prints
the recovery key once).  Every recording then has a data key of its own, sealed to the box's
public key and kept in ``keys.db`` as ``recording:<id>``: an import's audio is
``<id><ext>.sealed`` (``device.vault``'s chunked AES-256-GCM; an upload is sealed as it
streams in), a recording made on the box is the folder ``<id>.wav.sealed/`` of its sealed
segments (``device.sealedlog``).  Sealing needs no secret; reading needs the box unlocked
(``device.unlock``); deleting the recording erases the key first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from device import audio, unlock, vault
from device.errors import DiskFullError, TingjiError, is_disk_full
from device.settings import Settings
from device.store.keys import DataKeys

SUFFIX = ".sealed"


class BoxLocked(TingjiError):
    """The box is locked: what needs the private key waits until an admin unlocks it."""

    def __init__(self) -> None:
        super().__init__("the box is locked: an admin unlocks it (System page, or "
                         "`python -m device unlock` on the console)")


def keyring_path(settings: Settings) -> Path:
    return settings.data_dir / "keyring.json"


def keys_path(settings: Settings) -> Path:
    return settings.data_dir / "keys.db"


def enabled(settings: Settings) -> bool:
    return keyring_path(settings).is_file()


def locked(settings: Settings) -> bool:
    if enabled(settings) and unlock.current(settings.data_dir) is None:
        _opened.clear()  # the data keys unsealed while it was unlocked go too
        return True
    return False


def key_name(recording_id: int) -> str:
    return f"recording:{recording_id}"


def is_sealed(name: str | None) -> bool:
    return bool(name) and name.endswith(SUFFIX)


def keep_key(settings: Settings, name: str, data_key: bytes) -> None:
    """Keep a data key in ``keys.db`` under ``name``, sealed to the box's public key (no
    secret needed: a locked box records)."""
    keyring = vault.Keyring.load(keyring_path(settings))
    with DataKeys(keys_path(settings)) as keys:
        keys.put(name, vault.seal_key(data_key, keyring.public_key))


def _keep_key(settings: Settings, recording_id: int, data_key: bytes) -> None:
    keep_key(settings, key_name(recording_id), data_key)


def new_recording_key(settings: Settings, recording_id: int) -> bytes:
    """A new data key for a recording, kept (``_keep_key``)."""
    data_key = vault.new_data_key()
    _keep_key(settings, recording_id, data_key)
    return data_key


def store_sealed(settings: Settings, recording_id: int, source: Path, destination: Path
                 ) -> None:
    """Copy ``source`` into ``destination`` sealed under a new data key, durably; the key is
    kept before the file is complete."""
    data_key = new_recording_key(settings, recording_id)
    try:
        with open(source, "rb") as src, audio.durable_file(destination) as out:
            writer = vault.SealedWriter(out, data_key)
            while block := src.read(1 << 20):
                writer.write(block)
            writer.close()
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"no space left to store {source.name} in "
                                f"{destination.parent}: free some space and import it "
                                "again") from exc
        raise


def adopt_sealed(settings: Settings, recording_id: int, sealed: Path, key: bytes,
                 destination: Path) -> None:
    """Make a file sealed with ``key`` as it arrived (an upload) the recording's audio: its
    key sealed to the box's public key and kept, the file moved into place."""
    _keep_key(settings, recording_id, key)
    os.replace(sealed, destination)
    audio.fsync_dir(destination.parent)


_readers: dict[Path, DataKeys] = {}
_readers_lock = threading.Lock()


def sealed_key(settings: Settings, name: str) -> bytes | None:
    """A sealed key as ``keys.db`` holds it now, read over a connection this process keeps
    (a playback asks for its recording's key: opening the database took longer than the
    rest of it); an erasure by another process is seen at the next read."""
    path = keys_path(settings)
    with _readers_lock:
        keys = _readers.get(path)
        if keys is None:
            if len(_readers) >= 4:  # boxes of a test run
                _readers.pop(next(iter(_readers))).close()
            keys = _readers[path] = DataKeys(path)
        return keys.get(name)


_opened: dict[bytes, bytes] = {}
"""Data keys unsealed lately, by their sealed form (a playback asks for its key with every
range request); only ever used after ``keys.db`` still holds the sealed form and the box is
unlocked, so erasing a key or locking the box is seen at once."""


def data_key(settings: Settings, recording_id: int) -> bytes:
    """The recording's data key; BoxLocked while the box is locked."""
    private = unlock.current(settings.data_dir)
    if private is None:
        _opened.clear()
        raise BoxLocked()
    sealed = sealed_key(settings, key_name(recording_id))
    if sealed is None:
        raise vault.VaultError(f"recording {recording_id}: its data key is gone (erased)")
    return _unsealed(sealed, private)


def _unsealed(sealed: bytes, private) -> bytes:
    key = _opened.get(sealed)
    if key is None:
        if len(_opened) >= 64:
            _opened.clear()
        key = _opened[sealed] = vault.open_key(sealed, private)
    return key


def database_key(settings: Settings, name: str) -> bytes | None:
    """The key of the box's encrypted database ``name`` (``main``, ``audit``,
    ``voiceprints``), made and kept sealed the first time; None while encryption is off,
    BoxLocked while locked."""
    if not enabled(settings):
        return None
    private = unlock.current(settings.data_dir)
    if private is None:
        raise BoxLocked()
    sealed = sealed_key(settings, f"database:{name}")
    if sealed is None:
        with database_lock(settings, name):  # two processes may be first at once
            sealed = sealed_key(settings, f"database:{name}")
            if sealed is None:
                return _new_database_key(settings, name)
    return _unsealed(sealed, private)


@contextlib.contextmanager
def database_lock(settings: Settings, name: str) -> Iterator[None]:
    """Held while a database's key is made or the database encrypted, across processes."""
    import fcntl

    with open(settings.data_dir / f".{name}.keylock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _new_database_key(settings: Settings, name: str) -> bytes:
    key = vault.new_data_key()
    keyring = vault.Keyring.load(keyring_path(settings))
    with DataKeys(keys_path(settings)) as keys:
        keys.erase(f"database:{name}")  # an interrupted sealing's: its copy was never used
        keys.put(f"database:{name}", vault.seal_key(key, keyring.public_key))
    return key


_looked_at: dict[Path, tuple[int, int]] = {}
_looked_at_lock = threading.Lock()


def in_the_clear(path: Path) -> bool:
    """Whether ``path`` is an SQLite database file in the clear (an encrypted one begins
    with random bytes, not SQLite's header).

    The file is read through a descriptor kept open for as long as the path names the same
    file: closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's included, so opening and closing a database this process has connections to
    would let another process write under them.  (A file replaced by its encrypted copy is
    let go of: only stale handles had it open.)"""
    path = Path(path)
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return False
    with _looked_at_lock:
        kept = _looked_at.get(path)
        if kept is None or kept[0] != inode:
            if kept is not None:
                os.close(_looked_at.pop(path)[1])
            if len(_looked_at) >= 64:  # a test run's many boxes: let go of files gone
                for other, (number, old) in list(_looked_at.items()):
                    try:
                        same = os.stat(other).st_ino == number
                    except FileNotFoundError:
                        same = False
                    if not same:
                        os.close(old)
                        del _looked_at[other]
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                _looked_at.pop(path, None)
                return False
            kept = _looked_at[path] = (os.fstat(fd).st_ino, fd)
        return os.pread(kept[1], 16, 0) == b"SQLite format 3\x00"


def seal_database(settings: Settings, path: Path, name: str, before=lambda: None) -> bool:
    """Encrypt a database the box kept in the clear before its key existed, under a new key
    (no secret needed: it is sealed to the box's public key); whether it did.  Crash-safe:
    the write-ahead log is folded into the file first, the encrypted copy is written beside
    it with its key kept before, and replaces it in one rename, so a power cut leaves the
    database in the clear (sealed at the next try) or encrypted, never neither.  ``before``
    runs first, under the same lock."""
    if not (enabled(settings) and in_the_clear(path)):
        return False
    with database_lock(settings, name):
        if not in_the_clear(path):  # another process did it meanwhile
            return False
        before()
        _seal_database(settings, path, name)
    return True


def _seal_database(settings: Settings, path: Path, name: str, key: bytes | None = None
                   ) -> None:
    """Encrypt ``path`` under ``key``, or under a new key kept as ``database:<name>``."""
    import sqlcipher3

    from device.store._base import raw_key

    plain = sqlcipher3.connect(str(path), timeout=30)  # no key: SQLite's own format
    try:
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        copy = path.with_name(path.name + ".sealing")
        copy.unlink(missing_ok=True)
        key = key or _new_database_key(settings, name)
        plain.execute(f"ATTACH DATABASE ? AS sealed KEY {raw_key(key)}", [str(copy)])
        plain.execute("SELECT sqlcipher_export('sealed')")
        plain.execute("DETACH DATABASE sealed")
    finally:
        plain.close()
    with open(copy, "rb+") as f:
        os.fsync(f.fileno())
    for log in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        log.unlink(missing_ok=True)  # emptied by the checkpoint; the copy has every page
    os.replace(copy, path)
    audio.fsync_dir(path.parent)


def stored_audio(settings: Settings, recording) -> Path | audio.SealedAudio:
    """What the decoders read for a stored recording: its file, or its sealed file with the
    key (BoxLocked while locked)."""
    path = settings.audio_dir / recording.audio_file
    if is_sealed(recording.audio_file):
        return audio.SealedAudio(path, data_key(settings, recording.id))
    return path


def erase(settings: Settings, recording_id: int) -> None:
    """Destroy the recording's data key: every copy of its audio becomes unreadable."""
    if keys_path(settings).exists():
        with DataKeys(keys_path(settings)) as keys:
            keys.erase(key_name(recording_id))


def seal_existing(settings: Settings, store, on_sealed=lambda recording_id: None
                  ) -> list[int]:
    """Seal the audio a box stored in the clear before encryption was on (no secret needed:
    the keys are sealed to the box's public key), one recording at a time, then erase the
    plaintext.  Crash-safe in any order of events: the sealed copy is complete and its key
    kept before the recording points to it, and the plain file goes only after; a rerun
    (every worker start) finishes what a power cut interrupted.  The voiceprints' database
    is encrypted first, if it was kept in the clear.  The recordings sealed."""
    if not enabled(settings):
        return []
    seal_database(settings, settings.voiceprints_path, "voiceprints")
    sealed = []
    for recording_id, name in store.db.execute(
            "SELECT id, audio_file FROM recordings WHERE audio_file IS NOT NULL "
            "AND audio_erased IS NULL ORDER BY id").fetchall():
        plain = settings.audio_dir / name
        if is_sealed(name):
            left = settings.audio_dir / name.removesuffix(SUFFIX)
            if left.is_file():  # sealed before a power cut, the plaintext not yet erased
                left.unlink()
                audio.fsync_dir(settings.audio_dir)
            continue
        if not plain.is_file():
            continue  # missing: the page says so; nothing to seal
        target = plain.with_name(plain.name + SUFFIX)
        erase(settings, recording_id)  # an interrupted try's key: its copy is made again
        store_sealed(settings, recording_id, plain, target)  # key kept, then the file
        store.update_recording(recording_id, audio_file=target.name)
        plain.unlink()
        audio.fsync_dir(settings.audio_dir)
        sealed.append(recording_id)
        on_sealed(recording_id)
    return sealed


def init(settings: Settings, passphrase: str) -> str:
    """Make the box key (encryption on from now on); returns the recovery key, to show once.
    Refuses when a keyring exists."""
    path = keyring_path(settings)
    if path.exists():
        raise vault.VaultError(f"{path} exists: this box already has its key")
    keyring, recovery = vault.Keyring.create(passphrase)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keyring.save(path)
    return recovery


def unlock_box(settings: Settings, passphrase: str | None = None,
               recovery: str | None = None, key_file: Path | None = None) -> None:
    """Unwrap the box key into memory (tmpfs), for the worker and the web UI;
    WrongSecretError for a wrong passphrase, recovery key or key file."""
    keyring = vault.Keyring.load(keyring_path(settings))
    if key_file is not None:
        try:
            content = Path(key_file).read_bytes()[:4096]
        except OSError as exc:
            raise vault.VaultError(f"{key_file}: {exc.strerror}") from exc
        private = keyring.unlock_with_key_file(content)
    elif recovery is not None:
        private = keyring.unlock_with_recovery(recovery)
    else:
        private = keyring.unlock(passphrase or "")
    unlock.publish(settings.data_dir, private)


def make_key_file(settings: Settings, path: Path) -> None:
    """Write a new key file (0600) that unlocks the box, for removable media; the one made
    before stops working.  The box must be unlocked; refuses to overwrite a file."""
    private = unlock.current(settings.data_dir)
    if private is None:
        raise BoxLocked()
    keyring, content = vault.Keyring.load(keyring_path(settings)).with_key_file(private)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise vault.VaultError(f"{path} exists already: choose a new file") from None
    with os.fdopen(fd, "wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())
    keyring.save(keyring_path(settings))  # the key file is complete before it counts


def recover(settings: Settings, recovery: str, new_passphrase: str) -> None:
    """Unlock with the recovery key and replace the passphrase (re-wrapping the key only)."""
    path = keyring_path(settings)
    keyring = vault.Keyring.load(path)
    private = keyring.unlock_with_recovery(recovery)
    keyring.with_passphrase(private, new_passphrase).save(path)
    unlock.publish(settings.data_dir, private)


def change_passphrase(settings: Settings, current: str, new: str) -> None:
    """Wrap the box key with a new passphrase; the file is replaced atomically, so a power
    cut leaves the old or the new one working."""
    path = keyring_path(settings)
    keyring = vault.Keyring.load(path)
    keyring.with_passphrase(keyring.unlock(current), new).save(path)


def lock_box(settings: Settings) -> None:
    unlock.lock(settings.data_dir)
    _opened.clear()

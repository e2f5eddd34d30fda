"""The unlocked box key, shared by the box's processes in memory only.

The web UI (the first admin sign-in after a start) or the console unwraps the box's private
key (``device.vault.Keyring``); the worker needs it to transcribe and the web UI to play and
export, while the recorder never does (it seals to the public key).  The unwrapped key is
kept in a file on a RAM-backed file system (tmpfs: ``$TINGJI_RUNTIME_DIR``, else
``$XDG_RUNTIME_DIR``, else ``/dev/shm``), mode 0600 in a 0700 folder named for the data
directory: never on the data disk, gone at power-off, so the box starts locked.  ``lock()``
overwrites and removes it.  (A box with swap could page tmpfs out: the appliance's images
run without swap.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from device.vault import VaultError

MEMORY_FILE_SYSTEMS = {"tmpfs", "ramfs"}


def file_system(path: Path) -> str | None:
    """The type of the file system ``path`` is on (from /proc/self/mounts)."""
    path = Path(path).resolve()
    best, kind = "", None
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) \
                and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


_found: dict[tuple[str | None, ...], Path] = {}


def runtime_dir() -> Path:
    """The first RAM-backed folder of ``$TINGJI_RUNTIME_DIR``, ``$XDG_RUNTIME_DIR`` and
    ``/dev/shm``; VaultError when there is none (the key must not reach a disk).  Found once
    per process and environment: every playback asks for the key."""
    candidates = (os.environ.get("TINGJI_RUNTIME_DIR"), os.environ.get("XDG_RUNTIME_DIR"),
                  "/dev/shm")
    found = _found.get(candidates)
    if found is not None and found.is_dir():
        return found
    for candidate in candidates:
        if candidate and Path(candidate).is_dir() and \
                file_system(Path(candidate)) in MEMORY_FILE_SYSTEMS:
            _found[candidates] = Path(candidate)
            return Path(candidate)
    raise VaultError("no memory-backed folder (tmpfs) to keep the unlocked key in: mount "
                     "one and name it in TINGJI_RUNTIME_DIR")


_boxes: dict[Path, str] = {}


def key_file(data_dir: Path, name: str = "box.key") -> Path:
    box = _boxes.get(data_dir)
    if box is None:
        box = _boxes[data_dir] = hashlib.sha256(
            str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    return runtime_dir() / f"tingji-{os.getuid()}" / box / name


def keep_secret(data_dir: Path, name: str, raw: bytes) -> None:
    """Share ``raw`` with the box's other processes under ``name``, in memory only."""
    path = key_file(data_dir, name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent.parent, 0o700)
    temporary = path.with_name(name + ".part")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(raw)
    os.replace(temporary, path)


def secret(data_dir: Path, name: str) -> bytes | None:
    """What ``keep_secret`` shared under ``name``, or None (never shared, or a restart)."""
    try:
        return key_file(data_dir, name).read_bytes()
    except (FileNotFoundError, VaultError):
        return None


def forget(data_dir: Path, name: str) -> None:
    """Overwrite and remove the secret shared under ``name``."""
    try:
        path = key_file(data_dir, name)
        with open(path, "r+b") as f:
            f.write(b"\0" * os.fstat(f.fileno()).st_size)
            f.flush()
        path.unlink()
    except (FileNotFoundError, VaultError):
        pass


def publish(data_dir: Path, private: X25519PrivateKey) -> None:
    """Make the unlocked key available to the box's other processes."""
    keep_secret(data_dir, "box.key", private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption()))


_current: dict[Path, tuple[tuple[int, int], X25519PrivateKey]] = {}


def current(data_dir: Path) -> X25519PrivateKey | None:
    """The unlocked key, or None while the box is locked.  Asked for by every request: the
    key read once is kept for as long as its file is the same one (a lock removes it, an
    unlock writes a new one)."""
    try:
        path = key_file(data_dir)
        found = os.stat(path)
    except (FileNotFoundError, VaultError):
        _current.pop(data_dir, None)
        return None
    kept = _current.get(data_dir)
    if kept is not None and kept[0] == (found.st_ino, found.st_mtime_ns):
        return kept[1]
    raw = secret(data_dir, "box.key")
    if raw is None or len(raw) != 32:
        return None
    private = X25519PrivateKey.from_private_bytes(raw)
    _current[data_dir] = ((found.st_ino, found.st_mtime_ns), private)
    return private


def lock(data_dir: Path) -> None:
    """Forget the unlocked key: overwritten, then removed."""
    forget(data_dir, "box.key")

"""The box's keys and the sealed-file format: what encrypted storage is built on.

**The box key.**  An X25519 key pair made at first start.  Its public half is stored in the
clear, so the box records while *locked*: every new recording gets a random 256-bit data key,
sealed to the public key (an ephemeral X25519 key, HKDF-SHA256, AES-256-GCM) — sealing needs
no secret.  The private half is stored only wrapped (AES-256-GCM) by a key derived with
Argon2id from the unlock passphrase, and again by one derived from the recovery key shown
once at first start.  Unlocking unwraps it into memory; nothing else of it reaches disk.
Changing the passphrase re-wraps the private key only: no data is encrypted again.  The
keyring file is replaced atomically (written aside, fsync'd, renamed), so a power cut in a
passphrase change leaves the old or the new one, each opening the same private key.

**Sealed files.**  A data key encrypts a file in chunks of 64 KiB of plaintext, each
AES-256-GCM with its own nonce (a random prefix and the chunk's number) and the header, the
chunk's number and whether it is the last in its associated data: a chunk cannot be moved,
swapped, dropped or cut off unnoticed, and any byte range is read by decrypting only the
chunks it touches (HTTP range requests on audio).  A damaged chunk raises ``SealedFileError``
naming the file and the chunk.

**Crypto-erase.**  A recording's data key is kept sealed apart from its ciphertext; deleting
the sealed key makes every copy of the ciphertext (backups, the previous update slot)
unreadable with anything left on the box.

    >>> keyring, recovery = Keyring.create("correct horse battery", _fast=True)
    >>> data_key = new_data_key()
    >>> sealed = seal_key(data_key, keyring.public_key)   # while locked
    >>> open_key(sealed, keyring.unlock("correct horse battery")) == data_key
    True
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device.errors import N_, TingjiError

MAGIC = b"TJSEAL1\n"
CHUNK = 64 * 1024
"""Plaintext bytes per chunk (the last may be shorter)."""
TAG = 16
KEYRING_VERSION = 1
# Argon2id as RFC 9106's second recommended option (64 MiB, 3 passes), 4 lanes.
ARGON2 = {"time_cost": 3, "memory_cost": 64 * 1024, "parallelism": 4}
_FAST = {"time_cost": 1, "memory_cost": 8 * 1024, "parallelism": 1}  # doctests only
RECOVERY_GROUPS = 8
KEY_FILE_MAGIC = "tingji-key-file-1"


class VaultError(TingjiError):
    pass


class WrongSecretError(VaultError):
    """A passphrase or recovery key that does not open the keyring."""


class SealedFileError(VaultError):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _kek(secret: str, salt: bytes, cost: dict) -> bytes:
    """A key-encryption key from a passphrase or recovery key (Argon2id)."""
    return hash_secret_raw(secret.encode("utf-8"), salt, hash_len=32, type=Type.ID, **cost)


def _wrap(key: bytes, secret: str, cost: dict, label: bytes) -> dict:
    salt, nonce = os.urandom(16), os.urandom(12)
    return {"salt": _b64(salt), "nonce": _b64(nonce), "cost": cost,
            "wrapped": _b64(AESGCM(_kek(secret, salt, cost)).encrypt(nonce, key, label))}


def _unwrap(entry: dict, secret: str, label: bytes) -> bytes:
    kek = _kek(secret, _unb64(entry["salt"]), entry["cost"])
    try:
        return AESGCM(kek).decrypt(_unb64(entry["nonce"]), _unb64(entry["wrapped"]), label)
    except InvalidTag:
        raise WrongSecretError(N_("wrong passphrase or recovery key")) from None


def new_recovery_key() -> str:
    """A recovery key to write down: 8 groups of 5 characters from an alphabet without
    look-alikes (0/O, 1/I/L), about 200 bits."""
    alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5))
                    for _ in range(RECOVERY_GROUPS))


def _normal_recovery(text: str) -> str:
    return "".join(c for c in text.upper() if c.isalnum())


@dataclass(frozen=True)
class Keyring:
    """The box key: its public half, and its private half wrapped by the passphrase, by the
    recovery key and, if the admin made one, by a key file kept on removable media."""

    public_key: bytes
    passphrase: dict
    recovery: dict
    key_file: dict | None = None

    @classmethod
    def create(cls, passphrase: str, _fast: bool = False) -> tuple[Keyring, str]:
        """A new box key wrapped by ``passphrase``; returns it and the recovery key, which is
        shown once and never stored."""
        if len(passphrase) < 8:
            raise VaultError(N_("the unlock passphrase needs at least 8 characters"))
        private = X25519PrivateKey.generate()
        raw = private.private_bytes(serialization.Encoding.Raw,
                                    serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        cost = _FAST if _fast else ARGON2
        recovery = new_recovery_key()
        return cls(public, _wrap(raw, passphrase, cost, public),
                   _wrap(raw, _normal_recovery(recovery), cost, public)), recovery

    def unlock(self, passphrase: str) -> X25519PrivateKey:
        """The private key (in memory only); WrongSecretError for a wrong passphrase."""
        return self._private(_unwrap(self.passphrase, passphrase, self.public_key))

    def unlock_with_recovery(self, recovery: str) -> X25519PrivateKey:
        return self._private(_unwrap(self.recovery, _normal_recovery(recovery),
                                     self.public_key))

    def with_passphrase(self, private: X25519PrivateKey, passphrase: str) -> Keyring:
        """The same key wrapped by a new passphrase (after unlocking with the old one or the
        recovery key): nothing else changes."""
        if len(passphrase) < 8:
            raise VaultError(N_("the unlock passphrase needs at least 8 characters"))
        raw = private.private_bytes(serialization.Encoding.Raw,
                                    serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        return Keyring(self.public_key, _wrap(raw, passphrase, self.passphrase["cost"],
                                              self.public_key), self.recovery, self.key_file)

    def with_key_file(self, private: X25519PrivateKey) -> tuple[Keyring, bytes]:
        """The same key wrapped by a new key file too (replacing an earlier one); returns
        it and the key file's content, 256 random bits (no derivation cost needed)."""
        raw = private.private_bytes(serialization.Encoding.Raw,
                                    serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        secret = base64.b64encode(os.urandom(32)).decode("ascii")
        content = f"{KEY_FILE_MAGIC}\n{_b64(self.public_key)}\n{secret}\n".encode("ascii")
        return Keyring(self.public_key, self.passphrase, self.recovery,
                       _wrap(raw, secret, _FAST, self.public_key)), content

    def unlock_with_key_file(self, content: bytes) -> X25519PrivateKey:
        """The private key from a key file's content; WrongSecretError for another box's,
        an outdated or a damaged one."""
        lines = content.decode("ascii", "replace").split()
        if len(lines) != 3 or lines[0] != KEY_FILE_MAGIC:
            raise WrongSecretError(N_("this is not a tingji key file"))
        if self.key_file is None or lines[1] != _b64(self.public_key):
            raise WrongSecretError(N_("this key file is not this box's"))
        return self._private(_unwrap(self.key_file, lines[2], self.public_key))

    def _private(self, raw: bytes) -> X25519PrivateKey:
        private = X25519PrivateKey.from_private_bytes(raw)
        public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        if public != self.public_key:  # a keyring pieced together from two boxes
            raise VaultError(N_("the keyring's private key does not match its public key"))
        return private

    def save(self, path: Path) -> None:
        """Replace the keyring file atomically (0600)."""
        from device.audio import durable_file

        data = {"version": KEYRING_VERSION, "public_key": _b64(self.public_key),
                "passphrase": self.passphrase, "recovery": self.recovery,
                **({"key_file": self.key_file} if self.key_file else {})}
        with durable_file(path, mode=0o600) as out:
            out.write(json.dumps(data, indent=1).encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != KEYRING_VERSION:
                raise VaultError(f"{path}: keyring version {data.get('version')!r}, this "
                                 f"version of tingji reads {KEYRING_VERSION}")
            return cls(_unb64(data["public_key"]), data["passphrase"], data["recovery"],
                       data.get("key_file"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VaultError(f"{path}: the keyring cannot be read ({exc})") from exc


# -- data keys -------------------------------------------------------------------------------

SEALED_KEY = 32 + 12 + 32 + TAG  # ephemeral public key, nonce, key, tag


def new_data_key() -> bytes:
    return os.urandom(32)


def _shared_key(shared: bytes, ephemeral: bytes, public: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None,
                info=b"tingji data key" + ephemeral + public).derive(shared)


def seal_key(data_key: bytes, public_key: bytes) -> bytes:
    """A data key sealed to the box's public key: no secret needed (the box is locked)."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)
    wrap = _shared_key(ephemeral.exchange(X25519PublicKey.from_public_bytes(public_key)),
                       ephemeral_public, public_key)
    nonce = os.urandom(12)
    return ephemeral_public + nonce + AESGCM(wrap).encrypt(nonce, data_key, ephemeral_public)


def open_key(sealed: bytes, private: X25519PrivateKey) -> bytes:
    """The data key of ``seal_key``; VaultError if it was sealed to another box or damaged."""
    if len(sealed) != SEALED_KEY:
        raise VaultError(N_("a sealed data key of the wrong length"))
    ephemeral_public, nonce, body = sealed[:32], sealed[32:44], sealed[44:]
    public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
    wrap = _shared_key(private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public)),
                       ephemeral_public, public)
    try:
        return AESGCM(wrap).decrypt(nonce, body, ephemeral_public)
    except InvalidTag:
        raise VaultError(N_("a sealed data key that this box's key does not open")) from None


# -- sealed files ------------------------------------------------------------------------------

_HEADER = struct.Struct(">8sI8s")  # magic, chunk size, nonce prefix
HEADER = _HEADER.size


def chunk_nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _chunk_aad(header: bytes, index: int, last: bool) -> bytes:
    return header + struct.pack(">I?", index, last)


class SealedWriter:
    """Writes a sealed file chunk by chunk to ``out``: plaintext is buffered up to a chunk,
    never written.  ``close()`` writes the last chunk (the only one marked last); a file
    cut before it reads as damaged at its end, everything before stays readable."""

    def __init__(self, out: BinaryIO, data_key: bytes):
        self._out = out
        self._aead = AESGCM(data_key)
        self._prefix = os.urandom(8)
        self._header = _HEADER.pack(MAGIC, CHUNK, self._prefix)
        self._buffer = bytearray()
        self._index = 0
        out.write(self._header)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep at least one byte for the last chunk
            self._emit(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]
        return len(data)

    def _emit(self, plain: bytes, last: bool) -> None:
        nonce = chunk_nonce(self._prefix, self._index)
        self._out.write(self._aead.encrypt(nonce, plain,
                                           _chunk_aad(self._header, self._index, last)))
        self._index += 1

    def close(self) -> None:
        self._emit(bytes(self._buffer), last=True)
        self._buffer.clear()


def sealed_size(plain_size: int) -> int:
    chunks = max(1, -(-plain_size // CHUNK))
    return HEADER + plain_size + chunks * TAG


class SealedReader:
    """Random access to a sealed file's plaintext: ``size``, ``read_range(start, end)``, and
    file-like ``read``/``seek``/``tell`` for decoders that take a file object."""

    def __init__(self, path: Path, data_key: bytes):
        self.path = Path(path)
        self._file = open(path, "rb")
        self._aead = AESGCM(data_key)
        header = self._file.read(HEADER)
        if len(header) != HEADER or header[:8] != MAGIC:
            self._file.close()
            raise SealedFileError(f"{self.path.name}: not a sealed file")
        _, self._chunk, self._prefix = _HEADER.unpack(header)
        self._header = header
        stored = os.fstat(self._file.fileno()).st_size - HEADER
        chunks = max(1, -(-stored // (self._chunk + TAG)))
        self.size = stored - chunks * TAG
        self._chunks = chunks
        if self.size < 0:
            self._file.close()
            raise SealedFileError(f"{self.path.name}: cut short inside its first chunk")
        self._position = 0
        self._last: tuple[int, bytes] | None = None

    def _chunk_plain(self, index: int) -> bytes:
        if self._last is not None and self._last[0] == index:  # decoders read in small steps
            return self._last[1]
        plain = self._decrypt(index)
        self._last = (index, plain)
        return plain

    def _decrypt(self, index: int) -> bytes:
        self._file.seek(HEADER + index * (self._chunk + TAG))
        body = self._file.read(self._chunk + TAG)
        last = index == self._chunks - 1
        try:
            return self._aead.decrypt(chunk_nonce(self._prefix, index), body,
                                      _chunk_aad(self._header, index, last))
        except InvalidTag:
            raise SealedFileError(
                f"{self.path.name}: chunk {index + 1} of {self._chunks} is damaged or the "
                "file was cut short; the rest of the recording is not affected") from None

    def read_range(self, start: int, end: int) -> bytes:
        """Plaintext bytes [start, end), decrypting only the chunks they lie in."""
        start, end = max(0, start), min(end, self.size)
        if start >= end:
            return b""
        first, last = start // self._chunk, (end - 1) // self._chunk
        plain = b"".join(self._chunk_plain(i) for i in range(first, last + 1))
        offset = first * self._chunk
        return plain[start - offset : end - offset]

    def chunks(self) -> Iterator[bytes]:
        for index in range(self._chunks):
            yield self._chunk_plain(index)

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else self._position + size
        data = self.read_range(self._position, end)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SealedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


"""The tamper-evident audit trail: who read, changed, exported or deleted what, and when.

Every entry is linked to the one before by a hash (SHA-256 over the previous entry's hash and
the entry's canonical JSON), and the chain's head is signed with the box's own Ed25519 key
every ``HEAD_EVERY`` entries, every ``HEAD_MINUTES`` minutes and at shutdown.  ``verify``
walks the chain and the signed heads and names the first entry that was changed, removed,
inserted or reordered, and a tail cut off after a signed head.

The key lives in ``data/keys/audit-ed25519.pem`` (mode 0600); its public half is shown on the
System page, so an export can be checked elsewhere (``verify_export``).

    python -m device audit verify
    python -m device audit export [--since 2026-12-01] [--out FILE]
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from device.audio import durable_file, fsync_dir
from device.records import AuditEntry, User
from device.settings import Settings
from device.store import Store
from device.store.audit import GENESIS, chain_hash

log = logging.getLogger(__name__)
HEAD_EVERY = 100
HEAD_MINUTES = 10
KEY_FILE = "audit-ed25519.pem"


def key_path(settings: Settings) -> Path:
    return settings.data_dir / "keys" / KEY_FILE


def load_key(settings: Settings) -> Ed25519PrivateKey:
    """The box's audit key, made on first use (readable by its owner only)."""
    path = key_path(settings)
    if not path.exists():
        _make_key(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


def _make_key(path: Path) -> None:
    """A new key at ``path``, unless another process made one first: the web server, the
    worker and the recorder start together on a new box, and all must sign with the same
    key.  Each writes its own file, and the first linked into place is the box's."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    mine = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        with durable_file(mine, mode=0o600) as out:
            out.write(pem)
        os.link(mine, path)
        fsync_dir(path.parent)
    except FileExistsError:
        pass  # another's is the box's
    finally:
        mine.unlink(missing_ok=True)


def public_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw,
                               serialization.PublicFormat.Raw).hex()


def head_message(entry_id: int, digest: str) -> bytes:
    return f"tingji-audit-head:{entry_id}:{digest}".encode()


class Auditor:
    """Appends entries and signs the chain's head now and then (thread-safe)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.key = load_key(settings)
        self._lock = threading.Lock()
        self._last_signed = time.monotonic()

    def record(self, store: Store, action: str, *, user: User | None = None,
               address: str | None = None, object: str | None = None,
               details: dict | None = None, sign: bool = True) -> AuditEntry:
        """Append an entry.  A trail that cannot be written (a damaged database page) does
        not stop the box: the damaged table is set aside, the entries still readable are
        kept, and a new chain segment starts with an entry that says where the break was."""
        fields = {"user_id": user.id if user else None,
                  "username": user.username if user else None, "address": address,
                  "object": object}
        try:
            entry = store.append_audit(action, **fields, details=details)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise  # busy, disk full …: not a broken chain
            kept, damaged = store.set_aside_damaged_audit()
            log.error("audit trail damaged (%s): entries 1-%d kept, the damaged table kept as "
                      "%s, a new chain segment starts", exc, kept, damaged)
            store.append_audit("audit_chain_restarted", restart=True, details={
                "chain_restarted": f"{type(exc).__name__}: {exc}",
                "after_entry": kept, "damaged_table": damaged})
            entry = store.append_audit(action, **fields, details=details)
        due = self.head_due(entry)
        if sign and due:
            self.sign_head(store, due)
        return entry

    def head_due(self, entry: AuditEntry) -> str | None:
        """Why the chain's head is to be signed after this entry, or None (``record`` signs
        it unless told not to; the caller then signs it)."""
        if entry.id % HEAD_EVERY == 0:
            return f"{HEAD_EVERY} entries"
        if time.monotonic() - self._last_signed >= HEAD_MINUTES * 60:
            return f"{HEAD_MINUTES} minutes"
        return None

    def sign_head(self, store: Store, reason: str) -> None:
        with self._lock:
            last = store.last_audit_entry()
            self._last_signed = time.monotonic()
            if last is None:
                return
            signature = self.key.sign(head_message(last.id, last.hash)).hex()
            store.add_audit_head(last.id, last.hash, signature, reason)


def on_console(settings: Settings, store: Store, action: str, object: str | None = None,
               details: dict | None = None) -> None:
    """An entry for something done with ``python -m device`` on the box's console."""
    Auditor(settings).record(store, action, object=object,
                             details={"where": "console", **(details or {})})


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    heads: int
    problem: str | None = None
    """The first thing wrong, naming the entry."""
    bad_entry: int | None = None
    restarts: tuple[int, ...] = ()
    """Entries where the appliance started a new chain segment after a break."""


def verify(store: Store, public: Ed25519PublicKey) -> Verification:
    """Walk the whole chain and every signed head."""
    heads = store.audit_heads()
    expected_id, prev, count, restarts = 1, GENESIS, 0, []
    hashes_at_heads = {h.entry_id: None for h in heads}

    def bad(entry_id: int, problem: str) -> Verification:
        return Verification(False, count, len(heads), problem, entry_id, tuple(restarts))

    rows = store.audit_rows()
    while True:
        try:
            entry = next(rows)
        except StopIteration:
            break
        except sqlite3.DatabaseError as exc:
            return bad(expected_id, f"the audit trail's database is damaged from entry "
                                    f"{expected_id} on ({exc}): entries 1–{expected_id - 1} "
                                    "verified; the box keeps appending after the damage")
        if entry.id != expected_id:
            if entry.id > expected_id:
                return bad(expected_id, f"entry {expected_id} is missing (the next entry is "
                                        f"{entry.id}): entries were deleted")
            return bad(entry.id, f"entry {entry.id} is out of order")
        if entry.prev != prev:
            if entry.prev == GENESIS and "chain_restarted" in entry.details:
                restarts.append(entry.id)
            else:
                return bad(entry.id, f"entry {entry.id} does not follow entry {entry.id - 1}: "
                                     "an entry was inserted, removed or reordered here")
        if chain_hash(entry.prev, asdict(entry)) != entry.hash:
            return bad(entry.id, f"entry {entry.id} was changed after it was written")
        if entry.id in hashes_at_heads:
            hashes_at_heads[entry.id] = entry.hash
        prev, expected_id, count = entry.hash, entry.id + 1, count + 1
    for head in heads:
        try:
            public.verify(bytes.fromhex(head.signature), head_message(head.entry_id, head.hash))
        except (InvalidSignature, ValueError):
            return bad(head.entry_id, f"the signed head at entry {head.entry_id} has a bad "
                                      "signature")
        if head.entry_id > count:
            return bad(count + 1, f"the trail ends at entry {count}, but a head signed "
                                  f"{head.at[:19]} covers entry {head.entry_id}: entries "
                                  f"{count + 1}–{head.entry_id} were cut off")
        if hashes_at_heads[head.entry_id] != head.hash:
            return bad(head.entry_id, f"entry {head.entry_id} differs from the head signed at "
                                      f"{head.at[:19]}")
    return Verification(True, count, len(heads), restarts=tuple(restarts))


def export_lines(store: Store, key: Ed25519PrivateKey, since: str = "") -> Iterator[str]:
    """Signed JSONL: one line per entry (with its chain hash), then a line signing the
    export: the last entry's id and hash, and a signature over every line before it."""
    import hashlib

    digest = hashlib.sha256()
    last = None
    for entry in store.audit_entries(since=since) if since else store.audit_rows():
        line = json.dumps(asdict(entry), ensure_ascii=False, sort_keys=True)
        digest.update(line.encode() + b"\n")
        last = entry
        yield line
    body = digest.hexdigest()
    yield json.dumps({"export": {
        "since": since or None, "last_entry": last.id if last else None,
        "last_hash": last.hash if last else None, "lines_sha256": body,
        "public_key": public_hex(key),
        "signature": key.sign(f"tingji-audit-export:{body}".encode()).hex()}})


def verify_export(lines: Iterable[str], public: Ed25519PublicKey) -> int:
    """Check an export's signature and the chain links inside it; returns the entries."""
    import hashlib

    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ValueError("an empty export")
    *entries, trailer = lines
    digest = hashlib.sha256()
    prev = None
    for line in entries:
        digest.update(line.encode() + b"\n")
        entry = json.loads(line)
        if chain_hash(entry["prev"], entry) != entry["hash"]:
            raise ValueError(f"entry {entry['id']} was changed")
        if prev is not None and entry["prev"] != prev and entry["prev"] != GENESIS:
            raise ValueError(f"entry {entry['id']} does not follow the one before")
        prev = entry["hash"]
    meta = json.loads(trailer)["export"]
    if meta["lines_sha256"] != digest.hexdigest():
        raise ValueError("the export's lines are not the ones signed")
    public.verify(bytes.fromhex(meta["signature"]),
                  f"tingji-audit-export:{meta['lines_sha256']}".encode())
    return len(entries)


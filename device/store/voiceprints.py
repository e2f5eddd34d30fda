"""Remembered voices, kept apart from everything else: their own database file
(``voiceprints.db`` beside ``tingji.db``).

Voiceprints are personal (biometric) data, so they are never part of what the box hands out
or copies: exports carry speaker *names* only, update backups copy ``tingji.db`` only, and
deleting a voiceprint overwrites its rows (``secure_delete``) and empties the write-ahead
log, so the embedding is gone from the disk's files, not only from the tables.  On a box
with a key the file is encrypted (SQLCipher, under a key sealed to the box key): it opens
only while the box is unlocked (``Voiceprints.of``).

    >>> prints = Voiceprints(Path(":memory:"))
    >>> v = prints.enrol("李明", np.ones(256, np.float32), seconds=42.0, enrolled_by="ana",
    ...                  recording_id=3, recording_title="采访", speaker="说话人1", consent="")
    >>> [(p.name, p.speaker) for p in prints.all()]
    [('李明', '说话人1')]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.errors import N_, InvalidInput, NotFound
from device.records import Voiceprint, VoiceUse
from device.store._base import connect, copy_database, now
from device.text import NAME_MAX, NOTE_MAX, clean_label

DIMENSIONS = 256


class Voiceprints:
    def __init__(self, path: Path, key: bytes | None = None):
        self.db = connect(path, "secure_delete = ON", key=key)
        self.key = key
        with self.db.conn:
            self.db["voiceprints"].create(
                {"id": int, "name": str, "embedding": bytes, "seconds": float,
                 "enrolled_by": str, "enrolled_at": str, "recording_id": int,
                 "recording_title": str, "speaker": str, "consent": str},
                pk="id", not_null={"name", "embedding", "enrolled_at", "speaker"},
                if_not_exists=True)
            self.db["voiceprints"].create_index(["name"], unique=True, if_not_exists=True)
            self.db["uses"].create(
                {"id": int, "voiceprint_id": int, "recording_id": int, "speaker": str,
                 "similarity": float, "at": str},
                pk="id", foreign_keys=[("voiceprint_id", "voiceprints", "id")],
                if_not_exists=True)
            self.db["uses"].create_index(["voiceprint_id"], if_not_exists=True)

    @classmethod
    def of(cls, settings, store=None) -> Voiceprints:
        """The box's voiceprints (``settings.voiceprints_path``): encrypted once the box has
        its key (a file kept in the clear before is encrypted first), so BoxLocked while the
        box is locked.  With the ``store``, the uses of recordings deleted while the box was
        locked are forgotten now."""
        from device import encryption

        path = settings.voiceprints_path
        encryption.seal_database(settings, path, "voiceprints")
        prints = cls(path, encryption.database_key(settings, "voiceprints"))
        if store is not None:
            deleted = set(store.deleted_recording_ids())
            for recording_id in prints.recordings() & deleted:
                prints.forget_recording(recording_id)
        return prints

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Voiceprints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enrol(self, name: str, embedding: np.ndarray, *, seconds: float,
              enrolled_by: str | None, recording_id: int | None,
              recording_title: str | None, speaker: str, consent: str) -> Voiceprint:
        name = clean_name(name)
        consent = clean_label(consent or "", "a consent note", NOTE_MAX)
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if vector.size != DIMENSIONS or not np.all(np.isfinite(vector)):
            raise InvalidInput(f"a voiceprint is {DIMENSIONS} finite numbers")
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        with self.db.conn:
            if self.db.execute("SELECT 1 FROM voiceprints WHERE name = ?",
                               [name]).fetchone():
                raise InvalidInput(N_("a voice named %(name)s is already remembered: delete "
                                      "it on the Voiceprints page first, or choose another "
                                      "name"), name=name)
            row_id = self.db["voiceprints"].insert({
                "name": name, "embedding": vector.astype("<f4").tobytes(),
                "seconds": round(float(seconds), 1), "enrolled_by": enrolled_by,
                "enrolled_at": now(), "recording_id": recording_id,
                "recording_title": recording_title, "speaker": speaker,
                "consent": consent}).last_pk
        return self.get(row_id)

    def get(self, voiceprint_id: int) -> Voiceprint:
        rows = list(self.db.query("SELECT * FROM voiceprints WHERE id = ?", [voiceprint_id]))
        if not rows:
            raise NotFound(N_("no voiceprint with id %(id)s"), id=voiceprint_id)
        return Voiceprint(**rows[0])

    def all(self) -> list[Voiceprint]:
        return [Voiceprint(**row) for row in
                self.db.query("SELECT * FROM voiceprints ORDER BY name")]

    def matrix(self) -> tuple[list[Voiceprint], np.ndarray]:
        """Every voiceprint and their unit embeddings, one row each."""
        prints = self.all()
        vectors = np.stack([np.frombuffer(p.embedding, dtype="<f4") for p in prints]) \
            if prints else np.zeros((0, DIMENSIONS), np.float32)
        return prints, vectors

    def record_uses(self, recording_id: int, uses: list[tuple[int, str, float]]) -> None:
        """The voiceprints (id, speaker label, similarity) that named speakers of a
        recording; replaces what an earlier run recorded for it."""
        with self.db.conn:
            self.db.execute("DELETE FROM uses WHERE recording_id = ?", [recording_id])
            self.db["uses"].insert_all(
                [{"voiceprint_id": v, "recording_id": recording_id, "speaker": speaker,
                  "similarity": round(float(similarity), 4), "at": now()}
                 for v, speaker, similarity in uses])

    def uses(self, voiceprint_id: int) -> list[VoiceUse]:
        return [VoiceUse(**row) for row in self.db.query(
            "SELECT voiceprint_id, recording_id, speaker, similarity, at FROM uses "
            "WHERE voiceprint_id = ? ORDER BY at DESC, id DESC", [voiceprint_id])]

    def recordings(self) -> set[int]:
        """The recordings the voiceprints name: enrolled from, or used in."""
        return {row[0] for row in self.db.execute(
            "SELECT recording_id FROM uses UNION SELECT recording_id FROM voiceprints "
            "WHERE recording_id IS NOT NULL")}

    def forget_recording(self, recording_id: int) -> None:
        """A deleted recording: no longer listed where voiceprints were used."""
        with self.db.conn:
            self.db.execute("DELETE FROM uses WHERE recording_id = ?", [recording_id])
            self.db.execute("UPDATE voiceprints SET recording_id = NULL WHERE "
                            "recording_id = ?", [recording_id])

    def backup(self, path: Path) -> None:
        """Copy every voiceprint into a new database file (the admin's choice: no backup
        the box makes by itself holds them)."""
        copy_database(self.db, self.key, Path(path))  # encrypted as kept, under its key

    def delete(self, voiceprint_id: int) -> Voiceprint:
        """Remove a voiceprint from the box: its rows overwritten, the log emptied."""
        gone = self.get(voiceprint_id)
        with self.db.conn:
            self.db.execute("DELETE FROM uses WHERE voiceprint_id = ?", [voiceprint_id])
            self.db.execute("DELETE FROM voiceprints WHERE id = ?", [voiceprint_id])
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone


def clean_name(name: str) -> str:
    """A person's name for a voiceprint: a label without a trailing question mark (which
    marks a name the box suggested)."""
    name = clean_label(name or "", "a name", NAME_MAX).rstrip("?？ ")
    if not name:
        raise InvalidInput(N_("a voiceprint needs the person's name"))
    return name

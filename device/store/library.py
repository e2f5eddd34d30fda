"""Recordings, their markers and summaries, full-text search and the admin's glossary."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from device.errors import N_, InvalidInput, RecordingNotFound
from device.records import (
    Deletion,
    GlossaryEntry,
    Marker,
    Recording,
    SearchHit,
    Summary,
    User,
)
from device.said import stored
from device.store._base import Rooms, encode_fields, now, recording_of
from device.text import NAME_MAX, NOTE_MAX, TITLE_MAX, clean_label, search_form


class LibraryRooms(Rooms):
    ids: Callable[[int], int] | None
    def create_recording(self, title: str, source_name: str, status: str = "queued",
                         owner_id: int | None = None) -> Recording:
        stamp, title = now(), clean_label(title, "a title", TITLE_MAX) or "Untitled"
        source_name = clean_label(source_name, "a file name", TITLE_MAX)
        row = {"title": title, "source_name": source_name, "status": status,
               "owner_id": owner_id, "created": stamp, "updated": stamp}
        with self.transaction():
            if self.ids is not None:
                row["id"] = self.ids(self.db.execute(
                    "SELECT coalesce(max(id), 0) FROM recordings").fetchone()[0])
            row_id = self.db["recordings"].insert(row).last_pk
        return self.get_recording(row_id)

    def get_recording(self, recording_id: int) -> Recording:
        rows = list(self.db.query("SELECT * FROM recordings WHERE id = ?", [recording_id]))
        if not rows:
            raise RecordingNotFound(N_("no recording with id %(id)s"), id=recording_id)
        return recording_of(rows[0])

    def list_recordings(
        self, limit: int = 100, offset: int = 0, *, status: str | None = None,
        language: str | None = None, since: str | None = None, until: str | None = None,
        owner_id: int | None = None,
    ) -> list[Recording]:
        """Newest first; ``since``/``until`` are ISO dates (inclusive) on the creation time."""
        where, args = self._recording_filter(status, language, since, until, owner_id)
        return [recording_of(row) for row in self.db.query(
            f"SELECT * FROM recordings WHERE {where or 1} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset])]

    def count_recordings(self, *, status: str | None = None, language: str | None = None,
                         since: str | None = None, until: str | None = None,
                         owner_id: int | None = None) -> int:
        where, args = self._recording_filter(status, language, since, until, owner_id)
        return self.db.execute(f"SELECT count(*) FROM recordings WHERE {where or 1}",
                               args).fetchone()[0]

    @staticmethod
    def _recording_filter(status, language, since, until, owner_id,
                          table: str = "recordings") -> tuple[str | None, list]:
        given = [(clause.format(table), value) for clause, value in (
            ("{}.status = ?", status), ("{}.language = ?", language),
            ("{}.created >= ?", since), ("substr({}.created, 1, 10) <= ?", until),
            ("{}.owner_id = ?", owner_id),
        ) if value not in (None, "")]
        return (" AND ".join(c for c, _ in given) or None), [v for _, v in given]

    def recording_languages(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT language FROM recordings WHERE language IS NOT NULL ORDER BY 1")]

    def update_recording(self, recording_id: int, **fields: object) -> Recording:
        for key, what in (("title", "a title"), ("source_name", "a file name")):
            if key in fields:
                fields[key] = clean_label(str(fields[key]), what, TITLE_MAX)
                if not fields[key]:
                    raise InvalidInput(f"{what} cannot be empty")
        with self.transaction():
            if "error" in fields:
                fields["error"] = stored(fields["error"])
            self.db["recordings"].update(recording_id,
                                         {**encode_fields(fields), "updated": now()})
        return self.get_recording(recording_id)

    def delete_recording(self, recording_id: int, user: User | None = None) -> Recording:
        """Remove a recording and everything about it, keeping who deleted what and when
        (``deletions``); returns it as it was, so the caller removes its audio.  Refused
        while it is being recorded or a job works on it.  Its rows are overwritten as they
        go (``secure_delete``), and the search index is merged so that no page keeps its
        words."""
        with self.transaction():
            recording = self.get_recording(recording_id)
            if recording.status == "recording":
                raise InvalidInput(N_("it is being recorded: stop the recording first"))
            if self.db.execute("SELECT 1 FROM jobs WHERE recording_id = ? AND status = "
                               "'running'", [recording_id]).fetchone():
                raise InvalidInput(N_("a job is working on it: wait for it or cancel it first"))
            self._delete_transcript(recording_id)
            for table in ("markers", "summaries", "revisions", "jobs", "summary_notes",
                          "summary_ahead"):
                self.db.execute(f"DELETE FROM {table} WHERE recording_id = ?", [recording_id])
            self.db.execute("DELETE FROM recordings WHERE id = ?", [recording_id])
            self.db["deletions"].insert({
                "recording_id": recording_id, "title": recording.title,
                "owner_id": recording.owner_id, "user_id": user.id if user else None,
                "username": user.username if user else None, "created": now()})
        with self.transaction():  # its words leave the search index's pages too
            self.db.execute("INSERT INTO segments_fts (segments_fts) VALUES ('optimize')")
        return recording

    def deletions(self, limit: int = 100) -> list[Deletion]:
        """Newest first."""
        return [Deletion(**row) for row in self.db.query(
            "SELECT * FROM deletions ORDER BY id DESC LIMIT ?", [limit])]

    def deleted_recording_ids(self) -> list[int]:
        return [row[0] for row in self.db.execute("SELECT recording_id FROM deletions")]

    def add_marker(self, recording_id: int, t: float, note: str = "") -> Marker:
        note = clean_label(note, "a marker's note", NOTE_MAX)
        with self.transaction():
            marker_id = self.db["markers"].insert(
                {"recording_id": recording_id, "t": t, "note": note, "created": now()}
            ).last_pk
        return Marker(marker_id, recording_id, t, note)

    def speech_spans(self, recording_ids: Sequence[int]
                     ) -> dict[int, list[tuple[float, float, str | None]]]:
        """(start, end, speaker) of every segment of these recordings, in time order: what
        the library draws a small strip of."""
        if not recording_ids:
            return {}
        spans: dict[int, list[tuple[float, float, str | None]]] = {i: [] for i in recording_ids}
        marks = ",".join("?" * len(recording_ids))
        for row in self.db.execute(
                f"SELECT recording_id, start, end, speaker FROM segments WHERE recording_id IN "
                f"({marks}) ORDER BY recording_id, start", list(recording_ids)):
            spans[row[0]].append((row[1], row[2], row[3]))
        return spans

    def markers(self, recording_id: int) -> list[Marker]:
        return [Marker(**row) for row in self.db.query(
            "SELECT id, recording_id, t, note FROM markers WHERE recording_id = ? ORDER BY t, id",
            [recording_id])]

    def search(self, query: str, limit: int = 50, *, status: str | None = None,
               language: str | None = None, since: str | None = None,
               until: str | None = None, owner_id: int | None = None) -> list[SearchHit]:
        """Segments containing every term of ``query`` (Chinese or English) in the
        recordings the filters (as ``list_recordings``') let through, newest first (read
        straight off the index in id order, so a common word costs no more than a rare
        one).

        Each whitespace-separated term is a phrase: "开放时间" matches those four characters
        in a row, in Simplified or Traditional writing.
        """
        terms = [search_form(term) for term in query.split()]
        terms = [t for t in terms if t]
        if not terms:
            return []
        match = " ".join('"' + t.replace('"', '""') + '"' for t in terms)
        where, args = self._recording_filter(status, language, since, until, owner_id, "r")
        rows = self.db.execute(
            "SELECT * FROM ("
            "  SELECT s.recording_id, r.title, s.id, s.start, s.end, s.text, s.idx "
            "  FROM segments_fts f JOIN segments s ON s.id = f.rowid "
            "  JOIN recordings r ON r.id = s.recording_id "
            f" WHERE segments_fts MATCH ? AND {where or 1} ORDER BY f.rowid DESC LIMIT ?) "
            "ORDER BY recording_id DESC, idx",
            [match, *args, limit],
        ).fetchall()
        return [SearchHit(*row[:6]) for row in rows]

    def transcript_hash(self, recording_id: int) -> str:
        """Changes whenever the transcript's text does (a summary records which it read)."""
        import hashlib

        digest = hashlib.sha256()
        for row in self.db.execute("SELECT id, text FROM segments WHERE recording_id = ? "
                                   "ORDER BY idx", [recording_id]):
            digest.update(f"{row[0]}\x1f{row[1]}\x1e".encode())
        return digest.hexdigest()[:16]

    def add_summary(self, recording_id: int, content: dict, flags: list, *, model_id: str,
                    prompt_version: str, transcript_hash: str) -> Summary:
        with self.transaction():
            version = self.db.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM summaries WHERE recording_id = ?",
                [recording_id]).fetchone()[0]
            self.db["summaries"].insert(
                {"recording_id": recording_id, "version": version, "model_id": model_id,
                 "prompt_version": prompt_version, "transcript_hash": transcript_hash,
                 "content": json.dumps(content, ensure_ascii=False),
                 "flags": json.dumps(flags, ensure_ascii=False), "created": now()})
        return self.summaries(recording_id)[-1]

    def summaries(self, recording_id: int) -> list[Summary]:
        """Every version, oldest first."""
        return [Summary(**{**row, "content": json.loads(row["content"]),
                           "flags": json.loads(row["flags"] or "[]")})
                for row in self.db.query("SELECT * FROM summaries WHERE recording_id = ? "
                                         "ORDER BY version", [recording_id])]

    def latest_summary(self, recording_id: int) -> Summary | None:
        versions = self.summaries(recording_id)
        return versions[-1] if versions else None

    def glossary(self) -> list[GlossaryEntry]:
        return [GlossaryEntry(**row) for row in self.db.query(
            "SELECT id, term, misheard FROM glossary ORDER BY term, id")]

    def add_glossary(self, term: str, misheard: str | None = None) -> int:
        term = clean_label(term, "a glossary term", NAME_MAX)
        misheard = clean_label(misheard or "", "a mis-hearing", NAME_MAX) or None
        if not term:
            raise InvalidInput(N_("a glossary term cannot be empty"))
        with self.transaction():
            existing = self.db.execute(
                "SELECT id FROM glossary WHERE term = ? AND coalesce(misheard, '') = ?",
                [term, misheard or ""],
            ).fetchone()
            if existing:
                return existing[0]
            return self.db["glossary"].insert(
                {"term": term, "misheard": misheard, "created": now()}
            ).last_pk

    def remove_glossary(self, entry_id: int) -> bool:
        with self.transaction():
            return self.db.execute("DELETE FROM glossary WHERE id = ?", [entry_id]).rowcount > 0

"""The SQLite store: the only module that knows the schema; every query lives here.

WAL journal, synchronous=FULL, foreign keys on.  Migrations are numbered, each runs in
one transaction that also bumps ``PRAGMA user_version``, so a crash mid-migration leaves
the previous version intact and a rerun is harmless.

    >>> store = Store(Path(":memory:"))
    >>> rec = store.create_recording("Interview", source_name="a.wav")
    >>> store.get_recording(rec.id).status
    'queued'
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from device.errors import EditConflict, RecordingNotFound, SegmentNotFound
from device.records import Job, Recording, SearchHit, Segment, User, Word
from device.text import search_form


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _migration_1(db: sqlite_utils.Database) -> None:
    db["recordings"].create(
        {
            "id": int, "title": str, "source_name": str, "audio_file": str,
            "duration": float, "language": str, "language_probability": float,
            "model_id": str, "status": str, "error": str, "created": str, "updated": str,
        },
        pk="id", not_null={"title", "status", "created", "updated"}, if_not_exists=True,
    )
    db["segments"].create(
        {
            "id": int, "recording_id": int, "idx": int, "start": float, "end": float,
            "text": str, "language": str, "avg_logprob": float, "no_speech_prob": float,
            "compression_ratio": float, "speaker": str, "revision": int,
        },
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"recording_id", "idx", "start", "end", "text"},
        defaults={"revision": 0}, if_not_exists=True,
    )
    db["words"].create(
        {"id": int, "segment_id": int, "idx": int, "start": float, "end": float,
         "text": str, "probability": float},
        pk="id", foreign_keys=[("segment_id", "segments", "id")], if_not_exists=True,
    )
    db["jobs"].create(
        {
            "id": int, "kind": str, "recording_id": int, "status": str, "progress": float,
            "attempts": int, "params": str, "error": str, "created": str, "started": str,
            "finished": str, "worker_pid": int, "worker_started": float,
        },
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"kind", "status", "created"}, defaults={"progress": 0.0, "attempts": 0},
        if_not_exists=True,
    )
    db["segments"].create_index(["recording_id", "idx"], unique=True, if_not_exists=True)
    db["words"].create_index(["segment_id", "idx"], if_not_exists=True)
    db["jobs"].create_index(["status", "id"], if_not_exists=True)
    # Segment text in search_form(): folded to Simplified, one token per CJK character, so
    # a phrase query matches Chinese of any length as well as English words.
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS segments_fts USING fts5("
        "text, tokenize = 'unicode61 remove_diacritics 2')"
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    """Dialect profiles: what each recording was transcribed with, and the glossary."""
    recordings = db["recordings"]
    for column in ("profile", "script", "terms", "language_probabilities", "auto_decision"):
        recordings.add_column(column, str)
    db["glossary"].create(
        {"id": int, "term": str, "misheard": str, "created": str},
        pk="id", not_null={"term", "created"}, if_not_exists=True,
    )
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS glossary_entry "
               "ON glossary (term, coalesce(misheard, ''))")


def _migration_3(db: sqlite_utils.Database) -> None:
    """Markers: bookmarks an interviewer sets while recording (time and note)."""
    db["markers"].create(
        {"id": int, "recording_id": int, "t": float, "note": str, "created": str},
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"recording_id", "t", "created"}, if_not_exists=True,
    )
    db["markers"].create_index(["recording_id", "t"], if_not_exists=True)


def _migration_4(db: sqlite_utils.Database) -> None:
    """Summaries: every version kept, with the model, prompt and transcript it came from."""
    db["summaries"].create(
        {"id": int, "recording_id": int, "version": int, "model_id": str,
         "prompt_version": str, "transcript_hash": str, "content": str, "flags": str,
         "created": str},
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"recording_id", "version", "content", "created"}, if_not_exists=True,
    )
    db["summaries"].create_index(["recording_id", "version"], unique=True, if_not_exists=True)


def _migration_5(db: sqlite_utils.Database) -> None:
    """Accounts, sessions, the owner of each recording, and the revision history of edits."""
    db["users"].create(
        {"id": int, "username": str, "password_hash": str, "role": str, "created": str},
        pk="id", not_null={"username", "password_hash", "role", "created"}, if_not_exists=True,
    )
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS users_name ON users (username COLLATE NOCASE)")
    db["sessions"].create(
        {"token_hash": str, "user_id": int, "csrf": str, "created": str, "expires": float},
        pk="token_hash", foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "csrf", "created", "expires"}, if_not_exists=True,
    )
    db["recordings"].add_column("owner_id", int)
    db["revisions"].create(
        {"id": int, "recording_id": int, "kind": str, "note": str, "user_id": int,
         "username": str, "before": str, "after": str, "undone_by": int, "created": str},
        pk="id", foreign_keys=[("recording_id", "recordings", "id")],
        not_null={"recording_id", "kind", "before", "after", "created"}, if_not_exists=True,
    )
    db["revisions"].create_index(["recording_id", "id"], if_not_exists=True)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1, _migration_2, _migration_3, _migration_4, _migration_5,
]
_JSON_COLUMNS = ("terms", "language_probabilities", "auto_decision")
SCHEMA_VERSION = len(MIGRATIONS)


class Store:
    """A handle on the database; cheap to open, one per thread or process."""

    def __init__(self, path: Path):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.migrate()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: take the write lock up front so writers queue instead of failing."""
        if self.db.conn.in_transaction:
            with self.db.atomic():
                yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.rollback()
            raise
        self.db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        if self.schema_version >= SCHEMA_VERSION:
            return  # the common case: no write lock taken just to open the store
        for version, migration in enumerate(MIGRATIONS, start=1):
            with self.transaction():
                if self.schema_version >= version:
                    continue
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {version}")

    # -- recordings ---------------------------------------------------------------------

    def create_recording(self, title: str, source_name: str, status: str = "queued",
                         owner_id: int | None = None) -> Recording:
        stamp = now()
        with self.transaction():
            row_id = self.db["recordings"].insert(
                {"title": title, "source_name": source_name, "status": status,
                 "owner_id": owner_id, "created": stamp, "updated": stamp}
            ).last_pk
        return self.get_recording(row_id)

    def get_recording(self, recording_id: int) -> Recording:
        rows = list(self.db["recordings"].rows_where("id = ?", [recording_id]))
        if not rows:
            raise RecordingNotFound(f"no recording with id {recording_id}")
        return _recording(rows[0])

    def list_recordings(
        self, limit: int = 100, offset: int = 0, *, status: str | None = None,
        language: str | None = None, since: str | None = None, until: str | None = None,
        owner_id: int | None = None,
    ) -> list[Recording]:
        """Newest first; ``since``/``until`` are ISO dates (inclusive) on the creation time."""
        where, args = self._recording_filter(status, language, since, until, owner_id)
        return [
            _recording(row)
            for row in self.db["recordings"].rows_where(
                where, args, order_by="id desc", limit=limit, offset=offset
            )
        ]

    def count_recordings(self, *, status: str | None = None, language: str | None = None,
                         since: str | None = None, until: str | None = None,
                         owner_id: int | None = None) -> int:
        where, args = self._recording_filter(status, language, since, until, owner_id)
        return self.db["recordings"].count_where(where or "1", args)

    @staticmethod
    def _recording_filter(status, language, since, until, owner_id) -> tuple[str | None, list]:
        given = [(clause, value) for clause, value in (
            ("status = ?", status), ("language = ?", language), ("created >= ?", since),
            ("substr(created, 1, 10) <= ?", until), ("owner_id = ?", owner_id),
        ) if value not in (None, "")]
        return (" AND ".join(c for c, _ in given) or None), [v for _, v in given]

    def recording_languages(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT language FROM recordings WHERE language IS NOT NULL ORDER BY 1")]

    def update_recording(self, recording_id: int, **fields: object) -> Recording:
        with self.transaction():
            self.db["recordings"].update(recording_id, {**_encode(fields), "updated": now()})
        return self.get_recording(recording_id)

    # -- transcripts --------------------------------------------------------------------

    def segments(self, recording_id: int, with_words: bool = True) -> list[Segment]:
        rows = list(
            self.db["segments"].rows_where("recording_id = ?", [recording_id], order_by="idx")
        )
        words: dict[int, list[Word]] = {}
        if with_words and rows:
            for segment_id, *fields in self.db.execute(
                "SELECT w.segment_id, w.start, w.end, w.text, w.probability FROM words w "
                "JOIN segments s ON s.id = w.segment_id "
                "WHERE s.recording_id = ? ORDER BY s.idx, w.idx",  # index order: no sort
                [recording_id],
            ):
                words.setdefault(segment_id, []).append(Word(*fields))
        return [
            Segment(
                id=r["id"], start=r["start"], end=r["end"], text=r["text"],
                language=r["language"], avg_logprob=r["avg_logprob"],
                no_speech_prob=r["no_speech_prob"], compression_ratio=r["compression_ratio"],
                speaker=r["speaker"], revision=r["revision"],
                words=tuple(words.get(r["id"], ())),
            )
            for r in rows
        ]

    def words_json(self, recording_id: int) -> str:
        """Word timings of a transcript as JSON, built by SQLite: {"segment id":
        [[start, end, text], …], …} (the recording page wraps the words in the browser)."""
        row = self.db.execute(
            "SELECT json_group_object(segment_id, json(words)) FROM ("
            "  SELECT w.segment_id, json_group_array(json_array(w.start, w.end, w.text)) words"
            "  FROM segments s JOIN words w ON w.segment_id = s.id"
            "  WHERE s.recording_id = ? GROUP BY s.idx ORDER BY s.idx)",
            [recording_id]).fetchone()
        return row[0] or "{}"

    def _delete_transcript(self, recording_id: int) -> None:
        ids = [r[0] for r in self.db.execute(
            "SELECT id FROM segments WHERE recording_id = ?", [recording_id]
        )]
        for start in range(0, len(ids), 500):
            batch = ids[start : start + 500]
            marks = ",".join("?" * len(batch))
            self.db.execute(f"DELETE FROM segments_fts WHERE rowid IN ({marks})", batch)
            self.db.execute(f"DELETE FROM words WHERE segment_id IN ({marks})", batch)
        self.db.execute("DELETE FROM segments WHERE recording_id = ?", [recording_id])

    def complete_transcription(
        self,
        job_id: int,
        recording_id: int,
        segments: Sequence[Segment],
        **recording_fields: object,
    ) -> None:
        """Replace the transcript, update the recording (status done plus
        ``recording_fields``: language, duration, model_id, profile, …) and finish the job,
        in one transaction: exactly once."""
        with self.transaction():
            edited = self.db.execute(
                "SELECT count(*) FROM segments WHERE recording_id = ? AND revision > 0",
                [recording_id]).fetchone()[0]
            before = self._snapshots(recording_id) if edited else []
            self._delete_transcript(recording_id)
            new_ids = [self._insert_segment(recording_id, idx, segment)
                       for idx, segment in enumerate(segments)]
            if edited:  # reviewers' edits stay in the history: undo brings them back
                self._add_revision(recording_id, "retranscribe", "transcribed again", None,
                                   before, self._snapshots(recording_id, new_ids))
            self.db["recordings"].update(
                recording_id,
                {**_encode(recording_fields), "status": "done", "error": None, "updated": now()},
            )
            self._finish(job_id, "done", None)

    def append_segment(self, recording_id: int, segment: Segment) -> int:
        """Add one segment at the end of a transcript (the live transcript while recording)."""
        with self.transaction():
            idx = self.db.execute(
                "SELECT coalesce(max(idx) + 1, 0) FROM segments WHERE recording_id = ?",
                [recording_id]).fetchone()[0]
            return self._insert_segment(recording_id, idx, segment)

    def _insert_segment(self, recording_id: int, idx: int, segment: Segment) -> int:
        row = {
            "recording_id": recording_id, "idx": idx, "start": segment.start,
            "end": segment.end, "text": segment.text, "language": segment.language,
            "avg_logprob": segment.avg_logprob, "no_speech_prob": segment.no_speech_prob,
            "compression_ratio": segment.compression_ratio, "speaker": segment.speaker,
            "revision": segment.revision,
        }
        if segment.id is not None:
            row["id"] = segment.id
        segment_id = self.db["segments"].insert(row).last_pk
        self.db["words"].insert_all(
            {"segment_id": segment_id, "idx": i, "start": w.start, "end": w.end,
             "text": w.text, "probability": w.probability}
            for i, w in enumerate(segment.words)
        )
        self.db.execute("INSERT INTO segments_fts (rowid, text) VALUES (?, ?)",
                        [segment_id, search_form(segment.text)])
        return segment_id

    def add_marker(self, recording_id: int, t: float, note: str = "") -> dict:
        with self.transaction():
            marker_id = self.db["markers"].insert(
                {"recording_id": recording_id, "t": t, "note": note, "created": now()}
            ).last_pk
        return {"id": marker_id, "recording_id": recording_id, "t": t, "note": note}

    def markers(self, recording_id: int) -> list[dict]:
        return list(self.db.query(
            "SELECT id, recording_id, t, note FROM markers WHERE recording_id = ? ORDER BY t, id",
            [recording_id]))

    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Segments containing every term of ``query`` (Chinese or English), newest first
        (read straight off the index in id order, so a common word costs no more than a
        rare one).

        Each whitespace-separated term is a phrase: "开放时间" matches those four characters
        in a row, in Simplified or Traditional writing.
        """
        terms = [search_form(term) for term in query.split()]
        terms = [t for t in terms if t]
        if not terms:
            return []
        match = " ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self.db.execute(
            "SELECT s.recording_id, r.title, s.id, s.start, s.end, s.text "
            "FROM (SELECT rowid FROM segments_fts WHERE segments_fts MATCH ? "
            "      ORDER BY rowid DESC LIMIT ?) f "
            "JOIN segments s ON s.id = f.rowid JOIN recordings r ON r.id = s.recording_id "
            "ORDER BY s.recording_id DESC, s.idx",
            [match, limit],
        ).fetchall()
        return [SearchHit(*row) for row in rows]

    # -- jobs ---------------------------------------------------------------------------

    def enqueue(self, kind: str, recording_id: int, params: dict | None = None) -> Job:
        with self.transaction():
            job_id = self.db["jobs"].insert(
                {"kind": kind, "recording_id": recording_id, "status": "queued",
                 "progress": 0.0, "attempts": 0, "params": json.dumps(params or {}),
                 "created": now()}
            ).last_pk
        return self.get_job(job_id)

    def get_job(self, job_id: int) -> Job:
        rows = list(self.db["jobs"].rows_where("id = ?", [job_id]))
        if not rows:
            raise LookupError(f"no job with id {job_id}")
        return _job(rows[0])

    def list_jobs(self, status: str | None = None, limit: int = 100) -> list[Job]:
        where, args = ("status = ?", [status]) if status else (None, [])
        return [_job(r) for r in self.db["jobs"].rows_where(where, args, order_by="id desc",
                                                             limit=limit)]

    def jobs_for(self, recording_id: int) -> list[Job]:
        return [_job(r) for r in self.db["jobs"].rows_where(
            "recording_id = ?", [recording_id], order_by="id")]

    def claim(
        self, worker_pid: int, worker_started: float, job_id: int | None = None
    ) -> Job | None:
        """Mark the oldest queued job (or the given one) running for this worker."""
        with self.transaction():
            if job_id is None:
                row = self.db.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"
                ).fetchone()
            else:
                row = self.db.execute(
                    "SELECT id FROM jobs WHERE status = 'queued' AND id = ?", [job_id]
                ).fetchone()
            if row is None:
                return None
            self.db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started = ?, "
                "worker_pid = ?, worker_started = ?, error = NULL WHERE id = ?",
                [now(), worker_pid, worker_started, row[0]],
            )
        return self.get_job(row[0])

    def set_progress(self, job_id: int, progress: float) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'",
                [round(min(max(progress, 0.0), 100.0), 1), job_id],
            )

    def finish_job(self, job_id: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE jobs SET status = 'done', progress = 100, finished = ? "
                            "WHERE id = ? AND status = 'running'", [now(), job_id])

    def fail_job(self, job_id: int, error: str) -> None:
        """Mark a job failed with a reason a user can read; a failed transcription also
        marks its recording failed (a failed summary leaves the transcript as it is)."""
        with self.transaction():
            job = self.get_job(job_id)
            self._finish(job_id, "failed", error)
            if job.kind == "transcribe":
                self.db["recordings"].update(
                    job.recording_id, {"status": "failed", "error": error, "updated": now()}
                )

    def _finish(self, job_id: int, status: str, error: str | None) -> None:
        self.db.execute(
            "UPDATE jobs SET status = ?, error = ?, finished = ?, "
            "progress = CASE WHEN ? = 'done' THEN 100 ELSE progress END WHERE id = ?",
            [status, error, now(), status, job_id],
        )

    def requeue_interrupted(
        self, is_alive: Callable[[int | None, float | None], bool], max_attempts: int
    ) -> list[Job]:
        """Put running jobs whose worker died back in the queue, or fail them after
        ``max_attempts`` so a job that kills its worker cannot block the queue."""
        changed = []
        with self.transaction():
            for row in self.db["jobs"].rows_where("status = 'running'"):
                job = _job(row)
                if is_alive(job.worker_pid, job.worker_started):
                    continue
                if job.attempts >= max_attempts:
                    self.fail_job(
                        job.id, f"interrupted {job.attempts} times (the worker was killed "
                        "or crashed each time); giving up"
                    )
                else:
                    self.db.execute(
                        "UPDATE jobs SET status = 'queued', worker_pid = NULL WHERE id = ?",
                        [job.id],
                    )
                    if job.kind == "transcribe":
                        self.db["recordings"].update(job.recording_id, {"status": "queued"})
                changed.append(self.get_job(job.id))
        return changed


    # -- summaries ------------------------------------------------------------------------

    def transcript_hash(self, recording_id: int) -> str:
        """Changes whenever the transcript's text does (a summary records which it read)."""
        import hashlib

        digest = hashlib.sha256()
        for row in self.db.execute("SELECT id, text FROM segments WHERE recording_id = ? "
                                   "ORDER BY idx", [recording_id]):
            digest.update(f"{row[0]}\x1f{row[1]}\x1e".encode())
        return digest.hexdigest()[:16]

    def add_summary(self, recording_id: int, content: dict, flags: list, *, model_id: str,
                    prompt_version: str, transcript_hash: str) -> dict:
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

    def summaries(self, recording_id: int) -> list[dict]:
        """Every version, oldest first."""
        return [{**row, "content": json.loads(row["content"]),
                 "flags": json.loads(row["flags"] or "[]")}
                for row in self.db.query("SELECT * FROM summaries WHERE recording_id = ? "
                                         "ORDER BY version", [recording_id])]

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a queued or running job (a running one stops at its next checkpoint)."""
        with self.transaction():
            return self.db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? "
                "AND status IN ('queued', 'running')", [now(), job_id]).rowcount > 0

    # -- editing ----------------------------------------------------------------------------
    # Every change to a transcript is a revision: who, when, and the affected segments before
    # and after (with their words), so any change can be shown, undone, or redone.  Writers
    # name the segment revision they saw; a stale one raises EditConflict with what is stored.

    def get_segment(self, segment_id: int) -> Segment:
        snaps = self._snapshots(None, [segment_id])
        if not snaps:
            raise SegmentNotFound(f"no segment with id {segment_id}")
        return _segment_of(snaps[0])

    def segment_recording(self, segment_id: int) -> int:
        row = self.db.execute("SELECT recording_id FROM segments WHERE id = ?",
                              [segment_id]).fetchone()
        if row is None:
            raise SegmentNotFound(f"no segment with id {segment_id}")
        return row[0]

    def edit_segment(self, segment_id: int, text: str, revision: int,
                     user: User | None = None) -> Segment:
        """New text for one segment.  Its word timings no longer match, so they go (the
        revision keeps them for undo)."""
        text = text.strip()
        if not text:
            raise ValueError("a segment cannot be empty: merge it with a neighbour instead")
        with self.transaction():
            before = self._current(segment_id, revision)
            if before["text"] == text:
                return _segment_of(before)
            after = {**before, "text": text, "words": [], "revision": before["revision"] + 1}
            self._change(before["recording_id"], "edit", "edited a segment", user,
                         [before], [after])
        return self.get_segment(segment_id)

    def set_speaker(self, segment_id: int, speaker: str | None, revision: int,
                    user: User | None = None) -> Segment:
        speaker = (speaker or "").strip() or None
        with self.transaction():
            before = self._current(segment_id, revision)
            after = {**before, "speaker": speaker, "revision": before["revision"] + 1}
            self._change(before["recording_id"], "speaker", f"speaker → {speaker or '(none)'}",
                         user, [before], [after])
        return self.get_segment(segment_id)

    def rename_speaker(self, recording_id: int, old: str, new: str,
                       user: User | None = None) -> int:
        """Rename a speaker on every segment of a recording; returns how many changed."""
        new = new.strip()
        if not new:
            raise ValueError("a speaker name cannot be empty")
        with self.transaction():
            before = [s for s in self._snapshots(recording_id) if s["speaker"] == old]
            after = [{**s, "speaker": new, "revision": s["revision"] + 1} for s in before]
            if before:
                self._change(recording_id, "rename_speaker", f"speaker {old} → {new}", user,
                             before, after)
        return len(before)

    def replace_text(self, recording_id: int, find: str, replacement: str,
                     user: User | None = None) -> int:
        """Find & replace (exact, case-sensitive) across a recording; returns the number of
        segments changed.  A segment the replacement would empty is left as it is."""
        if not find:
            raise ValueError("nothing to find")
        with self.transaction():
            before = [s for s in self._snapshots(recording_id) if find in s["text"]
                      and s["text"].replace(find, replacement).strip()]
            after = [{**s, "text": s["text"].replace(find, replacement).strip(), "words": [],
                      "revision": s["revision"] + 1} for s in before]
            if before:
                self._change(recording_id, "replace", f"replaced “{find}” with “{replacement}”",
                             user, before, after)
        return len(before)

    def split_segment(self, segment_id: int, at: int, revision: int,
                      user: User | None = None) -> tuple[Segment, Segment]:
        """Split a segment's text at character ``at``; the time is split where the words
        say (or in proportion to the characters when there are none)."""
        with self.transaction():
            before = self._current(segment_id, revision)
            text = before["text"]
            first, second = text[:at].strip(), text[at:].strip()
            if not first or not second:
                raise ValueError(f"split position {at} leaves an empty segment")
            words = before["words"]
            cut = _word_cut(words, at) if words else None
            if cut is not None:
                t = words[cut][0]
                head, tail = words[:cut], words[cut:]
            else:
                t = before["start"] + (before["end"] - before["start"]) * at / len(text)
                head = tail = []
            t = round(min(max(t, before["start"]), before["end"]), 3)
            left = {**before, "text": first, "end": t, "words": head,
                    "revision": before["revision"] + 1}
            right = {**before, "id": None, "text": second, "start": t, "words": tail,
                     "revision": 0}
            ids = self._change(before["recording_id"], "split", "split a segment", user,
                               [before], [left, right], structural=True)
        return self.get_segment(ids[0]), self.get_segment(ids[1])

    def merge_segments(self, segment_id: int, revision: int, next_revision: int,
                       user: User | None = None) -> Segment:
        """Merge a segment with the one after it."""
        with self.transaction():
            first = self._current(segment_id, revision)
            row = self.db.execute(
                "SELECT id FROM segments WHERE recording_id = ? AND idx > ? ORDER BY idx LIMIT 1",
                [first["recording_id"], first["idx"]]).fetchone()
            if row is None:
                raise ValueError("the last segment has nothing after it to merge with")
            second = self._current(row[0], next_revision)
            joiner = "" if _cjk_edge(first["text"], second["text"]) else " "
            merged = {**first, "text": first["text"] + joiner + second["text"],
                      "end": second["end"], "words": first["words"] + second["words"],
                      "revision": first["revision"] + 1}
            self._change(first["recording_id"], "merge", "merged two segments", user,
                         [first, second], [merged], structural=True)
        return self.get_segment(segment_id)

    def revisions(self, recording_id: int, limit: int = 1000) -> list[dict]:
        """The history, newest first: id, kind, note, username, created, undone_by, and
        the segments before and after."""
        return [{**row, "before": json.loads(row["before"]), "after": json.loads(row["after"])}
                for row in self.db.query(
                    "SELECT * FROM revisions WHERE recording_id = ? ORDER BY id DESC LIMIT ?",
                    [recording_id, limit])]

    def get_revision(self, revision_id: int) -> dict:
        rows = list(self.db.query("SELECT * FROM revisions WHERE id = ?", [revision_id]))
        if not rows:
            raise LookupError(f"no revision with id {revision_id}")
        return {**rows[0], "before": json.loads(rows[0]["before"]),
                "after": json.loads(rows[0]["after"])}

    def undo_revision(self, revision_id: int, user: User | None = None) -> dict:
        """Put back the segments as they were before a revision, itself a new revision (so
        an undo can be undone).  Refused with EditConflict when a later change touched the
        same segments: undo that one first."""
        with self.transaction():
            revision = self.get_revision(revision_id)
            if revision["undone_by"]:
                raise EditConflict(f"revision {revision_id} was already undone "
                                   f"(by revision {revision['undone_by']})")
            after_ids = [s["id"] for s in revision["after"]]
            current = {s["id"]: s for s in self._snapshots(None, after_ids)}
            for seg in revision["after"]:
                now_ = current.get(seg["id"])
                if now_ is None or _content(now_) != _content(seg):
                    raise EditConflict(
                        "a later change touched the same segments; undo that first",
                        [_segment_of(s) for s in current.values()])
            ids_before = {s["id"] for s in revision["before"]}
            restored = [{**s, "revision": max(s["revision"],
                                              current[s["id"]]["revision"]
                                              if s["id"] in current else 0) + 1}
                        for s in revision["before"]]
            structural = ids_before != set(after_ids)
            self._change(revision["recording_id"], "undo", f"undid: {revision['note']}", user,
                         list(current.values()), restored, structural=structural)
            new_id = self.db.execute("SELECT max(id) FROM revisions").fetchone()[0]
            self.db.execute("UPDATE revisions SET undone_by = ? WHERE id = ?",
                            [new_id, revision_id])
        return self.get_revision(new_id)

    def _current(self, segment_id: int, revision: int) -> dict:
        snaps = self._snapshots(None, [segment_id])
        if not snaps:
            raise SegmentNotFound(f"no segment with id {segment_id}")
        if snaps[0]["revision"] != revision:
            raise EditConflict(
                f"segment {segment_id} changed since you loaded it (revision "
                f"{snaps[0]['revision']}, yours {revision}); here is the newer text",
                [_segment_of(snaps[0])])
        return snaps[0]

    def _snapshots(self, recording_id: int | None, ids: Sequence[int] | None = None
                   ) -> list[dict]:
        """Segments as plain dicts with their words, in transcript order."""
        if ids is not None:
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = list(self.db.query(f"SELECT * FROM segments WHERE id IN ({marks}) "
                                      "ORDER BY idx", list(ids)))
        else:
            rows = list(self.db.query("SELECT * FROM segments WHERE recording_id = ? "
                                      "ORDER BY idx", [recording_id]))
        words: dict[int, list] = {}
        if rows:
            marks = ",".join("?" * len(rows))
            for w in self.db.execute(
                    f"SELECT segment_id, start, end, text, probability FROM words "
                    f"WHERE segment_id IN ({marks}) ORDER BY segment_id, idx",
                    [r["id"] for r in rows]):
                words.setdefault(w[0], []).append(list(w[1:]))
        return [{**r, "words": words.get(r["id"], [])} for r in rows]

    def _change(self, recording_id: int, kind: str, note: str, user: User | None,
                before: list[dict], after: list[dict], structural: bool = False) -> list[int]:
        """Replace the ``before`` segments by the ``after`` ones and record the revision;
        returns the ids of the ``after`` segments.  Runs inside the caller's transaction."""
        old_ids = [s["id"] for s in before]
        marks = ",".join("?" * len(old_ids))
        self.db.execute(f"DELETE FROM segments_fts WHERE rowid IN ({marks})", old_ids)
        self.db.execute(f"DELETE FROM words WHERE segment_id IN ({marks})", old_ids)
        self.db.execute(f"DELETE FROM segments WHERE id IN ({marks})", old_ids)
        ids = []
        for n, snap in enumerate(after):
            idx = snap["idx"] if not structural else -1_000_000 - n  # renumbered below
            ids.append(self._insert_segment(recording_id, idx, _segment_of(snap)))
        if structural:
            order = [r[0] for r in self.db.execute(
                "SELECT id FROM segments WHERE recording_id = ? ORDER BY start, idx",
                [recording_id])]
            self.db.execute("UPDATE segments SET idx = -1 - idx WHERE recording_id = ? "
                            "AND idx >= 0", [recording_id])
            self.db.conn.executemany("UPDATE segments SET idx = ? WHERE id = ?",
                                [(i, sid) for i, sid in enumerate(order)])
        after_stored = self._snapshots(None, ids)
        self._add_revision(recording_id, kind, note, user, before, after_stored)
        self.db["recordings"].update(recording_id, {"updated": now()})
        return ids

    def _add_revision(self, recording_id: int, kind: str, note: str, user: User | None,
                      before: list[dict], after: list[dict]) -> int:
        return self.db["revisions"].insert({
            "recording_id": recording_id, "kind": kind, "note": note,
            "user_id": user.id if user else None, "username": user.username if user else None,
            "before": json.dumps(before, ensure_ascii=False),
            "after": json.dumps(after, ensure_ascii=False), "created": now(),
        }).last_pk

    # -- accounts -------------------------------------------------------------------------

    def count_users(self) -> int:
        return self.db["users"].count

    def create_user(self, username: str, password_hash: str, role: str) -> User:
        with self.transaction():
            if self.db.execute("SELECT 1 FROM users WHERE username = ? COLLATE NOCASE",
                               [username]).fetchone():
                raise ValueError(f"the user name {username!r} is taken")
            user_id = self.db["users"].insert(
                {"username": username, "password_hash": password_hash, "role": role,
                 "created": now()}).last_pk
        return self.get_user(user_id)

    def create_first_user(self, username: str, password_hash: str, role: str) -> User | None:
        """Create the first account, or None when one exists already (setup is one-time)."""
        with self.transaction():
            if self.db["users"].count:
                return None
            return self.create_user(username, password_hash, role)

    def get_user(self, user_id: int) -> User:
        rows = list(self.db["users"].rows_where("id = ?", [user_id]))
        if not rows:
            raise LookupError(f"no user with id {user_id}")
        return User(**rows[0])

    def find_user(self, username: str) -> User | None:
        rows = list(self.db["users"].rows_where("username = ? COLLATE NOCASE", [username]))
        return User(**rows[0]) if rows else None

    def list_users(self) -> list[User]:
        return [User(**r) for r in self.db["users"].rows_where(order_by="username")]

    def update_user(self, user_id: int, **fields: object) -> User:
        with self.transaction():
            self.db["users"].update(user_id, fields)
        return self.get_user(user_id)

    def delete_user(self, user_id: int) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])
            self.db.execute("UPDATE recordings SET owner_id = NULL WHERE owner_id = ?",
                            [user_id])
            self.db.execute("DELETE FROM users WHERE id = ?", [user_id])

    def create_session(self, token_hash: str, user_id: int, csrf: str, expires: float) -> None:
        with self.transaction():
            self.db["sessions"].insert({"token_hash": token_hash, "user_id": user_id,
                                        "csrf": csrf, "created": now(), "expires": expires})

    def get_session(self, token_hash: str, at: float) -> tuple[User, str] | None:
        """The user and CSRF token of a live session, or None."""
        row = self.db.execute("SELECT user_id, csrf FROM sessions WHERE token_hash = ? "
                              "AND expires > ?", [token_hash, at]).fetchone()
        if row is None:
            return None
        try:
            return self.get_user(row[0]), row[1]
        except LookupError:
            return None

    def end_sessions(self, user_id: int) -> int:
        """Log a user out everywhere (logout, password change)."""
        with self.transaction():
            return self.db.execute("DELETE FROM sessions WHERE user_id = ?",
                                   [user_id]).rowcount

    # -- glossary -------------------------------------------------------------------------

    def glossary(self) -> list[dict]:
        """Admin-managed terms: {id, term, misheard}; misheard None means a hotword only."""
        return list(self.db.query("SELECT id, term, misheard FROM glossary ORDER BY term, id"))

    def add_glossary(self, term: str, misheard: str | None = None) -> int:
        term, misheard = term.strip(), (misheard or "").strip() or None
        if not term:
            raise ValueError("a glossary term cannot be empty")
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


def _encode(fields: dict) -> dict:
    return {k: json.dumps(v, ensure_ascii=False) if k in _JSON_COLUMNS and v is not None else v
            for k, v in fields.items()}


def _recording(row: dict) -> Recording:
    return Recording(**{k: json.loads(v) if k in _JSON_COLUMNS and v else v
                        for k, v in row.items()})


def _job(row: dict) -> Job:
    return Job(**{**row, "params": json.loads(row["params"] or "{}")})


def _segment_of(snap: dict) -> Segment:
    return Segment(
        id=snap["id"], start=snap["start"], end=snap["end"], text=snap["text"],
        language=snap["language"], avg_logprob=snap["avg_logprob"],
        no_speech_prob=snap["no_speech_prob"], compression_ratio=snap["compression_ratio"],
        speaker=snap["speaker"], revision=snap["revision"],
        words=tuple(Word(*w) for w in snap["words"]),
    )


def _content(snap: dict) -> tuple:
    return snap["text"], snap["speaker"], snap["start"], snap["end"]


def _word_cut(words: list, at: int) -> int | None:
    """Index of the first word that starts at or after character ``at`` of the joined text
    (approximate when the text was rewritten after recognition: numbers, punctuation)."""
    position = 0
    for i, w in enumerate(words):
        text = w[2] if i else w[2].lstrip()
        if i > 0 and position + len(text) - len(text.lstrip()) >= at:
            return i
        position += len(text)
    return None


def _cjk_edge(left: str, right: str) -> bool:
    """Chinese text joins without a space."""
    return bool(left and right and (left[-1] >= "\u2e80" or right[0] >= "\u2e80"))

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

from device.errors import RecordingNotFound
from device.records import Job, Recording, SearchHit, Segment, Word
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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _migration_1, _migration_2, _migration_3, _migration_4,
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
        for version, migration in enumerate(MIGRATIONS, start=1):
            with self.transaction():
                if self.schema_version >= version:
                    continue
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {version}")

    # -- recordings ---------------------------------------------------------------------

    def create_recording(self, title: str, source_name: str, status: str = "queued") -> Recording:
        stamp = now()
        with self.transaction():
            row_id = self.db["recordings"].insert(
                {"title": title, "source_name": source_name, "status": status,
                 "created": stamp, "updated": stamp}
            ).last_pk
        return self.get_recording(row_id)

    def get_recording(self, recording_id: int) -> Recording:
        rows = list(self.db["recordings"].rows_where("id = ?", [recording_id]))
        if not rows:
            raise RecordingNotFound(f"no recording with id {recording_id}")
        return _recording(rows[0])

    def list_recordings(self, limit: int = 100, offset: int = 0) -> list[Recording]:
        return [
            _recording(row)
            for row in self.db["recordings"].rows_where(
                order_by="id desc", limit=limit, offset=offset
            )
        ]

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
            for w in self.db.query(
                "SELECT w.* FROM words w JOIN segments s ON s.id = w.segment_id "
                "WHERE s.recording_id = ? ORDER BY w.segment_id, w.idx",
                [recording_id],
            ):
                words.setdefault(w["segment_id"], []).append(
                    Word(w["start"], w["end"], w["text"], w["probability"])
                )
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
            self._delete_transcript(recording_id)
            for idx, segment in enumerate(segments):
                self._insert_segment(recording_id, idx, segment)
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
        segment_id = self.db["segments"].insert(
            {
                "recording_id": recording_id, "idx": idx, "start": segment.start,
                "end": segment.end, "text": segment.text, "language": segment.language,
                "avg_logprob": segment.avg_logprob, "no_speech_prob": segment.no_speech_prob,
                "compression_ratio": segment.compression_ratio, "speaker": segment.speaker,
                "revision": 0,
            }
        ).last_pk
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
        """Segments containing every term of ``query`` (Chinese or English), best first.

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
            "FROM segments_fts f JOIN segments s ON s.id = f.rowid "
            "JOIN recordings r ON r.id = s.recording_id "
            "WHERE segments_fts MATCH ? ORDER BY f.rank, s.recording_id DESC, s.idx LIMIT ?",
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

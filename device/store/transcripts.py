"""Transcripts: the one way segments and their words are read, and how a finished
transcription replaces the last one (keeping reviewers' edits as a revision)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from device.errors import N_
from device.records import Segment
from device.said import Said
from device.store._base import Rooms, encode_fields, now, segment_of
from device.text import search_form


class TranscriptRooms(Rooms):
    def segments(self, recording_id: int, with_words: bool = True) -> list[Segment]:
        """The transcript in order (without word timings when not needed)."""
        return [segment_of(row) for row in self._snapshots(recording_id,
                                                            with_words=with_words)]

    def words_json(self, recording_id: int) -> str:
        """Word timings of a transcript as JSON, built by SQLite: {"segment id":
        [[start, end, text, probability], …], …} (the recording page wraps the words in the
        browser)."""
        row = self.db.execute(
            "SELECT json_group_object(segment_id, json(words)) FROM ("
            "  SELECT w.segment_id, json_group_array(json_array(w.start, w.end, w.text,"
            "                                                   w.probability)) words"
            "  FROM segments s JOIN words w ON w.segment_id = s.id"
            "  WHERE s.recording_id = ? GROUP BY s.idx ORDER BY s.idx)",
            [recording_id]).fetchone()
        return row[0] or "{}"

    def _snapshots(self, recording_id: int | None, ids: Sequence[int] | None = None,
                   with_words: bool = True) -> list[dict]:
        """The one way segments are read: rows of a recording (or the given ids) in
        transcript order, each with its words as [start, end, text, probability] lists.
        ``segments()`` makes records of them; revisions store them as they are."""
        if ids is not None:
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = list(self.db.query(f"SELECT * FROM segments WHERE id IN ({marks}) "
                                      "ORDER BY idx", list(ids)))
            word_query = (f"SELECT segment_id, start, end, text, probability FROM words "
                          f"WHERE segment_id IN ({marks}) ORDER BY segment_id, idx", list(ids))
        else:
            rows = list(self.db.query("SELECT * FROM segments WHERE recording_id = ? "
                                      "ORDER BY idx", [recording_id]))
            word_query = ("SELECT w.segment_id, w.start, w.end, w.text, w.probability "
                          "FROM words w JOIN segments s ON s.id = w.segment_id "
                          "WHERE s.recording_id = ? ORDER BY s.idx, w.idx",  # no sort
                          [recording_id])
        words: dict[int, list] = {}
        if rows and with_words:
            for segment_id, *fields in self.db.execute(*word_query):
                words.setdefault(segment_id, []).append(fields)
        return [{**r, "words": words.get(r["id"], [])} for r in rows]

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
        self.db.execute("DELETE FROM decoded_windows WHERE recording_id = ?", [recording_id])

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
                self._add_revision(recording_id, "retranscribe",
                                   Said(N_("transcribed again")), None,
                                   before, self._snapshots(recording_id, new_ids))
            self.db["recordings"].update(
                recording_id,
                {"status": "done", "error": None, **encode_fields(recording_fields),
                 "updated": now()},
            )
            self._finish(job_id, "done", None)

    def decoded_window(self, recording_id: int, key: str) -> dict | None:
        """A window of the recording decoded ahead (``keep_decoded_window``), by its key."""
        row = self.db.execute("SELECT value FROM decoded_windows WHERE recording_id = ? "
                              "AND key = ?", [recording_id, key]).fetchone()
        return json.loads(row[0]) if row else None

    def keep_decoded_window(self, recording_id: int, key: str, value: dict) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO decoded_windows (recording_id, key, value) "
                            "VALUES (?, ?, ?)",
                            [recording_id, key, json.dumps(value, ensure_ascii=False)])

    def noted_chunks(self, recording_id: int) -> list[list[tuple[float, float]]]:
        """The chunks of the recording's transcript read into notes during the recording,
        in time order: the spans of their segments."""
        rows = [json.loads(r[0]) for r in self.db.execute(
            "SELECT spans FROM summary_notes WHERE recording_id = ? AND ahead = 1",
            [recording_id])]
        return sorted(([tuple(span) for span in spans] for spans in rows if spans),
                      key=lambda spans: spans[-1][1])

    def forget_noted_chunk(self, recording_id: int, spans: Sequence[tuple[float, float]]
                           ) -> None:
        """The chunk noted during the recording with these ``spans`` no longer says where
        the summary cuts the transcript (its notes stay, by key)."""
        with self.transaction():
            self._unnote(recording_id, spans)

    def _unnote(self, recording_id: int, spans: Sequence[tuple[float, float]]) -> None:
        these = [list(span) for span in spans]
        for key, kept in self.db.execute(
                "SELECT key, spans FROM summary_notes WHERE recording_id = ? AND ahead = 1",
                [recording_id]).fetchall():
            if json.loads(kept) == these:
                self.db.execute("UPDATE summary_notes SET ahead = 0 WHERE recording_id = ? "
                                "AND key = ?", [recording_id, key])

    def chunk_notes(self, recording_id: int, key: str) -> dict | None:
        """Notes on a chunk of the recording's transcript (``keep_chunk_notes``), by key."""
        row = self.db.execute("SELECT value FROM summary_notes WHERE recording_id = ? "
                              "AND key = ?", [recording_id, key]).fetchone()
        return json.loads(row[0]) if row else None

    def keep_chunk_notes(self, recording_id: int, key: str,
                         spans: Sequence[tuple[float, float]], notes: dict, model_id: str,
                         ahead: bool = False,
                         replacing: Sequence[tuple[float, float]] | None = None) -> None:
        """``replacing``: the spans of the chunk noted during the recording these notes
        are on again (its text changed): it no longer cuts the transcript."""
        with self.transaction():
            if replacing is not None:
                self._unnote(recording_id, replacing)
            self.db.execute(
                "INSERT OR REPLACE INTO summary_notes (recording_id, key, spans, ahead, "
                "model_id, value) VALUES (?, ?, ?, ?, ?, ?)",
                [recording_id, key, json.dumps(spans), int(ahead), model_id,
                 json.dumps(notes, ensure_ascii=False)])

    def summary_ahead(self, recording_id: int, model_id: str) -> tuple[list[int], bytes] | None:
        """The start of the recording's final summary call read into ``model_id`` during
        the recording (``keep_summary_ahead``): its tokens and the model's state for them."""
        row = self.db.execute("SELECT tokens, state FROM summary_ahead WHERE recording_id = ? "
                              "AND model_id = ?", [recording_id, model_id]).fetchone()
        return (json.loads(row[0]), bytes(row[1])) if row else None

    def keep_summary_ahead(self, recording_id: int, model_id: str, tokens: Sequence[int],
                           state: bytes) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO summary_ahead (recording_id, model_id, "
                            "tokens, state) VALUES (?, ?, ?, ?)",
                            [recording_id, model_id, json.dumps(list(tokens)), state])

    def forget_summary_ahead(self, recording_id: int) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM summary_ahead WHERE recording_id = ?", [recording_id])

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
            "revision": segment.revision, "channel": segment.channel,
            "profile": segment.profile,
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

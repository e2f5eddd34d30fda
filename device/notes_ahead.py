"""Summary notes while a recording is being made.

The final pass during a recording (``device.ready``) gives the final transcript as it goes.
Between its windows, it cuts that transcript into chunks of about ``notes_chunk_chars``
characters (``summary_text.steady_chunks``: a chunk once closed stays as it is while the
transcript grows) and has the summariser's notes model read each closed chunk into notes,
the map step of a long summary, kept in the recording's database under a key naming the
model, the prompt and the chunk's text (``Chunk.key``).  After stop the summary cuts the
transcript as these chunks were, takes their notes where the text is still what was noted,
and writes the summary in one call from them and the lines of the rest (the last part, and
speech a first pass lost, found again after stop: ``summary_text._after_notes``).  That
call begins with the notes: after each chunk the summariser reads that start on, and the
model's cache for it is kept (``summary_ahead``), so after stop only the rest is read.  So
the wait after stop does not grow with the length of the recording.

The model is loaded at the first chunk and kept until the recording ends (``close``): loaded
again for each chunk, its loading (~20 s of reading and unpacking ~1.4 GB beside the live
transcript) made utterances of the live transcript up to 2 s later each time
(docs/benchmarks.md).  Each chunk is read as by a model just loaded (its cache emptied).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import closing, nullcontext

from device.records import Segment
from device.settings import Settings
from device.store import Store
from device.summary_text import Chunk, StoredNotes, noted_parts, steady_chunks

log = logging.getLogger("tingji.notes_ahead")

def reader_context(settings: Settings) -> int:
    """Tokens of context the notes model is loaded with: the final call's but its answer
    (6,144 of the default 8,192), so the notes so far read ahead fit (merged past
    ``summarize.notes_budget``, with the instructions), and a chunk (~1,000), its
    instructions and its notes (1,024 at most) do; 3/4 of the memory of the summary's
    context at the default."""
    from device.summarize import SUMMARY_TOKENS

    return settings.llm_context - SUMMARY_TOKENS


class NotesAhead:
    """A recording's chunks read into notes as its final transcript grows."""

    def __init__(self, settings: Settings, store: Store, recording_id: int):
        self.settings, self.store, self.recording_id = settings, store, recording_id
        self.model_id = settings.summary_notes_model or settings.summary_model
        self.memo = StoredNotes(store, recording_id, ahead=True)
        self.taken = 0
        self._failed: set[str] = set()
        self._replacing: dict[str, Sequence[tuple[float, float]]] = {}
        """The spans of each noted chunk whose text changed, by its new text's key."""
        self._unavailable = False
        self._unmerged = False
        self._reader = None
        """The notes model, once loaded (``close``)."""

    @property
    def wanted(self) -> bool:
        """A summary follows the transcription (``auto_summarize``), and its model is here."""
        from device.jobs import _summariser_installed

        return (self.settings.auto_summarize and not self._unavailable
                and _summariser_installed(self.settings))

    def _notes_model(self):
        """The notes model, loaded at the first call and kept, its cache emptied: what it
        writes is what a model just loaded writes."""
        if self._reader is None:
            self._reader = self._loaded(self.model_id)
        self._reader.llm.reset()
        return self._reader

    def close(self) -> None:
        """Free the notes model (the recording has ended)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _loaded(self, model_id: str):
        """A summariser loaded with the notes model's context (``reader_context``)."""
        from device.summary_job import load_summarizer

        return load_summarizer(self.settings, model_id, reader_context(self.settings))

    def _read_ahead(self, reader, segments: Sequence[Segment], language: str | None) -> None:
        """The final call's start, the notes so far (``summary_text.notes_so_far``; past
        the final call's budget, merged as the summary would merge them after stop,
        ``summarize.merged``, and the merged notes kept), read into the summariser from
        where the last reading ended, and kept: after stop only the rest of the call is
        read.  The summariser reads them itself when it is not the notes model; they are
        not read on once they pass the context of ``reader_context``."""
        from device.errors import DiskFullError
        from device.pipeline import keep_room_for_recording
        from device.summarize import PROMPT_VERSION, Plan, SummaryError
        from models.store import ModelError

        if self._unmerged:
            return
        extract = self.settings.summary_extract
        plan = Plan.of(segments, language, extract=extract,
                       noted=self.store.noted_chunks(self.recording_id),
                       kept=lambda chunk: self.memo.get(chunk.key(self.model_id, PROMPT_VERSION,
                                                                  extract)),
                       size=self.settings.summary_chunk_chars)
        notes, first = [], 1
        for chunk in plan.chunks if plan.tail is not None else ():
            noted = self.memo.get(chunk.key(self.model_id, PROMPT_VERSION, extract))
            if noted is None:
                break
            notes.append(chunk.cited(noted, first))
            first += len(chunk.lines)
        if not notes:
            return
        try:  # merged now where the summary would merge them after stop
            notes = reader.merged(plan, notes, self.memo, ahead=True)
        except SummaryError as exc:  # the summary merges them after stop
            log.warning("recording %s: the notes not merged during the recording, nor read "
                        "ahead (%s)", self.recording_id, exc)
            self._unmerged = True  # the same notes would fail again
            return
        writer_id = self.settings.summary_model
        try:
            with (nullcontext(reader) if writer_id == self.model_id
                  else closing(self._loaded(writer_id))) as writer:
                read = writer.read_ahead(plan, notes, lambda: self.memo.read_ahead(writer_id))
        except (ModelError, SummaryError) as exc:  # the summary reads them after stop
            log.warning("recording %s: the notes not read ahead (%s)", self.recording_id, exc)
            return
        if read is None:
            return
        try:  # the space kept free for recording is not this cache's (twice: the WAL)
            keep_room_for_recording(self.settings, 2 * len(read.state), "the summary's start")
        except DiskFullError as exc:
            log.warning("recording %s: the notes read ahead not kept (%s)", self.recording_id,
                        exc)
            return
        self.memo.keep_read_ahead(writer_id, read)

    def pending(self, segments: Sequence[Segment], language: str | None) -> list[Chunk]:
        """The chunks of ``segments`` (the final transcript so far) to read into notes: the
        chunks noted before whose text has changed since (auto mode decodes a window again
        when the languages it found as the recording went on decode it in another), cut as
        they were, then the closed chunks after the last noted one.  A noted chunk none of
        whose lines are left (decoded again into other segments) no longer counts: its
        lines are read with the summary after stop."""
        from device.summarize import PROMPT_VERSION

        extract = self.settings.summary_extract
        segments = [s for s in segments if s.text.strip()]
        noted = self.store.noted_chunks(self.recording_id)
        found, rest = noted_parts(segments, noted)
        parts = {id(spans): part for part, spans in found}
        last, again, replacing = float("-inf"), [], {}
        for spans in noted:
            part = parts.get(id(spans))
            if part is None:
                log.info("recording %s: the lines noted at %.1f-%.1f s are gone; the summary "
                         "reads what is there now", self.recording_id, spans[0][0],
                         spans[-1][1])
                self.store.forget_noted_chunk(self.recording_id, spans)
                continue
            last = spans[-1][1]
            chunk = Chunk.of(part, language, spans)
            key = chunk.key(self.model_id, PROMPT_VERSION, extract)
            if self.memo.get(key) is None:
                if key not in self._replacing:
                    log.info("recording %s: the lines noted at %.1f-%.1f s changed; their "
                             "notes are taken again", self.recording_id, spans[0][0],
                             spans[-1][1])
                replacing[key] = spans
                if key not in self._failed:
                    again.append(chunk)
        self._replacing = replacing
        chunks, open_last = steady_chunks([s for s in rest if s.start >= last - 0.005],
                                          self.settings.notes_chunk_chars)
        chunks = [Chunk.of(part, language) for part in (chunks[:-1] if open_last else chunks)]
        return again + [c for c in chunks
                        if (key := c.key(self.model_id, PROMPT_VERSION, extract))
                        not in self._failed and self.memo.get(key) is None]

    def advance(self, segments: Sequence[Segment], language: str | None) -> bool:
        """Read the first closed chunk that has no notes into notes; False if there is
        none.  A chunk the model cannot take reliable notes on is left to the summary."""
        from device.summarize import PROMPT_VERSION, Plan, SummaryError
        from models.store import ModelError

        pending = self.pending(segments, language) if self.wanted else []
        if not pending:
            return False
        chunk = pending[0]
        extract = self.settings.summary_extract
        key = chunk.key(self.model_id, PROMPT_VERSION, extract)
        plan = Plan.of(chunk.segments, chunk.language, extract=extract)
        try:
            reader = self._notes_model()
            notes = reader.chunk_notes(plan, chunk, "")
            self.memo.put(key, chunk, notes, self.model_id, replacing=self._replacing.get(key))
            self._read_ahead(reader, segments, language)
        except ModelError as exc:
            log.warning("recording %s: no notes during the recording (%s)", self.recording_id,
                        exc)
            self._unavailable = True
            return False
        except SummaryError as exc:
            log.warning("recording %s: no notes on %.0f-%.0f s (%s); the summary takes them",
                        self.recording_id, chunk.start, chunk.end, exc)
            self._failed.add(key)
            return True
        self.store.update_recording(self.recording_id, notes_until=chunk.end)
        self.taken += 1
        return True

"""What the summariser's model reads: the transcript as numbered lines of one speaker each,
cut into chunks for long transcripts, notes of several chunks as one set, and the
instructions in the transcript's language; and the plan of a summary's calls (``Plan``)."""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from device.errors import N_, TingjiError
from device.llm import READING, ReadPrompt
from device.records import Segment
from device.said import Said
from device.summary_schema import schemas

LINE_CHARS = 80
"""Characters of Chinese per transcript line at most (English: three times as many)."""
CHUNK_CHARS = 4500
"""Characters of Chinese per chunk at most (English: three times as many), ~2,900 tokens:
the default of the ``summary_chunk_chars`` setting."""
_NOTE_SECTIONS = ("key_points", "decisions", "action_items")


_LANGUAGE_NAMES = {"zh": "Chinese (简体中文)", "en": "English", "yue": "Cantonese (廣東話)"}


def _instructions(language: str | None) -> str:
    name = _LANGUAGE_NAMES.get(language or "", language or "the transcript's language")
    if language == "zh":
        return ("你是会议和访谈记录的助手。只根据给出的转写内容写摘要，不要编造。"
                "每条要点、决定和待办事项都要在 segments 中列出它所依据的行号（方括号里的数字）。"
                "用简体中文写。没有的内容就留空列表。")
    return (f"You summarise interview and meeting transcripts. Use only what the transcript "
            f"says; never invent facts, numbers or names. Every key point, decision and "
            f"action item lists in 'segments' the [numbers] of the transcript lines it comes "
            f"from. Write in {name}, briefly. Leave a list empty when the transcript has "
            f"nothing for it.")


@dataclass(frozen=True)
class Line:
    """Consecutive segments of one speaker, shown to the model (and cited by it) as one
    numbered line."""

    segments: tuple[Segment, ...]
    text: str
    named: bool = True
    """Shown with its speaker's name."""

    @property
    def speaker(self) -> str | None:
        return self.segments[0].speaker if self.named else None


def transcript_lines(segments: Sequence[Segment], cjk: bool,
                     speakers: bool = True) -> list[Line]:
    """Segments joined into lines of about ``LINE_CHARS`` characters (English: three times
    as many), never across a change of speaker (``speakers=False``: speakers are left out).
    Qwen spells a line number digit by digit, so "[123]" costs five tokens: one line per
    sentence spent a fifth of the prompt on them."""
    size = LINE_CHARS if cjk else LINE_CHARS * 3
    lines: list[list[Segment]] = []
    for segment in segments:
        last = lines[-1] if lines else None
        if (last and (last[0].speaker == segment.speaker or not speakers)
                and sum(len(s.text.strip()) for s in last) + len(segment.text.strip()) <= size):
            last.append(segment)
        else:
            lines.append([segment])
    glue = "" if cjk else " "
    return [Line(tuple(line), glue.join(s.text.strip() for s in line), speakers)
            for line in lines]


def _transcript_text(lines: Sequence[Line | Segment], first_line: int = 1) -> str:
    """Numbered lines, "[12]文字" or "[12] Text": a space before a Chinese character splits
    it into two tokens, whereas an English word's token includes the space before it."""
    numbered = []
    for n, line in enumerate(lines, first_line):
        text = f"{(line.speaker + ': ') if line.speaker else ''}{line.text.strip()}"
        numbered.append(f"[{n}]{' ' if text[:1].isascii() else ''}{text}")
    return "\n".join(numbered)


def _notes_text(notes: Sequence[dict]) -> str:
    """Notes of several chunks as one JSON object: each section's items in order."""
    return json.dumps({section: [item for note in notes for item in note.get(section, [])]
                       for section in _NOTE_SECTIONS}, ensure_ascii=False)


def notes_so_far(notes: Sequence[dict]) -> str:
    """How the final call after notes taken during a recording begins: the notes, a line
    per part, without who said what (known only once the whole recording is diarised), so
    that a part's notes only add to it.  Read into the model as each part is noted
    (``notes_ahead``), only the rest of the call is read after stop."""
    return "Notes on the first parts of one transcript, as JSON, a line per part:\n" + "".join(
        json.dumps(unattributed(note), ensure_ascii=False) + "\n" for note in notes)


def unattributed(note: dict) -> dict:
    """A chunk's notes without who said the lines each item cites (``Chunk.cited``)."""
    return {section: [{k: v for k, v in item.items() if k != "who"}
                      for item in note.get(section, [])] for section in _NOTE_SECTIONS}


def speakers_of(notes: Sequence[dict], lines: Sequence[Line]) -> str:
    """Who said the transcript ``lines`` the notes cite, a line ("" when it names no
    speakers): what ``Chunk.cited`` tells each item, said after the notes."""
    cited: dict[str, list[int]] = {}
    numbers = sorted({n for note in notes for section in _NOTE_SECTIONS
                      for item in note.get(section, []) for n in item.get("segments", [])
                      if isinstance(n, int) and 1 <= n <= len(lines)})
    for n in numbers:
        for who in dict.fromkeys(s.speaker for s in lines[n - 1].segments if s.speaker):
            cited.setdefault(who, []).append(n)
    if not cited:
        return ""
    return "Who said the lines they cite: " + "; ".join(
        f"{who} " + ", ".join(f"[{n}]" for n in said) for who, said in cited.items()) + "\n"


_Piece = TypeVar("_Piece", Segment, Line)


def chunk_segments(segments: Sequence[_Piece], size: int = CHUNK_CHARS) -> list[list[_Piece]]:
    """Consecutive segments (or lines) in as few chunks of about ``size`` characters as
    there must be, of even length (no short last chunk: every chunk costs a call and its
    notes), never splitting one."""
    lengths = [len(s.text) + 8 for s in segments]  # 8: the line number and the line break
    total = sum(lengths)
    count = max(1, math.ceil(total / size))
    chunks: list[list[_Piece]] = [[] for _ in range(count)]
    start = 0
    for segment, length in zip(segments, lengths, strict=True):
        chunks[min(count - 1, int((start + length / 2) * count / total))].append(segment)
        start += length
    return [chunk for chunk in chunks if chunk]


def is_cjk(language: str | None) -> bool:
    return language in ("zh", "yue", "ja", "ko")


def _weight(text: str) -> float:
    """A text's length in characters of Chinese: an English letter counts a third."""
    ascii_chars = sum(c.isascii() for c in text)
    return len(text) - ascii_chars + ascii_chars / 3


def steady_chunks(segments: Sequence[Segment],
                  size: int) -> tuple[list[list[Segment]], bool]:
    """Consecutive segments in chunks of about ``size`` characters of Chinese
    (``_weight``), each closed before the segment that would make it longer: a chunk once
    closed stays as it is while the transcript grows.  Also says whether the last chunk is
    open (later segments may still join it)."""
    chunks: list[list[Segment]] = []
    current: list[Segment] = []
    weight = 0.0
    for segment in segments:
        length = _weight(segment.text) + 8  # 8: the line number and the line break
        if current and weight + length > size:
            chunks.append(current)
            current, weight = [], 0.0
        current.append(segment)
        weight += length
    if current:
        chunks.append(current)
    return chunks, bool(current)


def noted_parts(segments: Sequence[Segment], noted: Sequence[Sequence[tuple[float, float]]]
                ) -> tuple[list[tuple[list[Segment], Sequence[tuple[float, float]]]],
                           list[Segment]]:
    """The transcript cut as it was read into notes during the recording (``noted``: the
    spans of each chunk's segments): each chunk, with its spans, holds the segments within
    them (a segment split at a change of speaker stays in its chunk), and the rest — what
    came after, and speech found again after stop between them — is returned apart."""
    spans = sorted((start, end, index) for index, chunk in enumerate(noted)
                   for start, end in chunk)
    starts = [start for start, _, _ in spans]
    parts: list[list[Segment]] = [[] for _ in noted]
    rest = []
    for segment in segments:
        at = _span_at(spans, starts, segment)
        if at is None:
            rest.append(segment)
        else:
            parts[spans[at][2]].append(segment)
    return [(part, chunk) for part, chunk in zip(parts, noted, strict=True) if part], rest


def _span_at(spans: Sequence[tuple], starts: list[float], segment: Segment) -> int | None:
    at = bisect.bisect_right(starts, segment.start + 0.005) - 1
    return at if at >= 0 and segment.end <= spans[at][1] + 0.005 else None


@dataclass(frozen=True)
class Chunk:
    """Consecutive segments read into notes by one call, as lines numbered from 1 (the
    prompt does not depend on what comes before) without speakers' names (known only once
    the whole recording is diarised: the notes are told them afterwards, by the lines
    they cite), in the chunk's own language (a recording's may change as it goes on)."""

    segments: tuple[Segment, ...]
    lines: tuple[Line, ...]
    language: str | None

    @classmethod
    def of(cls, segments: Sequence[Segment], language: str | None,
           spans: Sequence[tuple[float, float]] = ()) -> Chunk:
        """``spans``: the segments the chunk had when it was read into notes; segments
        within one (split since, at a change of speaker) are one piece of a line again."""
        spoken: dict[str, float] = {}
        for s in segments:
            if s.language:
                spoken[s.language] = spoken.get(s.language, 0.0) + s.end - s.start
        language = max(spoken, key=spoken.get) if spoken else language
        cjk = is_cjk(language)
        ordered = sorted((start, end, i) for i, (start, end) in enumerate(spans))
        starts = [start for start, _, _ in ordered]
        groups: list[list[Segment]] = []
        for segment in segments:
            at = _span_at(ordered, starts, segment) if ordered else None
            if groups and at is not None and at == _span_at(ordered, starts, groups[-1][-1]):
                groups[-1].append(segment)
            else:
                groups.append([segment])
        glue = "" if cjk else " "
        pieces = [replace(g[0], text=glue.join(s.text.strip() for s in g), end=g[-1].end)
                  for g in groups]
        whole = {id(piece): group for piece, group in zip(pieces, groups, strict=True)}
        lines = [Line(tuple(s for piece in line.segments for s in whole[id(piece)]), line.text,
                      False) for line in transcript_lines(pieces, cjk, speakers=False)]
        return cls(tuple(segments), tuple(lines), language)

    @property
    def start(self) -> float:
        return self.segments[0].start

    @property
    def end(self) -> float:
        return max(s.end for s in self.segments)

    @property
    def system(self) -> str:
        return _instructions(self.language)

    @property
    def prompt(self) -> str:
        return "A part of a transcript:\n" + _transcript_text(self.lines) + "\n\n"

    def key(self, model_id: str, version: str, extract: bool) -> str:
        """Names everything its notes depend on."""
        text = json.dumps([model_id, version, extract, self.system, self.prompt],
                          ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def cited(self, notes: dict, first: int) -> dict:
        """Notes citing this chunk's lines (1, 2, …) made to cite the transcript's lines
        (``first`` is the number of this chunk's first), each item told who said the lines
        it cites when the transcript names speakers."""
        out = {}
        for section in _NOTE_SECTIONS:
            out[section] = []
            for item in notes.get(section, []):
                lines = [n for n in item.get("segments", []) if isinstance(n, int)
                         and 1 <= n <= len(self.lines)]
                who = list(dict.fromkeys(s.speaker for n in lines
                                         for s in self.lines[n - 1].segments if s.speaker))
                out[section].append({**item, "segments": [n + first - 1 for n in lines],
                                     **({"who": who} if who else {})})
        return out


class NotesMemo(Protocol):
    """Where the notes on chunks of a transcript are kept (a recording's, in its database),
    by ``Chunk.key``."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, chunk: Chunk, notes: dict, model_id: str) -> None: ...

    def put_merged(self, key: str, notes: dict, model_id: str) -> None:
        """Notes merged from several chunks' (``summarize.merged``), by key."""

    def read_ahead(self, model_id: str) -> ReadPrompt | None:
        """The final call's start read into ``model_id`` before (``notes_so_far``)."""


class StoredNotes:
    """A recording's chunk notes, in its database; ``ahead``: taken during the recording."""

    def __init__(self, store, recording_id: int, ahead: bool = False):
        self.store, self.recording_id, self.ahead = store, recording_id, ahead

    def get(self, key: str) -> dict | None:
        return self.store.chunk_notes(self.recording_id, key)

    def put(self, key: str, chunk: Chunk, notes: dict, model_id: str,
            replacing: Sequence[tuple[float, float]] | None = None) -> None:
        self.store.keep_chunk_notes(self.recording_id, key,
                                    [(s.start, s.end) for s in chunk.segments], notes,
                                    model_id, ahead=self.ahead, replacing=replacing)

    def put_merged(self, key: str, notes: dict, model_id: str) -> None:
        self.store.keep_chunk_notes(self.recording_id, key, [], notes, model_id,
                                    ahead=self.ahead)

    def read_ahead(self, model_id: str) -> ReadPrompt | None:
        kept = self.store.summary_ahead(self.recording_id, model_id)
        return ReadPrompt(*kept) if kept else None

    def keep_read_ahead(self, model_id: str, read: ReadPrompt) -> None:
        self.store.keep_summary_ahead(self.recording_id, model_id, read.tokens, read.state)


class NothingToSummarise(TingjiError):
    pass


@dataclass
class Plan:
    """One summary's schedule: the transcript's lines, its chunks, prompts and progress."""

    segments: list[Segment]
    language: str | None
    lines: list[Line]
    chunks: list[Chunk]
    system: str
    summary_schema: dict
    notes_schema: dict
    on_progress: Callable[..., None]
    """Hears (percent, what is being done)."""
    calls: int
    done: int = 0
    retries: int = 0
    copies_dropped: int = 0
    """Items of a degenerate summary (not notes) that copied items before them, dropped
    instead of writing the summary again (``faithfulness.mend``)."""
    extract: bool = True
    """Pick the lines that carry the content before writing from them."""
    call: tuple[str, str] = (Said(N_("reading the transcript")),
                             Said(N_("writing the summary")))
    retrying: bool = False
    kept: int = 0
    """Chunks whose notes were taken before."""
    read_ahead: int = 0
    """Tokens of the final call read into the model before (during the recording)."""
    tail: list[Line] | None = None
    """After notes taken during the recording: the lines the final call reads with the
    notes (the last part, and speech found again after stop)."""

    @classmethod
    def of(cls, segments: Sequence[Segment], language: str | None,
           on_progress: Callable[..., None] = lambda p, stage=None: None,
           extract: bool = True, noted: Sequence[Sequence[tuple[float, float]]] = (),
           kept: Callable[[Chunk], dict | None] | None = None,
           size: int = CHUNK_CHARS) -> Plan:
        """``noted``: the chunks read into notes during the recording (the spans of their
        segments) and ``kept``, their notes by chunk (None where the chunk's text is no
        longer what was noted): see ``_after_notes``.  ``size``: a chunk's characters of
        Chinese at most (English: three times as many)."""
        segments = [s for s in segments if s.text.strip()]
        if not segments:
            raise NothingToSummarise(N_("nothing to summarise: the transcript is empty"))
        cjk = is_cjk(language)
        summary_schema, notes_schema = schemas(cjk)
        # Qwen's tokens hold 1-2 Chinese characters, or about four characters of English.
        tail = None
        taken = (_after_notes(segments, language, noted, kept, size) if noted and kept
                 else None)
        if taken:
            chunks, tail = taken
            lines = [line for chunk in chunks for line in chunk.lines] + tail
        elif len(parts := chunk_segments(segments, size if cjk else size * 3)) > 1:
            chunks = [Chunk.of(part, language) for part in parts]
            lines = [line for chunk in chunks for line in chunk.lines]
        else:
            lines = transcript_lines(segments, cjk)
            chunks = [Chunk(tuple(segments), tuple(lines), language)]
        calls = len(chunks) + (len(chunks) > 1 or tail is not None) + extract * len(chunks)
        return cls(segments, language, lines, chunks, _instructions(language), summary_schema,
                   notes_schema, on_progress, calls=calls, extract=extract, tail=tail)

    @property
    def long(self) -> bool:
        """Too long for one call: read in chunks into notes first."""
        return len(self.chunks) > 1 or self.tail is not None

    def within(self, fraction: float) -> None:
        """Progress inside the current call (0-1 of it), with what it is doing."""
        reading, writing = self.call
        stage = reading if fraction < READING else writing
        if self.retrying:
            stage = Said(N_("%(stage)s again (the first answer was degenerate)"), stage=stage)
        self.on_progress(99.0 * min((self.done + fraction) / self.calls, 1.0), stage)

    def step(self) -> None:
        """A call is done."""
        self.done += 1
        self.on_progress(99.0 * min(self.done / self.calls, 1.0))

    def starting(self, reading: str, writing: str) -> None:
        """The next call reads what ``reading`` says and writes what ``writing`` says."""
        self.call = (reading, writing)
        self.retrying = False
        self.within(0.0)


def _after_notes(segments: list[Segment], language: str | None,
                 noted: Sequence[Sequence[tuple[float, float]]],
                 kept: Callable[[Chunk], dict | None],
                 size: int = CHUNK_CHARS) -> tuple[list[Chunk], list[Line]] | None:
    """The transcript of a recording read into notes while it was made: the chunks whose
    notes hold (cut as they were, ``noted_parts``), then the rest — what came after them,
    speech found again after stop, chunks whose text changed — in chunks read into notes
    now but for the last, whose lines the final call reads with the notes (so after stop
    the wait is one call, whatever the length).  None when no notes hold."""
    parts, rest = noted_parts(segments, noted)
    chunks = []
    for part, spans in parts:
        chunk = Chunk.of(part, language, spans)
        if kept(chunk) is None:
            rest += part
        else:
            chunks.append(chunk)
    if not chunks:
        return None
    rest.sort(key=lambda s: (s.start, s.end))
    more = steady_chunks(rest, size)[0] if rest else [[]]
    chunks += [Chunk.of(part, language) for part in more[:-1]]
    return chunks, transcript_lines(more[-1], is_cjk(language))

"""What the summariser's model reads: the transcript as numbered lines of one speaker each,
cut into chunks for long transcripts, notes of several chunks as one set, and the
instructions in the transcript's language."""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from device.records import Segment

LINE_CHARS = 80
"""Characters of Chinese per transcript line at most (English: three times as many)."""
CHUNK_CHARS = 4500
"""Characters of Chinese per chunk at most (English: three times as many), ~2,900 tokens."""
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


def noted_parts(segments: Sequence[Segment], noted: Sequence[Sequence[tuple[float, float]]],
                size: int) -> tuple[list[list[Segment]], list[Segment]]:
    """The transcript cut as it was read into notes during the recording (``noted``: the
    spans of each chunk's segments): each chunk holds the segments within its segments'
    spans (a segment split at a change of speaker stays in its chunk), and the rest — what
    came after, and speech found again after stop between them — is returned apart."""
    spans = sorted((start, end, index) for index, chunk in enumerate(noted)
                   for start, end in chunk)
    starts = [start for start, _, _ in spans]
    parts: list[list[Segment]] = [[] for _ in noted]
    rest = []
    for segment in segments:
        at = bisect.bisect_right(starts, segment.start + 0.005) - 1
        if at >= 0 and segment.end <= spans[at][1] + 0.005:
            parts[spans[at][2]].append(segment)
        else:
            rest.append(segment)
    return [part for part in parts if part], rest


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
    def of(cls, segments: Sequence[Segment], language: str | None) -> Chunk:
        spoken: dict[str, float] = {}
        for s in segments:
            if s.language:
                spoken[s.language] = spoken.get(s.language, 0.0) + s.end - s.start
        language = max(spoken, key=spoken.get) if spoken else language
        return cls(tuple(segments),
                   tuple(transcript_lines(segments, is_cjk(language), speakers=False)),
                   language)

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


class StoredNotes:
    """A recording's chunk notes, in its database; ``ahead``: taken during the recording."""

    def __init__(self, store, recording_id: int, ahead: bool = False):
        self.store, self.recording_id, self.ahead = store, recording_id, ahead

    def get(self, key: str) -> dict | None:
        return self.store.chunk_notes(self.recording_id, key)

    def put(self, key: str, chunk: Chunk, notes: dict, model_id: str) -> None:
        self.store.keep_chunk_notes(self.recording_id, key,
                                    [(s.start, s.end) for s in chunk.segments], notes,
                                    model_id, ahead=self.ahead)

"""What the summariser's model reads: the transcript as numbered lines of one speaker each,
cut into chunks for long transcripts, notes of several chunks as one set, and the
instructions in the transcript's language."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

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

    @property
    def speaker(self) -> str | None:
        return self.segments[0].speaker


def transcript_lines(segments: Sequence[Segment], cjk: bool) -> list[Line]:
    """Segments joined into lines of about ``LINE_CHARS`` characters (English: three times
    as many), never across a change of speaker.  Qwen spells a line number digit by digit,
    so "[123]" costs five tokens: one line per sentence spent a fifth of the prompt on them."""
    size = LINE_CHARS if cjk else LINE_CHARS * 3
    lines: list[list[Segment]] = []
    for segment in segments:
        last = lines[-1] if lines else None
        if (last and last[0].speaker == segment.speaker
                and sum(len(s.text.strip()) for s in last) + len(segment.text.strip()) <= size):
            last.append(segment)
        else:
            lines.append([segment])
    glue = "" if cjk else " "
    return [Line(tuple(line), glue.join(s.text.strip() for s in line)) for line in lines]


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

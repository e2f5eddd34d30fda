"""Summaries a reviewer can trust: a local LLM (llama.cpp), schema-constrained JSON, grounded.

The transcript is cut at segment boundaries into chunks of about ``CHUNK_CHARS`` characters;
each chunk is summarised (map) with every point citing the ids of the segments it comes
from, then the partial summaries are merged (reduce).  The grounding check then flags every
number or name in a point that does not occur in the segments it cites.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from device.errors import TingjiError
from device.records import Segment

PROMPT_VERSION = "summary-v1"
CHUNK_CHARS = 2200


class NothingToSummarise(TingjiError):
    pass


class SummaryError(TingjiError):
    pass


def _points(extra: dict | None = None) -> dict:
    item = {"type": "object",
            "properties": {"text": {"type": "string"},
                           "segments": {"type": "array", "items": {"type": "integer"}}},
            "required": ["text", "segments"]}
    if extra:
        item = {"type": "object",
                "properties": {**extra, "segments": {"type": "array",
                                                     "items": {"type": "integer"}}},
                "required": [*extra.keys(), "segments"]}
    return {"type": "array", "items": item}


SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "summary": {"type": "string"},
        "key_points": _points(),
        "decisions": _points(),
        "action_items": _points({"what": {"type": "string"}, "owner": {"type": "string"},
                                 "due": {"type": "string"}}),
        "keywords": {"type": "array", "items": {"type": "string"}},
        "language": {"type": "string"},
    },
    "required": ["title", "summary", "key_points", "decisions", "action_items", "keywords",
                 "language"],
}


@dataclass(frozen=True)
class Flag:
    section: str
    index: int
    term: str
    """The number or name that the cited segments do not contain."""
    reason: str


@dataclass(frozen=True)
class Summary:
    title: str
    summary: str
    key_points: list[dict]
    decisions: list[dict]
    action_items: list[dict]
    keywords: list[str]
    language: str
    model_id: str
    prompt_version: str = PROMPT_VERSION
    flags: list[Flag] = field(default_factory=list)
    chunks: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


class Summarizer(Protocol):
    model_id: str

    def summarize(self, segments: Sequence[Segment], language: str | None,
                  on_progress: Callable[[float], None] = ...) -> Summary: ...


# -- prompts ------------------------------------------------------------------------------

_LANGUAGE_NAMES = {"zh": "Chinese (简体中文)", "en": "English", "yue": "Cantonese (廣東話)"}


def _instructions(language: str | None) -> str:
    name = _LANGUAGE_NAMES.get(language or "", language or "the transcript's language")
    if language == "zh":
        return ("你是会议和访谈记录的助手。只根据给出的转写内容写摘要，不要编造。"
                "每条要点、决定和待办事项都要在 segments 中列出它所依据的段落编号。"
                "用简体中文写。没有的内容就留空列表。")
    return (f"You summarise interview and meeting transcripts. Use only what the transcript "
            f"says; never invent facts, numbers or names. Every key point, decision and "
            f"action item lists in 'segments' the ids of the transcript lines it comes from. "
            f"Write in {name}. Leave a list empty when the transcript has nothing for it.")


def _transcript_text(segments: Sequence[Segment]) -> str:
    return "\n".join(f"[{s.id}] {(s.speaker + ': ') if s.speaker else ''}{s.text.strip()}"
                     for s in segments)


def chunk_segments(segments: Sequence[Segment], size: int = CHUNK_CHARS) -> list[list[Segment]]:
    """Consecutive segments, about ``size`` characters per chunk, never splitting one."""
    chunks: list[list[Segment]] = []
    current: list[Segment] = []
    length = 0
    for segment in segments:
        if current and length + len(segment.text) > size:
            chunks.append(current)
            current, length = [], 0
        current.append(segment)
        length += len(segment.text) + 8
    if current:
        chunks.append(current)
    return chunks


# -- grounding -----------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*%?|[零〇一二两三四五六七八九十百千万亿]{2,}")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*\b")
_COMMON_WORDS = {"The", "A", "An", "We", "They", "He", "She", "It", "I", "This", "That",
                 "And", "But", "Or", "If", "In", "On", "At", "To", "For", "Of", "With",
                 "Action", "Decision", "Key", "Summary", "Title", "Meeting", "Interview",
                 "Speaker", "Discussion", "Review", "Follow", "Ask", "Agreed", "Discuss"}


def _digits(text: str) -> str:
    return re.sub(r"[,\s]", "", text)


def grounding_flags(summary: dict, segments: Sequence[Segment]) -> list[Flag]:
    """Flag every number or name in a cited item that its cited segments do not contain.

    Items citing no existing segment are flagged as unsupported."""
    from device.profiles import chinese_number
    from device.text import fold

    by_id = {s.id: s for s in segments}
    flags = []
    for section in ("key_points", "decisions", "action_items"):
        for index, item in enumerate(summary.get(section, [])):
            cited = [by_id[i] for i in item.get("segments", []) if i in by_id]
            text = " ".join(str(item.get(k, "")) for k in ("text", "what", "owner", "due"))
            if not cited:
                flags.append(Flag(section, index, "", "cites no segment of this transcript"))
                continue
            source = fold(" ".join(s.text for s in cited))
            source_numbers = {_digits(n) for n in _NUMBER.findall(source)}
            source_numbers |= {str(chinese_number(n)) for n in _NUMBER.findall(source)
                               if not n[0].isdigit() and chinese_number(n) is not None}
            for number in _NUMBER.findall(fold(text)):
                value = _digits(number) if number[0].isdigit() else str(chinese_number(number))
                if value not in source_numbers and number not in source:
                    flags.append(Flag(section, index, number,
                                      "this number is not in the cited segments"))
            for name in _NAME.findall(text):
                if name not in _COMMON_WORDS and fold(name) not in source:
                    flags.append(Flag(section, index, name,
                                      "this name is not in the cited segments"))
    return flags


# -- llama.cpp -----------------------------------------------------------------------------


class LlamaSummarizer:
    """A GGUF model through llama-cpp-python, loaded on creation; ``close()`` frees it."""

    def __init__(self, model_path: Path, model_id: str, threads: int, context: int = 8192):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise SummaryError("llama-cpp-python is not installed: run `make install`") from exc
        self.model_id = model_id
        try:
            self._llm = Llama(model_path=str(model_path), n_ctx=context, n_threads=threads,
                              n_batch=512, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise SummaryError(f"model {model_id} could not be loaded ({exc}): run "
                               f"`python -m models install {model_id} --force`") from exc

    def close(self) -> None:
        self._llm = None

    def _complete(self, system: str, user: str, max_tokens: int) -> dict:
        result = self._llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            response_format={"type": "json_object", "schema": SCHEMA},
            temperature=0.2, max_tokens=max_tokens,
        )
        text = result["choices"][0]["message"]["content"]
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SummaryError(f"the model returned invalid JSON ({exc})") from exc

    def summarize(self, segments: Sequence[Segment], language: str | None,
                  on_progress: Callable[[float], None] = lambda p: None) -> Summary:
        segments = [s for s in segments if s.text.strip()]
        if not segments:
            raise NothingToSummarise("nothing to summarise: the transcript is empty")
        system = _instructions(language)
        chunks = chunk_segments(segments)
        partials = []
        for i, chunk in enumerate(chunks):
            partials.append(self._complete(
                system, "Transcript:\n" + _transcript_text(chunk) + "\n\nSummarise it as JSON.",
                max_tokens=1024))
            on_progress(90.0 * (i + 1) / (len(chunks) + (len(chunks) > 1)))
        if len(partials) == 1:
            merged = partials[0]
        else:
            merged = self._complete(
                system,
                "These are summaries of consecutive parts of one transcript, as JSON. Merge "
                "them into one summary of the whole, keeping each item's segment ids:\n"
                + json.dumps(partials, ensure_ascii=False),
                max_tokens=1536)
        on_progress(100.0)
        known = {s.id for s in segments}
        for section in ("key_points", "decisions", "action_items"):
            for item in merged.get(section, []):
                item["segments"] = [i for i in item.get("segments", []) if i in known]
        return Summary(
            title=merged.get("title", ""), summary=merged.get("summary", ""),
            key_points=merged.get("key_points", []), decisions=merged.get("decisions", []),
            action_items=merged.get("action_items", []), keywords=merged.get("keywords", []),
            language=language or merged.get("language", ""), model_id=self.model_id,
            flags=grounding_flags(merged, segments), chunks=len(chunks),
        )

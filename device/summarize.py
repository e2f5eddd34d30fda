"""Summaries a reviewer can trust: a local LLM (llama.cpp), schema-constrained JSON, grounded.

A transcript that fits one call is summarised in one call.  A longer one is cut at segment
boundaries into chunks of about ``CHUNK_CHARS`` characters; each chunk gives short notes
(map: key points, decisions and action items, each citing the transcript lines it comes
from), and one final call writes the summary from all the notes (reduce; notes too long for
it are first merged in groups).  The grounding check then flags every number or name in a
point that does not occur in the segments it cites.

The model sees the transcript as numbered lines, "[12]text", each holding a few consecutive
segments of one speaker, and cites line numbers; they are turned into the ids of the lines'
segments at the end.  Store ids grow with the library (five or more digits) where line
numbers stay short, and Qwen spells numbers digit by digit: with a line per segment the
numbers were a fifth of the prompt, and prompt reading is most of the time on a small board.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from device.errors import TingjiError
from device.grounding import Flag, grounding_flags
from device.llm import JsonGenerator
from device.records import Segment
from device.summary_schema import schemas

PROMPT_VERSION = "summary-v4"
LINE_CHARS = 80
"""Characters of Chinese per transcript line at most (English: three times as many)."""
CHUNK_CHARS = 4500
"""Characters of Chinese per chunk at most (English: three times as many), ~2,900 tokens."""
NOTES_BUDGET = 4500
"""Tokens of notes the final call reads at most; more are first merged in groups."""
MERGE_GROUP = 6


class NothingToSummarise(TingjiError):
    pass


class SummaryError(TingjiError):
    pass


_NOTE_SECTIONS = ("key_points", "decisions", "action_items")


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
    notes_model_id: str | None = None
    """The model that read a long transcript into notes, when not ``model_id`` itself."""

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
            # Flash attention: ~5 % faster prompt reading on CPU, measured.
            self._llm = Llama(model_path=str(model_path), n_ctx=context, n_threads=threads,
                              n_batch=512, flash_attn=True, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise SummaryError(f"model {model_id} could not be loaded ({exc}): run "
                               f"`python -m models install {model_id} --force`") from exc
        try:
            self._generator = JsonGenerator(self._llm)
        except ValueError as exc:
            raise SummaryError(f"model {model_id} cannot be used for summaries ({exc})") from exc

    def close(self) -> None:
        """Free the model now: the summariser may be loaded next, and both together would
        pass the memory budget."""
        if self._llm is not None:
            self._generator.close()
            self._llm.close()
            self._llm = None

    def _complete(self, plan: Plan, user: str, max_tokens: int, schema: dict) -> dict:
        try:
            completion = self._generator.complete(plan.system, user, schema, max_tokens,
                                                  on_step=plan.within)
        except ValueError as exc:
            raise SummaryError(str(exc)) from exc
        try:
            # strict=False: the grammar lets a raw newline or tab into a string.
            return json.loads(completion.text, strict=False)
        except json.JSONDecodeError as exc:
            raise SummaryError(f"the model returned invalid JSON ({exc})") from exc

    def _tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    def summarize(self, segments: Sequence[Segment], language: str | None,
                  on_progress: Callable[[float], None] = lambda p: None) -> Summary:
        """The whole schedule with this one model."""
        plan = Plan.of(segments, language, on_progress)
        return self.write(plan, self.take_notes(plan) if plan.long else None)

    def take_notes(self, plan: Plan) -> list[dict]:
        """Map: notes per chunk; then notes too long for the final call merged in groups."""
        notes = []
        for index in range(len(plan.chunks)):
            notes.append(self._complete(plan, plan.notes_request(index), max_tokens=1024,
                                        schema=plan.notes_schema))
            plan.step()
        while len(notes) > 1 and self._tokens(_notes_text(notes)) > NOTES_BUDGET:
            groups = [notes[i : i + MERGE_GROUP] for i in range(0, len(notes), MERGE_GROUP)]
            plan.calls += len(groups)
            notes = []
            for group in groups:
                notes.append(self._complete(
                    plan, "Notes on consecutive parts of one transcript, as JSON. "
                    "Merge them into one set of notes, keeping each item's segments:\n"
                    + _notes_text(group), max_tokens=1024, schema=plan.notes_schema))
                plan.step()
        return notes

    def write(self, plan: Plan, notes: list[dict] | None,
              notes_model_id: str | None = None) -> Summary:
        """The summary: from the transcript itself when it fits one call, else from notes."""
        if notes is None:
            merged = self._complete(plan, "Transcript:\n"
                                    + _transcript_text(plan.lines)
                                    + "\n\nSummarise it as JSON.", max_tokens=2048,
                                    schema=plan.summary_schema)
        else:
            merged = self._complete(
                plan, "Notes on the consecutive parts of one transcript, as JSON. Write "
                "the summary of the whole transcript as JSON, keeping each item's segments:\n"
                + _notes_text(notes), max_tokens=2048, schema=plan.summary_schema)
        plan.step()
        plan.on_progress(100.0)
        lines = plan.lines
        for section in ("key_points", "decisions", "action_items"):
            for item in merged.get(section, []):
                cited = [n for n in item.get("segments", [])
                         if isinstance(n, int) and 1 <= n <= len(lines)]
                item["segments"] = list(dict.fromkeys(
                    s.id for n in cited for s in lines[n - 1].segments))
        segments = plan.segments
        return Summary(
            title=merged.get("title", ""), summary=merged.get("summary", ""),
            key_points=merged.get("key_points", []), decisions=merged.get("decisions", []),
            action_items=merged.get("action_items", []), keywords=merged.get("keywords", []),
            language=plan.language or merged.get("language", ""), model_id=self.model_id,
            flags=grounding_flags(merged, segments), chunks=len(plan.chunks),
            notes_model_id=notes_model_id,
        )


@dataclass
class Plan:
    """One summary's schedule: the transcript's lines, its chunks, prompts and progress."""

    segments: list[Segment]
    language: str | None
    lines: list[Line]
    chunks: list[list[Line]]
    system: str
    summary_schema: dict
    notes_schema: dict
    on_progress: Callable[[float], None]
    calls: int
    done: int = 0

    @classmethod
    def of(cls, segments: Sequence[Segment], language: str | None,
           on_progress: Callable[[float], None] = lambda p: None) -> Plan:
        segments = [s for s in segments if s.text.strip()]
        if not segments:
            raise NothingToSummarise("nothing to summarise: the transcript is empty")
        cjk = language in ("zh", "yue", "ja", "ko")
        summary_schema, notes_schema = schemas(cjk)
        # About 2,900 tokens a chunk: Qwen's tokens hold 1-2 Chinese characters, or about
        # four characters of English.
        lines = transcript_lines(segments, cjk)
        chunks = chunk_segments(lines, CHUNK_CHARS if cjk else CHUNK_CHARS * 3)
        return cls(segments, language, lines, chunks, _instructions(language), summary_schema,
                   notes_schema, on_progress, calls=len(chunks) + (len(chunks) > 1))

    @property
    def long(self) -> bool:
        """Too long for one call: read in chunks into notes first."""
        return len(self.chunks) > 1

    def notes_request(self, index: int) -> str:
        """The notes call's request for chunk ``index``: its lines, numbered as in the whole
        transcript."""
        first_line = 1 + sum(len(chunk) for chunk in self.chunks[:index])
        return (f"Part {index + 1} of {len(self.chunks)} of a transcript:\n"
                + _transcript_text(self.chunks[index], first_line)
                + "\n\nList this part's key points, decisions and action items as JSON.")

    def within(self, fraction: float) -> None:
        """Progress inside the current call (0-1 of it)."""
        self.on_progress(99.0 * min((self.done + fraction) / self.calls, 1.0))

    def step(self) -> None:
        """A call is done."""
        self.done += 1
        self.within(0.0)


# -- the job -------------------------------------------------------------------------------


def load_summarizer(settings, model_id: str | None = None) -> LlamaSummarizer:
    """Verify (sha256) and load a summariser model; never from the network."""
    from device.settings import hardware_profile
    from models.store import ModelError, get_spec, load_manifest, verify

    model_id = model_id or settings.summary_model
    spec = get_spec(model_id, load_manifest(models_dir=settings.models_dir))
    if spec.kind != "llm":
        raise ModelError(f"model {model_id} is a {spec.kind} model, not a summariser")
    directory = verify(spec, settings.models_dir)
    gguf = next(directory.glob("*.gguf"), None)
    if gguf is None:
        raise ModelError(f"model {model_id} has no .gguf file: run "
                         f"`python -m models install {model_id} --force`")
    return LlamaSummarizer(gguf, model_id, hardware_profile(settings).cpu_threads,
                           settings.llm_context)


def summarize(
    settings, segments: Sequence[Segment], language: str | None, model_id: str,
    notes_model_id: str | None = None, on_progress: Callable[[float], None] = lambda p: None,
) -> Summary:
    """Summarise with ``model_id``; a long transcript is read into notes by
    ``notes_model_id`` when given.  One model is loaded at a time and freed after use."""
    plan = Plan.of(segments, language, on_progress)
    reader_id = notes_model_id if plan.long and notes_model_id != model_id else None
    notes = None
    if reader_id is not None:
        with closing(load_summarizer(settings, reader_id)) as reader:
            notes = reader.take_notes(plan)
    with closing(load_summarizer(settings, model_id)) as writer:
        if plan.long and notes is None:
            notes = writer.take_notes(plan)
        return writer.write(plan, notes, reader_id)


def summarize_recording(store, settings, job, on_progress: Callable[[float], None]) -> Summary:
    """The body of a "summarize" job: the LLM is loaded for the job and freed after it, so
    it never shares memory with a transcription (the worker runs one job at a time)."""
    recording = store.get_recording(job.recording_id)
    segments = store.segments(job.recording_id, with_words=False)
    if not any(s.text.strip() for s in segments):
        raise NothingToSummarise(f"nothing to summarise: recording {recording.id} has no "
                                 "transcript yet")
    transcript_hash = store.transcript_hash(recording.id)
    model_id = job.params.get("model") or settings.summary_model
    notes_model_id = job.params.get("notes_model", settings.summary_notes_model) or None
    summary = summarize(settings, segments, recording.language, model_id,
                        notes_model_id, on_progress)
    content = {k: v for k, v in summary.as_dict().items() if k not in ("flags",)}
    return store.add_summary(recording.id, content, [asdict(f) for f in summary.flags],
                             model_id=summary.model_id, prompt_version=summary.prompt_version,
                             transcript_hash=transcript_hash)
